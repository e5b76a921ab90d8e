"""GAN losses: hinge (Lim & Ye 2017; used by SAGAN and BigGAN) and BigGAN's orthogonal regularisation."""

import tensorflow as tf
import tf_keras

__all__ = [
    "discriminator_hinge_loss",
    "generator_hinge_loss",
    "orthogonal_regularization",
    "regularized_kernels",
]


def discriminator_hinge_loss(real_logits, fake_logits):
    """`mean(relu(1 − D(x))) + mean(relu(1 + D(G(z))))`."""
    real_logits = tf.cast(real_logits, tf.float32)
    fake_logits = tf.cast(fake_logits, tf.float32)
    return tf.reduce_mean(tf.nn.relu(1.0 - real_logits)) + tf.reduce_mean(tf.nn.relu(1.0 + fake_logits))


def generator_hinge_loss(fake_logits):
    """`−mean(D(G(z)))`."""
    return -tf.reduce_mean(tf.cast(fake_logits, tf.float32))


def regularized_kernels(model):
    """The kernels of `model`'s Dense and Conv2D layers (not embeddings, biases or norms).

    BigGAN-PyTorch's `ortho` regularises every weight of two or more
    dimensions except the shared class embedding; in `Generator` those are
    exactly these kernels (the unnormalised ones: spectral norm keeps them).
    """
    return [layer.kernel for layer in model.submodules
            if isinstance(layer, (tf_keras.layers.Dense, tf_keras.layers.Conv2D))]


def orthogonal_regularization(kernels, strength=1e-4):
    """BigGAN's orthogonal regularisation `β Σ_W ‖WᵀW ⊙ (1 − I)‖²_F`.

    Brock, Donahue, Simonyan 2019 (arXiv:1809.11096), eq. 3, with β = 1e-4 in
    the paper. Each kernel is reshaped to `[-1, filters]` (one column per
    output filter), so WᵀW holds the filters' inner products and only their
    off-diagonal entries are penalised (norms are free). BigGAN-PyTorch's
    `ortho` adds the gradient `2 β (WWᵀ ⊙ (1 − I)) W` of its rows-as-filters
    layout, which is the gradient of this sum with β/2.

    Args:
      kernels: iterable of kernel tensors (last axis = output filters).
      strength: β. Default 1e-4.

    Returns:
      A float32 scalar.
    """
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or strength < 0:
        raise ValueError(f"strength must be a number >= 0, received {strength!r}")
    total = tf.constant(0.0, tf.float32)
    for kernel in kernels:
        matrix = tf.reshape(tf.cast(kernel, tf.float32), [-1, kernel.shape[-1]])
        gram = tf.matmul(matrix, matrix, transpose_a=True)
        off_diagonal = gram * (1.0 - tf.eye(kernel.shape[-1]))
        total += tf.reduce_sum(tf.square(off_diagonal))
    return strength * total

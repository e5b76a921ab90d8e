"""BigGAN generator/discriminator: shapes, spec tables, spectral norm, conditioning."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from evonorm_tf.gan import architectures, blocks
from evonorm_tf.gan.discriminator import Discriminator
from evonorm_tf.gan.generator import Generator
from evonorm_tf.gan.spectral_norm import SpectralNormalization


def _largest_singular_value(kernel):
    matrix = np.reshape(kernel.numpy(), (-1, kernel.shape[-1])).astype(np.float64)
    return np.linalg.svd(matrix, compute_uv=False)[0]


@pytest.mark.parametrize("resolution,ch,z_dim,norm_act", [
    (32, 8, 32, "evonorm_b0"), (64, 4, 60, "bn_relu"), (128, 8, 60, "evonorm_s0"),
])
def test_shapes_and_attention_placement(resolution, ch, z_dim, norm_act):
    kwargs = {"groups": 4} if norm_act == "evonorm_s0" else {}
    G = Generator(resolution=resolution, ch=ch, z_dim=z_dim, shared_dim=16, norm_act=norm_act,
                  norm_act_kwargs=kwargs)
    D = Discriminator(resolution=resolution, ch=ch)
    z, labels = tf.random.normal((2, z_dim)), tf.constant([1, 7])
    images = G((z, labels), training=True)
    assert images.shape == (2, resolution, resolution, 3)
    assert np.abs(images.numpy()).max() <= 1.0
    logits = D((images, labels), training=True)
    assert logits.shape == (2,)
    spec = architectures.GENERATOR_SPECS[resolution]
    assert len(G.blocks) == len(spec.multipliers) - 1
    assert len(G.attention) == (1 if resolution >= 64 else 0)
    assert len(D.attention) == (1 if resolution == 128 else 0)
    # Last block's output channels follow the table.
    assert G.blocks[-1].conv2.layer.filters == spec.multipliers[-1] * ch


def test_generator_parameter_count_matches_formula():
    # Linear z0 → 4·4·4ch (+ bias), embedding, and per block: two convs 3x3, one 1x1,
    # each cond norm has two (D → C) projections without biases (compare_gan, BigGAN-PyTorch).
    ch, z_dim, shared, classes = 8, 32, 16, 10
    G = Generator(resolution=32, ch=ch, z_dim=z_dim, shared_dim=shared, num_classes=classes,
                  norm_act="evonorm_s1", norm_act_kwargs={"groups": 4})
    G((tf.zeros((1, z_dim)), tf.zeros((1,), tf.int32)))
    c = 4 * ch
    chunk = z_dim // 4
    cond = chunk + shared
    block = 2 * (9 * c * c + c) + (c * c + c) + 2 * 2 * (cond * c)
    expected = (chunk * 16 * c + 16 * c) + classes * shared + 3 * block + (2 * c) + (9 * c * 3 + 3)
    assert sum(int(np.prod(w.shape)) for w in G.trainable_weights) == expected


def test_spectral_norm_converges_to_one():
    layer = SpectralNormalization(tf_keras.layers.Conv2D(
        16, 3, kernel_initializer=tf_keras.initializers.RandomNormal(stddev=1.0)), power_iterations=10)
    x = tf.random.normal((1, 8, 8, 4))
    layer(x)
    assert _largest_singular_value(layer.kernel) > 3.0
    for _ in range(20):
        layer(x, training=True)
    np.testing.assert_allclose(_largest_singular_value(layer.normalized_kernel()), 1.0, rtol=1e-2)
    raw = layer.kernel.numpy()
    u = layer.u.numpy()
    layer(x, training=False)  # inference leaves the kernel and u alone
    np.testing.assert_array_equal(layer.kernel.numpy(), raw)
    np.testing.assert_array_equal(layer.u.numpy(), u)
    # The convolution uses W / σ: same output as Conv2D with the normalised kernel.
    expected = tf.nn.conv2d(x, layer.normalized_kernel(), 1, "VALID") + layer.layer.bias
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_spectral_norm_dense_forward_and_gradient_match_numpy():
    layer = SpectralNormalization(tf_keras.layers.Dense(
        3, bias_initializer="ones", kernel_initializer=tf_keras.initializers.RandomNormal(stddev=1.0)))
    x = tf.random.normal((4, 5))
    layer(x)
    W = layer.kernel.numpy().astype(np.float64)
    u = layer.u.numpy().astype(np.float64)
    v = u @ W.T
    v /= np.linalg.norm(v)
    sigma = (v @ W @ u.T).item()
    with tf.GradientTape() as tape:
        y = layer(x, training=False)
        loss = tf.reduce_sum(y * tf.constant(np.arange(12.0).reshape(4, 3), tf.float32))
    np.testing.assert_allclose(y, x.numpy() @ (W / sigma) + 1.0, rtol=1e-4, atol=1e-5)
    # d loss / dW with σ = vᵀWu (u, v constant): G/σ − ⟨G, W⟩/σ² · v uᵀ, G = xᵀ·dL/dy.
    G = x.numpy().astype(np.float64).T @ np.arange(12.0).reshape(4, 3)
    expected = G / sigma - np.sum(G * W) / sigma**2 * (v.T @ u)
    np.testing.assert_allclose(tape.gradient(loss, layer.kernel), expected, rtol=1e-3, atol=1e-4)


def test_discriminator_kernels_are_spectrally_normalised_after_training_calls():
    D = Discriminator(resolution=32, ch=4)
    images, labels = tf.random.normal((2, 32, 32, 3)), tf.constant([0, 1])
    for _ in range(15):
        D((images, labels), training=True)
    wrapped = [layer for layer in D._flatten_layers() if isinstance(layer, SpectralNormalization)]
    # 2 convs per block, a 1x1 shortcut in the two downsampling blocks (the other two keep
    # the width: identity skip), linear, embedding.
    assert len(wrapped) == 4 * 2 + 2 + 2
    for layer in wrapped:
        np.testing.assert_allclose(_largest_singular_value(layer.normalized_kernel()), 1.0, rtol=3e-2)


def test_class_conditioning_changes_outputs():
    G = Generator(resolution=32, ch=8, z_dim=32, shared_dim=16, norm_act="evonorm_s0",
                  norm_act_kwargs={"groups": 4})
    D = Discriminator(resolution=32, ch=8)
    z = tf.repeat(tf.random.normal((1, 32)), 2, axis=0)
    images = G((z, tf.constant([3, 5])), training=False).numpy()
    assert np.abs(images[0] - images[1]).max() > 1e-4
    same = G((z, tf.constant([3, 3])), training=False).numpy()
    np.testing.assert_allclose(same[0], same[1], atol=1e-6)
    x = tf.repeat(tf.random.normal((1, 32, 32, 3)), 2, axis=0)
    logits = D((x, tf.constant([3, 5])), training=False).numpy()
    assert abs(logits[0] - logits[1]) > 1e-5


def test_self_attention_starts_as_identity():
    layer = blocks.SelfAttention()
    x = tf.random.normal((2, 8, 8, 16))
    np.testing.assert_allclose(layer(x), x)
    layer.sigma.assign(1.0)
    assert np.abs(layer(x).numpy() - x.numpy()).max() > 1e-4


def test_bad_arguments():
    with pytest.raises(ValueError, match="48"):
        Generator(resolution=48)
    with pytest.raises(ValueError, match="z_dim=30"):
        Generator(resolution=32, z_dim=30)
    with pytest.raises(ValueError, match="12"):
        blocks.SelfAttention()(tf.zeros((1, 4, 4, 12)))
    with pytest.raises(ValueError, match="power_iterations"):
        SpectralNormalization(tf_keras.layers.Dense(2), power_iterations=0)
    with pytest.raises(ValueError, match="LayerNormalization"):
        SpectralNormalization(tf_keras.layers.LayerNormalization())


def test_checkpoint_round_trip_with_attention(tmp_path):
    def models():
        return (Generator(resolution=64, ch=4, z_dim=60, shared_dim=8, norm_act="evonorm_b0"),
                Discriminator(resolution=128, ch=8))

    G, D = models()
    z, labels = tf.random.normal((2, 60)), tf.constant([2, 9])
    images = tf.random.normal((2, 128, 128, 3))
    G((z, labels), training=True)
    D((images, labels), training=True)
    G.attention["block3"].sigma.assign(0.7)
    path = tf.train.Checkpoint(generator=G, discriminator=D).save(str(tmp_path / "ckpt"))
    G2, D2 = models()
    G2((z, labels))
    D2((images, labels))
    tf.train.Checkpoint(generator=G2, discriminator=D2).restore(path).assert_consumed()
    np.testing.assert_allclose(G2((z, labels)), G((z, labels)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(D2((images, labels)), D((images, labels)), rtol=1e-5, atol=1e-4)

"""The truncation trick and BigGAN's orthogonal regularisation against NumPy references."""

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from evonorm_tf.gan import losses, truncation
from evonorm_tf.gan.generator import Generator


def test_truncated_latents_stay_inside_and_have_the_truncated_variance():
    rng = np.random.default_rng(0)
    z = truncation.sample_latents(rng, 4000, 16, truncation=0.5)
    assert z.shape == (4000, 16) and z.dtype == np.float32
    assert np.abs(z).max() <= 0.5
    # Var of N(0, 1) truncated to ±t: 1 − 2 t φ(t) / (2 Φ(t) − 1).
    t = 0.5
    variance = 1 - 2 * t * scipy.stats.norm.pdf(t) / (2 * scipy.stats.norm.cdf(t) - 1)
    assert z.var() == pytest.approx(variance, rel=0.03)
    full = truncation.sample_latents(np.random.default_rng(0), 4000, 16)
    assert np.abs(full).max() > 3 and full.var() == pytest.approx(1.0, rel=0.03)


def test_truncation_curve_rows_and_bad_thresholds():
    seen = []
    curve = truncation.truncation_curve(lambda t: seen.append(t) or {"fid_x": 1.0}, [1.0, 0.5])
    assert seen == [None, 1.0, 0.5]
    assert curve == [{"truncation": None, "fid_x": 1.0}, {"truncation": 1.0, "fid_x": 1.0},
                     {"truncation": 0.5, "fid_x": 1.0}]
    for bad in (0.0, -1.0, float("nan"), "0.5", True):
        with pytest.raises(ValueError, match="truncation must be a positive finite number"):
            truncation.check_truncation(bad)


def test_orthogonal_regularization_matches_numpy_and_biggan_pytorch_gradient():
    rng = np.random.default_rng(1)
    kernels = [rng.normal(size=(3, 3, 4, 5)), rng.normal(size=(6, 7))]
    beta = 1e-4
    expected = 0.0
    for kernel in kernels:
        w = kernel.reshape(-1, kernel.shape[-1])
        gram = w.T @ w
        expected += np.sum((gram * (1 - np.eye(gram.shape[0]))) ** 2)
    variables = [tf.Variable(k.astype(np.float32)) for k in kernels]
    with tf.GradientTape() as tape:
        value = losses.orthogonal_regularization(variables, beta)
    np.testing.assert_allclose(float(value), beta * expected, rtol=1e-5)
    # BigGAN-PyTorch's ortho adds 2β (WWᵀ ⊙ (1 − I)) W with W = [filters, -1]: half of ours.
    gradient = tape.gradient(value, variables)[1].numpy()
    w = kernels[1].T  # filters as rows
    pytorch = 2 * beta * ((w @ w.T) * (1 - np.eye(w.shape[0]))) @ w
    np.testing.assert_allclose(gradient, 2 * pytorch.T, rtol=1e-4, atol=1e-9)
    # Orthonormal filters (any norms) are not penalised.
    q, _ = np.linalg.qr(rng.normal(size=(8, 4)))
    assert float(losses.orthogonal_regularization([tf.constant(q * [1, 2, 3, 4], tf.float32)])) == \
        pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="received -1"):
        losses.orthogonal_regularization(variables, -1)


def test_regularized_kernels_are_the_generators_dense_and_conv_kernels():
    G = Generator(resolution=32, ch=4, z_dim=16, shared_dim=8, num_classes=10)
    G((tf.zeros((1, 16)), tf.zeros((1,), tf.int32)))
    kernels = losses.regularized_kernels(G)
    names = [k.name for k in kernels]
    # linear, 3 blocks x (2 convs + shortcut + 2 x 2 projections), RGB conv; no embedding.
    assert len(kernels) == 1 + 3 * 7 + 1
    assert all("embedding" not in name for name in names)
    assert all(k.shape.rank in (2, 4) for k in kernels)


def test_trainer_adds_the_penalty_to_the_generator_step_only():
    from evonorm_tf.gan.discriminator import Discriminator
    from evonorm_tf.gan.training import GANTrainer

    def trainer(strength):
        import tf_keras
        tf_keras.utils.set_random_seed(0)
        make = lambda: Generator(resolution=32, ch=4, z_dim=16, shared_dim=8, num_classes=10,  # noqa: E731
                                 norm_act="evonorm_s0", norm_act_kwargs={"groups": 4})
        gan = GANTrainer(make(), Discriminator(resolution=32, ch=4, num_classes=10), make(),
                         discriminator_steps=1, orthogonal_regularization=strength)
        gan.build((32, 32, 3))
        return gan

    images = tf.random.stateless_uniform((4, 32, 32, 3), [1, 2], -1, 1)
    labels = tf.constant([0, 1, 2, 3])
    plain, regularised = trainer(0.0), trainer(1.0)
    for gan in (plain, regularised):
        gan.train_step(images, labels)
    # D's update is the same (up to the order of multi-threaded float sums); G's is not.
    for a, b in zip(plain.discriminator.weights, regularised.discriminator.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-8)
    changed = [np.abs(a.numpy() - b.numpy()).max() > 1e-5 for a, b in zip(
        losses.regularized_kernels(plain.generator), losses.regularized_kernels(regularised.generator))]
    assert sum(changed) > len(changed) // 2
    with pytest.raises(ValueError, match="orthogonal_regularization must be a number >= 0"):
        GANTrainer(None, None, None, orthogonal_regularization=-1.0)

"""GAN training: hinge losses, the train step (graph and XLA), EMA, checkpoint/resume."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from evonorm_tf.gan import losses
from evonorm_tf.gan.conditional_norm import ConditionalNormAct
from evonorm_tf.gan.discriminator import Discriminator
from evonorm_tf.gan.generator import Generator
from evonorm_tf.gan.spectral_norm import spectral_norm
from evonorm_tf.gan.training import GANTrainer


class TinyGenerator(tf_keras.Model):
    """z, label → 8x8x3 through one conditional EvoNorm-B0 (keeps XLA compiles short)."""

    z_dim, num_classes = 8, 3

    def __init__(self):
        super().__init__()
        self.embedding = tf_keras.layers.Embedding(3, 4)
        self.linear = spectral_norm(tf_keras.layers.Dense(8 * 8 * 8))
        self.norm = ConditionalNormAct("evonorm_b0")
        self.conv = spectral_norm(tf_keras.layers.Conv2D(3, 3, padding="same"))

    def call(self, inputs, training=None):
        z, labels = inputs
        h = tf.reshape(self.linear(z, training=training), [-1, 8, 8, 8])
        condition = tf.concat([z, self.embedding(labels)], -1)
        return tf.tanh(self.conv(self.norm(h, condition, training=training), training=training))


class TinyDiscriminator(tf_keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = spectral_norm(tf_keras.layers.Conv2D(4, 3, strides=2))
        self.linear = spectral_norm(tf_keras.layers.Dense(3))

    def call(self, inputs, training=None):
        images, labels = inputs
        features = tf.reduce_sum(tf.nn.relu(self.conv(images, training=training)), [1, 2])
        logits = self.linear(features, training=training)
        return tf.gather(logits, labels, batch_dims=1)


def _tiny_trainer(**kwargs):
    trainer = GANTrainer(TinyGenerator(), TinyDiscriminator(), TinyGenerator(), **kwargs)
    trainer.build((8, 8, 3))
    return trainer


def _data(n):
    rng = np.random.default_rng(0)
    return (tf.constant(rng.uniform(-1, 1, (n, 8, 8, 3)), tf.float32),
            tf.constant(rng.integers(0, 3, n), tf.int32))


def test_hinge_losses_match_numpy():
    real, fake = np.array([2.0, 0.5, -1.0]), np.array([-2.0, 0.3, 1.5])
    expected_d = np.mean(np.maximum(0, 1 - real)) + np.mean(np.maximum(0, 1 + fake))
    np.testing.assert_allclose(losses.discriminator_hinge_loss(real, fake), expected_d, rtol=1e-6)
    np.testing.assert_allclose(losses.generator_hinge_loss(fake), -np.mean(fake), rtol=1e-6)


def test_optimizer_defaults_follow_biggan():
    trainer = _tiny_trainer()
    g, d = trainer.generator_optimizer, trainer.discriminator_optimizer
    assert float(g.learning_rate) == pytest.approx(1e-4) and float(d.learning_rate) == pytest.approx(4e-4)
    assert g.beta_1 == 0.0 and g.beta_2 == 0.999 and d.beta_1 == 0.0
    assert trainer.discriminator_steps == 2


@pytest.mark.parametrize("jit_compile", [False, True])
def test_train_step_updates_models_optimizers_and_ema(jit_compile):
    trainer = _tiny_trainer(discriminator_steps=2, ema_decay=0.5)
    step = trainer.make_train_step(jit_compile=jit_compile)
    images, labels = _data(8)
    g_before = [w.numpy() for w in trainer.generator.trainable_weights]
    initial_kernel = trainer.generator.linear.layer.kernel.numpy()
    d_before = [w.numpy() for w in trainer.discriminator.trainable_weights]
    metrics = step(images, labels)
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert int(trainer.step) == 1
    assert int(trainer.discriminator_optimizer.iterations) == 2  # two D updates
    assert int(trainer.generator_optimizer.iterations) == 1
    changed = lambda before, model: any(  # noqa: E731
        not np.allclose(b, w.numpy()) for b, w in zip(before, model.trainable_weights))
    assert changed(g_before, trainer.generator) and changed(d_before, trainer.discriminator)
    # EMA with decay 0.5 (started at step 0): ema = 0.5·initial + 0.5·new for every weight.
    new = trainer.generator.linear.layer.kernel.numpy()
    ema = trainer.ema_generator.linear.layer.kernel.numpy()
    np.testing.assert_allclose(ema, 0.5 * initial_kernel + 0.5 * new, rtol=1e-5, atol=1e-6)
    assert not np.allclose(ema, new)


def test_ema_is_a_copy_before_start_step():
    trainer = _tiny_trainer(ema_start_step=5, ema_decay=0.9)
    trainer.make_train_step()(*_data(8))
    for source, target in zip(trainer.generator.weights, trainer.ema_generator.weights):
        np.testing.assert_array_equal(source.numpy(), target.numpy())


def test_rejects_batch_not_multiple_of_discriminator_steps():
    trainer = _tiny_trainer(discriminator_steps=2)
    with pytest.raises(ValueError, match="batch 5"):
        trainer.train_step(*_data(5))
    with pytest.raises(ValueError, match="discriminator_steps"):
        GANTrainer(TinyGenerator(), TinyDiscriminator(), TinyGenerator(), discriminator_steps=0)


def test_checkpoint_restores_models_optimizers_and_ema(tmp_path):
    trainer = _tiny_trainer(ema_decay=0.5)
    step = trainer.make_train_step()
    for _ in range(2):
        step(*_data(8))
    manager = tf.train.CheckpointManager(trainer.checkpoint(), str(tmp_path), max_to_keep=1)
    manager.save()

    fresh = _tiny_trainer(ema_decay=0.5)
    status = fresh.checkpoint().restore(tf.train.latest_checkpoint(str(tmp_path)))
    status.assert_existing_objects_matched()
    assert int(fresh.step) == 2
    for name in ("generator", "discriminator", "ema_generator"):
        for a, b in zip(getattr(trainer, name).weights, getattr(fresh, name).weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    for name in ("generator_optimizer", "discriminator_optimizer"):
        a_vars, b_vars = getattr(trainer, name).variables, getattr(fresh, name).variables
        assert len(a_vars) == len(b_vars) > 2
        for a, b in zip(a_vars, b_vars):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    # Resumed training continues identically (stateless RNG seeded by the step).
    a = step(*_data(8))
    b = fresh.make_train_step()(*_data(8))
    np.testing.assert_allclose(float(a["generator_loss"]), float(b["generator_loss"]), rtol=1e-5)


@pytest.mark.slow
def test_biggan_train_step_compiles_with_xla():
    kwargs = dict(resolution=32, ch=8, z_dim=32, shared_dim=16, norm_act="evonorm_b0")
    trainer = GANTrainer(Generator(**kwargs), Discriminator(resolution=32, ch=8), Generator(**kwargs),
                         discriminator_steps=1)
    trainer.build((32, 32, 3))
    step = trainer.make_train_step(jit_compile=True)
    metrics = step(tf.random.uniform((4, 32, 32, 3), -1, 1), tf.constant([0, 1, 2, 3]))
    assert all(np.isfinite(float(v)) for v in metrics.values())

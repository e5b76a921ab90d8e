"""BigGAN training: hinge losses, n D steps per G step, two Adams, EMA of G, checkpoints.

    trainer = GANTrainer(Generator(...), Discriminator(...), Generator(...))  # last: EMA copy
    step = trainer.make_train_step(jit_compile=True)
    metrics = step(images, labels)       # images: [discriminator_steps · B, H, W, 3]

Defaults follow BigGAN-PyTorch's launch script for ImageNet 128 (Adam β1 = 0,
β2 = 0.999, ε = 1e-6, G lr 1e-4, D lr 4e-4) with compare_gan's 2 D steps per
G step; EMA decay 0.9999 (Brock, Donahue, Simonyan 2019, arXiv:1809.11096).
Each D step uses its own slice of the real batch and fresh fakes; generator
labels are drawn uniformly. Random numbers are stateless, seeded by
(seed, step), so a step is reproducible and compiles under XLA.

Under a `tf.distribute` strategy run `replica_step` inside `strategy.run` and
`finish_step` (EMA, step counter) in cross-replica context; `train_step` is
both, for one device. Each replica's losses are divided by the number of
replicas, so the all-reduced (summed) gradients are those of the loss
averaged over the global batch, and each replica draws its own slice of the
global batch of latents: N replicas take the same step as one device on the
concatenated batch (up to float32 round-off; batch statistics, as in BN,
are per replica unless synchronized).
"""

import tensorflow as tf
import tf_keras

from evonorm_tf.gan import losses

__all__ = ["GANTrainer"]


def _replica():
    """(replicas in sync, this replica's id); (1, 0) outside `strategy.run`."""
    context = tf.distribute.get_replica_context()
    if context is None:
        return 1, 0
    return context.num_replicas_in_sync, context.replica_id_in_sync_group


class GANTrainer(tf.Module):
    """Owns G, D, the EMA generator, both optimizers and the step counter.

    Args:
      generator, discriminator: `Generator` and `Discriminator` instances.
      ema_generator: a second generator of the same architecture; after
        `build`, its weights hold the exponential moving average of
        `generator`'s (all of them, moving statistics included, as
        BigGAN-PyTorch's `ema`), and it is the one to evaluate.
      generator_lr, discriminator_lr: Adam learning rates. Default 1e-4, 4e-4.
      beta_1, beta_2, adam_epsilon: Adam's. Default 0.0, 0.999, 1e-6.
      discriminator_steps: D updates per G update. Default 2.
      ema_decay: EMA decay. Default 0.9999.
      ema_start_step: before this step the EMA is a plain copy. Default 0.
      orthogonal_regularization: strength β of BigGAN's orthogonal
        regularisation of G's kernels (`losses.orthogonal_regularization`;
        the paper's β is 1e-4), added to G's loss. Default 0 (off).
      seed: base seed of the latents and labels. Default 0.
    """

    def __init__(self, generator, discriminator, ema_generator, generator_lr=1e-4,
                 discriminator_lr=4e-4, beta_1=0.0, beta_2=0.999, adam_epsilon=1e-6,
                 discriminator_steps=2, ema_decay=0.9999, ema_start_step=0,
                 orthogonal_regularization=0.0, seed=0):
        super().__init__()
        if not isinstance(discriminator_steps, int) or discriminator_steps < 1:
            raise ValueError(f"discriminator_steps must be a positive int, received {discriminator_steps!r}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), received {ema_decay!r}")
        if isinstance(orthogonal_regularization, bool) or not isinstance(
                orthogonal_regularization, (int, float)) or orthogonal_regularization < 0:
            raise ValueError(f"orthogonal_regularization must be a number >= 0, "
                             f"received {orthogonal_regularization!r}")
        self.orthogonal_regularization = float(orthogonal_regularization)
        self.generator = generator
        self.discriminator = discriminator
        self.ema_generator = ema_generator
        self.discriminator_steps = discriminator_steps
        self.ema_decay = ema_decay
        self.ema_start_step = ema_start_step
        self.seed = seed
        self.generator_optimizer = tf_keras.optimizers.Adam(
            generator_lr, beta_1=beta_1, beta_2=beta_2, epsilon=adam_epsilon)
        self.discriminator_optimizer = tf_keras.optimizers.Adam(
            discriminator_lr, beta_1=beta_1, beta_2=beta_2, epsilon=adam_epsilon)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.built = False

    def build(self, image_shape):
        """Creates every variable eagerly (models, EMA copy, optimizer slots)."""
        z = tf.zeros((2, self.generator.z_dim))
        labels = tf.zeros((2,), tf.int32)
        self.generator((z, labels), training=False)
        self.ema_generator((z, labels), training=False)
        self.discriminator((tf.zeros((2, *image_shape)), labels), training=False)
        for source, target in zip(self.generator.weights, self.ema_generator.weights):
            target.assign(source)
        self.generator_optimizer.build(self.generator.trainable_variables)
        self.discriminator_optimizer.build(self.discriminator.trainable_variables)
        self.built = True

    def checkpoint(self):
        """A `tf.train.Checkpoint` of everything needed to resume training."""
        return tf.train.Checkpoint(
            generator=self.generator, discriminator=self.discriminator,
            ema_generator=self.ema_generator, generator_optimizer=self.generator_optimizer,
            discriminator_optimizer=self.discriminator_optimizer, step=self.step)

    def _latents(self, batch, salt):
        """This replica's `batch` rows of the global batch of latents and labels."""
        replicas, replica_id = _replica()
        seed = tf.stack([tf.cast(self.seed, tf.int64) * 1000 + salt, self.step])
        z = tf.random.stateless_normal((batch * replicas, self.generator.z_dim), seed)
        labels = tf.random.stateless_uniform(
            (batch * replicas,), seed + 1, minval=0, maxval=self.generator.num_classes,
            dtype=tf.int32)
        if replicas == 1:
            return z, labels
        return z[replica_id * batch:(replica_id + 1) * batch], labels[
            replica_id * batch:(replica_id + 1) * batch]

    def train_step(self, images, labels):
        """`discriminator_steps` D updates then one G update and the EMA update (one device).

        Returns a dict of float32 scalars: `discriminator_loss` (last D step),
        `generator_loss`, `real_logits`, `fake_logits` (means).
        """
        metrics = self.replica_step(images, labels)
        self.finish_step()
        return metrics

    def finish_step(self):
        """The EMA update and the step increment (cross-replica context under a strategy)."""
        self._update_ema()
        self.step.assign_add(1)

    def replica_step(self, images, labels):
        """The D and G updates of one replica: `images` `[discriminator_steps · B, ...]`.

        Gradients are of the loss over the global batch (`B` × replicas);
        returns this replica's metrics (see `train_step`).
        """
        scale = 1.0 / _replica()[0]
        batch = images.shape[0] // self.discriminator_steps
        if batch * self.discriminator_steps != images.shape[0]:
            raise ValueError(f"batch {images.shape[0]} is not a multiple of "
                             f"discriminator_steps={self.discriminator_steps}")
        for index in range(self.discriminator_steps):
            real = images[index * batch:(index + 1) * batch]
            real_labels = labels[index * batch:(index + 1) * batch]
            z, fake_labels = self._latents(batch, index)
            fake = self.generator((z, fake_labels), training=True)
            with tf.GradientTape() as tape:
                real_logits = self.discriminator((real, real_labels), training=True)
                fake_logits = self.discriminator((fake, fake_labels), training=True)
                d_loss = losses.discriminator_hinge_loss(real_logits, fake_logits)
                scaled_loss = d_loss * scale
            variables = self.discriminator.trainable_variables
            self.discriminator_optimizer.apply_gradients(
                zip(tape.gradient(scaled_loss, variables), variables))
        z, fake_labels = self._latents(batch, self.discriminator_steps)
        with tf.GradientTape() as tape:
            fake = self.generator((z, fake_labels), training=True)
            g_loss = losses.generator_hinge_loss(
                self.discriminator((fake, fake_labels), training=True))
            scaled_loss = g_loss * scale
            if self.orthogonal_regularization:
                # One copy of the penalty over all replicas: the gradients are summed.
                scaled_loss += scale * losses.orthogonal_regularization(
                    losses.regularized_kernels(self.generator), self.orthogonal_regularization)
        variables = self.generator.trainable_variables
        self.generator_optimizer.apply_gradients(
            zip(tape.gradient(scaled_loss, variables), variables))
        return {"discriminator_loss": d_loss, "generator_loss": g_loss,
                "real_logits": tf.reduce_mean(real_logits),
                "fake_logits": tf.reduce_mean(fake_logits)}

    def _update_ema(self):
        decay = tf.where(self.step >= self.ema_start_step, self.ema_decay, 0.0)
        for source, target in zip(self.generator.weights, self.ema_generator.weights):
            if target.dtype.is_floating:
                target.assign(decay * target + (1.0 - decay) * source)
            else:
                target.assign(source)

    def make_train_step(self, jit_compile=False):
        """`train_step` as a `tf.function` (XLA-compiled with `jit_compile=True`)."""
        if not self.built:
            raise ValueError("call build(image_shape) before make_train_step")
        return tf.function(self.train_step, jit_compile=jit_compile)

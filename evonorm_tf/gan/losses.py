"""Hinge GAN losses (Lim & Ye 2017; used by SAGAN and BigGAN)."""

import tensorflow as tf

__all__ = ["discriminator_hinge_loss", "generator_hinge_loss"]


def discriminator_hinge_loss(real_logits, fake_logits):
    """`mean(relu(1 − D(x))) + mean(relu(1 + D(G(z))))`."""
    real_logits = tf.cast(real_logits, tf.float32)
    fake_logits = tf.cast(fake_logits, tf.float32)
    return tf.reduce_mean(tf.nn.relu(1.0 - real_logits)) + tf.reduce_mean(tf.nn.relu(1.0 + fake_logits))


def generator_hinge_loss(fake_logits):
    """`−mean(D(G(z)))`."""
    return -tf.reduce_mean(tf.cast(fake_logits, tf.float32))

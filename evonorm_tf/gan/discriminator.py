"""BigGAN projection discriminator (tf_keras).

`D(x, y) = w·φ(x) + b + embed(y)·φ(x)` where φ(x) is the sum over space of the
ReLU of the last residual block (Miyato & Koyama 2018, arXiv:1802.05637;
BigGAN, arXiv:1809.11096). No normalisation layers; spectral norm throughout.
"""

import tensorflow as tf
import tf_keras

from evonorm_tf.gan import architectures, blocks
from evonorm_tf.gan.spectral_norm import spectral_norm

__all__ = ["Discriminator"]


class Discriminator(tf_keras.Model):
    """BigGAN discriminator.

    Args:
      resolution: 32, 64 or 128 (`architectures.DISCRIMINATOR_SPECS`).
      ch: base width. Default 32.
      num_classes: number of classes. Default 10.
      use_sn: spectral normalisation. Default True.

    Call: `D((images, labels), training)` → `[N]` float32 logits.
    """

    def __init__(self, resolution=32, ch=32, num_classes=10, use_sn=True, **kwargs):
        super().__init__(**kwargs)
        spec = architectures.discriminator_spec(resolution)
        self.resolution = resolution
        self.blocks = []
        self.attention = {}
        size = resolution
        for index, (multiplier, down) in enumerate(zip(spec.multipliers, spec.downsample)):
            self.blocks.append(blocks.DiscriminatorBlock(
                multiplier * ch, down, preactivation=index > 0, use_sn=use_sn, name=f"block{index}"))
            if down:
                size //= 2
            if size in spec.attention:
                self.attention[f"block{index}"] = blocks.SelfAttention(
                    use_sn, name=f"attention{index}")
        self.linear = blocks.dense(1, use_sn)
        self.embedding = spectral_norm(tf_keras.layers.Embedding(
            num_classes, spec.multipliers[-1] * ch, embeddings_initializer="orthogonal"), use_sn)

    def call(self, inputs, training=None):
        images, labels = inputs
        h = tf.cast(images, tf.float32)
        for index, block in enumerate(self.blocks):
            h = block(h, training=training)
            if f"block{index}" in self.attention:
                h = self.attention[f"block{index}"](h, training=training)
        features = tf.reduce_sum(tf.nn.relu(h), axis=[1, 2])
        logits = tf.squeeze(self.linear(features, training=training), -1)
        projection = tf.reduce_sum(
            self.embedding(tf.cast(labels, tf.int32), training=training) * features, axis=-1)
        return logits + projection

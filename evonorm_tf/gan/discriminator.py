"""BigGAN and BigGAN-deep projection discriminators (tf_keras).

`D(x, y) = w·φ(x) + b + embed(y)·φ(x)` where φ(x) is the sum over space of the
ReLU of the last residual block (Miyato & Koyama 2018, arXiv:1802.05637;
BigGAN, arXiv:1809.11096). No normalisation layers; spectral norm throughout.
BigGAN-deep (`architecture="biggan_deep"`): a 3x3 stem convolution, then two
bottleneck blocks per stage (`deep_blocks.DeepDiscriminatorBlock`), the first
changing the width and downsampling, the second not.
"""

import tensorflow as tf
import tf_keras

from evonorm_tf.gan import architectures, blocks, deep_blocks
from evonorm_tf.gan.spectral_norm import spectral_norm

__all__ = ["Discriminator"]


class Discriminator(tf_keras.Model):
    """BigGAN or BigGAN-deep discriminator.

    Args:
      resolution: 32, 64 or 128 (`architectures.DISCRIMINATOR_SPECS`,
        `architectures.DEEP_DISCRIMINATOR_SPECS`).
      ch: base width. Default 32.
      num_classes: number of classes. Default 10.
      use_sn: spectral normalisation. Default True.
      architecture: `"biggan"` or `"biggan_deep"`. Default `"biggan"`.

    Call: `D((images, labels), training)` → `[N]` float32 logits.
    """

    def __init__(self, resolution=32, ch=32, num_classes=10, use_sn=True, architecture="biggan",
                 **kwargs):
        super().__init__(**kwargs)
        spec = architectures.discriminator_spec(resolution, architecture)
        self.resolution = resolution
        self.architecture = architecture
        self.blocks = []
        self.attention = {}
        bottleneck = architectures.VARIANTS[architecture]["block"] == "bottleneck"
        # BigGAN-deep: multipliers[0] is the stem's width, then one per stage.
        self.stem = blocks.conv(spec.multipliers[0] * ch, 3, use_sn) if bottleneck else None
        size = resolution
        for stage, down in enumerate(spec.downsample):
            index = len(self.blocks)
            if bottleneck:
                filters = spec.multipliers[stage + 1] * ch
                self.blocks.append(deep_blocks.DeepDiscriminatorBlock(
                    filters, down, use_sn, name=f"block{index}"))
                index += 1
                self.blocks.append(deep_blocks.DeepDiscriminatorBlock(
                    filters, False, use_sn, name=f"block{index}"))
            else:
                self.blocks.append(blocks.DiscriminatorBlock(
                    spec.multipliers[stage] * ch, down, preactivation=index > 0, use_sn=use_sn,
                    name=f"block{index}"))
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
        if self.stem is not None:
            h = self.stem(h, training=training)
        for index, block in enumerate(self.blocks):
            h = block(h, training=training)
            if f"block{index}" in self.attention:
                h = self.attention[f"block{index}"](h, training=training)
        features = tf.reduce_sum(tf.nn.relu(h), axis=[1, 2])
        logits = tf.squeeze(self.linear(features, training=training), -1)
        projection = tf.reduce_sum(
            self.embedding(tf.cast(labels, tf.int32), training=training) * features, axis=-1)
        return logits + projection

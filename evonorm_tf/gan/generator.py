"""BigGAN and BigGAN-deep generators (tf_keras) with any norm-act family in their conditional norms.

    G = Generator(resolution=32, ch=32, num_classes=10, norm_act="evonorm_b0")
    images = G((z, labels), training=True)   # [N, 32, 32, 3] in [-1, 1]
    G_deep = Generator(resolution=128, ch=128, architecture="biggan_deep")

BigGAN, hierarchical latent: z is split into `num_blocks + 1` equal chunks;
the first feeds a linear layer to a 4x4 map, chunk i+1 is concatenated with
the shared class embedding to form block i's condition for its
`ConditionalNormAct`s. BigGAN-deep: c = [z, embedding] feeds the linear layer
and is every block's condition; each resolution has two bottleneck blocks
(`deep_blocks.DeepGeneratorBlock`), the first at the input width, the second
upsampling to the next width.
The last norm-act (before the RGB convolution and tanh) is unconditional.
Reference: Brock, Donahue, Simonyan 2019, arXiv:1809.11096.
"""

import tensorflow as tf
import tf_keras

from evonorm_tf import tf_keras as evonorm
from evonorm_tf.gan import architectures, blocks, deep_blocks

__all__ = ["Generator"]


class Generator(tf_keras.Model):
    """BigGAN or BigGAN-deep generator.

    Args:
      resolution: 32, 64 or 128 (`architectures.GENERATOR_SPECS`).
      ch: base width. Default 32 (paper: 96 at 128x128; BigGAN-deep 128).
      z_dim: latent size; for BigGAN it must be divisible by `num_blocks + 1`.
        Default 128.
      shared_dim: class-embedding size. Default 128.
      num_classes: number of classes. Default 10.
      norm_act: `get_norm_act` name of every norm-act. Default `"bn_relu"`.
      norm_act_kwargs: extra arguments of the norm-acts (e.g. `{"groups": 8}`).
      use_sn: spectral normalisation. Default True.
      image_channels: channels of the output images. Default 3.
      architecture: `"biggan"` or `"biggan_deep"` (`architectures.VARIANTS`).
        Default `"biggan"`.
    """

    def __init__(self, resolution=32, ch=32, z_dim=128, shared_dim=128, num_classes=10,
                 norm_act="bn_relu", norm_act_kwargs=None, use_sn=True, image_channels=3,
                 architecture="biggan", **kwargs):
        super().__init__(**kwargs)
        spec = architectures.generator_spec(resolution, architecture)
        self.resolution = resolution
        self.architecture = architecture
        variant = architectures.VARIANTS[architecture]
        self.hierarchical_z = variant["hierarchical_z"]
        bottleneck = variant["block"] == "bottleneck"
        self.num_blocks = (len(spec.multipliers) - 1) * variant["blocks_per_resolution"]
        if self.hierarchical_z and z_dim % (self.num_blocks + 1):
            raise ValueError(f"z_dim={z_dim} must be divisible by num_blocks + 1 = "
                             f"{self.num_blocks + 1} (hierarchical latent)")
        self.z_dim, self.num_classes = z_dim, num_classes
        self.chunk = z_dim // (self.num_blocks + 1) if self.hierarchical_z else z_dim
        self.bottom_channels = spec.multipliers[0] * ch
        norm_act_kwargs = dict(norm_act_kwargs or {})
        self.embedding = tf_keras.layers.Embedding(num_classes, shared_dim,
                                                   embeddings_initializer="orthogonal")
        self.linear = blocks.dense(4 * 4 * self.bottom_channels, use_sn)
        self.blocks = []
        self.attention = {}
        size = 4
        for multiplier, previous in zip(spec.multipliers[1:], spec.multipliers):
            size *= 2
            index = len(self.blocks)
            if not bottleneck:
                self.blocks.append(blocks.GeneratorBlock(
                    multiplier * ch, norm_act, use_sn, norm_act_kwargs, name=f"block{index}"))
            else:  # BigGAN-deep: one block at the input width, then one upsampling
                self.blocks.append(deep_blocks.DeepGeneratorBlock(
                    previous * ch, False, norm_act, use_sn, norm_act_kwargs, name=f"block{index}"))
                index += 1
                self.blocks.append(deep_blocks.DeepGeneratorBlock(
                    multiplier * ch, True, norm_act, use_sn, norm_act_kwargs, name=f"block{index}"))
            if size in spec.attention:
                self.attention[f"block{index}"] = blocks.SelfAttention(
                    use_sn, name=f"attention{index}")
        self.output_norm = evonorm.get_norm_act(norm_act, **norm_act_kwargs)
        self.to_rgb = blocks.conv(image_channels, 3, use_sn)

    def call(self, inputs, training=None):
        z, labels = inputs
        z = tf.cast(z, tf.float32)
        embedded = self.embedding(tf.cast(labels, tf.int32))
        if self.hierarchical_z:
            chunks = tf.split(z, self.num_blocks + 1, axis=-1)
            conditions = [tf.concat([chunk, embedded], axis=-1) for chunk in chunks[1:]]
            h = self.linear(chunks[0], training=training)
        else:
            conditions = [tf.concat([z, embedded], axis=-1)] * len(self.blocks)
            h = self.linear(conditions[0], training=training)
        h = tf.reshape(h, [-1, 4, 4, self.bottom_channels])
        for index, (block, condition) in enumerate(zip(self.blocks, conditions)):
            h = block(h, condition, training=training)
            if f"block{index}" in self.attention:
                h = self.attention[f"block{index}"](h, training=training)
        h = self.output_norm(h, training=training)
        return tf.tanh(self.to_rgb(h, training=training))

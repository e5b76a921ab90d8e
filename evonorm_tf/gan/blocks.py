"""BigGAN building blocks (tf_keras): residual up/down blocks and self-attention.

Every convolution and dense layer is spectrally normalised (`spectral_norm=True`)
and orthogonally initialised, as in BigGAN (Brock, Donahue, Simonyan 2019,
arXiv:1809.11096).
"""

import tensorflow as tf
import tf_keras

from evonorm_tf.gan.conditional_norm import ConditionalNormAct
from evonorm_tf.gan.spectral_norm import spectral_norm

__all__ = ["DiscriminatorBlock", "GeneratorBlock", "SelfAttention", "conv", "dense"]

INITIALIZER = "orthogonal"


def conv(filters, kernel_size, use_sn=True, use_bias=True, name=None):
    """A 'same'-padded Conv2D, orthogonal init, spectrally normalised when `use_sn`."""
    layer = tf_keras.layers.Conv2D(filters, kernel_size, padding="same", use_bias=use_bias,
                                   kernel_initializer=INITIALIZER, name=name)
    return spectral_norm(layer, use_sn)


def dense(units, use_sn=True, use_bias=True, name=None):
    """A Dense layer, orthogonal init, spectrally normalised when `use_sn`."""
    layer = tf_keras.layers.Dense(units, use_bias=use_bias, kernel_initializer=INITIALIZER,
                                  name=name)
    return spectral_norm(layer, use_sn)


def _upsample(x):
    return tf.repeat(tf.repeat(x, 2, axis=1), 2, axis=2)  # nearest neighbour, x2


def _downsample(x):
    return tf.nn.avg_pool2d(x, 2, 2, "VALID")


class GeneratorBlock(tf_keras.layers.Layer):
    """`cnorm → up → conv3 → cnorm → conv3`, plus `up → conv1` shortcut.

    Args:
      filters: output channels.
      norm_act: `get_norm_act` name of both conditional norm-acts.
      use_sn: spectral normalisation of convolutions and γ/β projections.
      norm_act_kwargs: passed to `ConditionalNormAct` (e.g. `groups`).

    Call arguments: `inputs` `[N, H, W, C]`, `condition` `[N, D]`, `training`.
    Returns `[N, 2H, 2W, filters]`.
    """

    def __init__(self, filters, norm_act="bn_relu", use_sn=True, norm_act_kwargs=None, **kwargs):
        super().__init__(**kwargs)
        norm_act_kwargs = dict(norm_act_kwargs or {})
        self.norm1 = ConditionalNormAct(norm_act, spectral_norm=use_sn, **norm_act_kwargs)
        self.norm2 = ConditionalNormAct(norm_act, spectral_norm=use_sn, **norm_act_kwargs)
        self.conv1 = conv(filters, 3, use_sn)
        self.conv2 = conv(filters, 3, use_sn)
        self.shortcut = conv(filters, 1, use_sn)

    def call(self, inputs, condition, training=None):
        h = self.norm1(inputs, condition, training=training)
        h = self.conv1(_upsample(h), training=training)
        h = self.norm2(h, condition, training=training)
        h = self.conv2(h, training=training)
        return h + self.shortcut(_upsample(inputs), training=training)


class DiscriminatorBlock(tf_keras.layers.Layer):
    """`[relu →] conv3 → relu → conv3 [→ avgpool]` plus a shortcut.

    The first block of the discriminator takes images and has no leading
    activation (`preactivation=False`); its shortcut downsamples before the 1x1
    convolution, the others after (BigGAN-PyTorch's `DBlock`). The shortcut is
    a 1x1 convolution when the block changes the width or downsamples, else
    the identity (BigGAN-PyTorch's `learnable_sc`; compare_gan builds no
    shortcut convolution either when the width is unchanged).

    Args:
      filters: output channels.
      downsample: 2x2 average pooling at the end of both paths.
      preactivation: ReLU before the first convolution.
      use_sn: spectral normalisation of the convolutions.
    """

    def __init__(self, filters, downsample=True, preactivation=True, use_sn=True, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.downsample = downsample
        self.preactivation = preactivation
        self.use_sn = use_sn
        self.conv1 = conv(filters, 3, use_sn)
        self.conv2 = conv(filters, 3, use_sn)
        self.shortcut = None

    def build(self, input_shape):
        if self.downsample or int(input_shape[-1]) != self.filters:
            self.shortcut = conv(self.filters, 1, self.use_sn)
        super().build(input_shape)

    def call(self, inputs, training=None):
        h = tf.nn.relu(inputs) if self.preactivation else inputs
        h = self.conv1(h, training=training)
        h = self.conv2(tf.nn.relu(h), training=training)
        if self.downsample:
            h = _downsample(h)
        shortcut = inputs
        if self.shortcut is None:
            return h + shortcut
        if self.preactivation:
            shortcut = self.shortcut(shortcut, training=training)
            if self.downsample:
                shortcut = _downsample(shortcut)
        else:
            if self.downsample:
                shortcut = _downsample(shortcut)
            shortcut = self.shortcut(shortcut, training=training)
        return h + shortcut


class SelfAttention(tf_keras.layers.Layer):
    """SAGAN self-attention (Zhang et al. 2019, arXiv:1805.08318) as used by BigGAN.

    `x + σ · conv1(softmax(θ(x)·φ(x)ᵀ) · g(x))` with θ, φ 1x1 convs to C/8
    channels, g to C/2, φ and g max-pooled 2x2, and a learned scalar σ
    initialised to zero (so the block starts as the identity). The four 1x1
    convolutions have no bias (compare_gan's `non_local_block`,
    BigGAN-PyTorch's `Attention`).
    """

    def __init__(self, use_sn=True, **kwargs):
        super().__init__(**kwargs)
        self.use_sn = use_sn

    def build(self, input_shape):
        channels = int(input_shape[-1])
        if channels % 8:
            raise ValueError(f"SelfAttention needs channels divisible by 8, received {channels}")
        self.theta = conv(channels // 8, 1, self.use_sn, use_bias=False)
        self.phi = conv(channels // 8, 1, self.use_sn, use_bias=False)
        self.g = conv(channels // 2, 1, self.use_sn, use_bias=False)
        self.output_conv = conv(channels, 1, self.use_sn, use_bias=False)
        self.sigma = self.add_weight("sigma", shape=(), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs, training=None):
        batch = tf.shape(inputs)[0]
        height, width, channels = inputs.shape[1], inputs.shape[2], inputs.shape[3]
        pool = lambda t: tf.nn.max_pool2d(t, 2, 2, "VALID")  # noqa: E731
        theta = tf.reshape(self.theta(inputs, training=training), [batch, -1, channels // 8])
        phi = tf.reshape(pool(self.phi(inputs, training=training)), [batch, -1, channels // 8])
        g = tf.reshape(pool(self.g(inputs, training=training)), [batch, -1, channels // 2])
        attention = tf.nn.softmax(tf.matmul(theta, phi, transpose_b=True), axis=-1)
        attended = tf.reshape(tf.matmul(attention, g), [batch, height, width, channels // 2])
        return inputs + self.sigma * self.output_conv(attended, training=training)

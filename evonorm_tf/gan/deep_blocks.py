"""BigGAN-deep bottleneck residual blocks (tf_keras).

BigGAN-deep (Brock, Donahue, Simonyan 2019, arXiv:1809.11096, appendix B)
replaces BigGAN's residual blocks by bottleneck blocks: a 1x1 convolution
divides the width by `channel_ratio` (4), two 3x3 convolutions work at that
width, and a 1x1 convolution produces the output width. The skip connections
keep the input unchanged where they can:

- generator: the skip *drops* channels (keeps the first `filters`) and
  upsamples; there is no 1x1 convolution on it;
- discriminator: the skip average-pools and *concatenates* a learned 1x1
  convolution of itself to reach `filters` channels.

Convolutions are orthogonally initialised and spectrally normalised
(`use_sn=True`), as in `blocks.py`.
"""

import tensorflow as tf
import tf_keras

from evonorm_tf.gan.blocks import _downsample, _upsample, conv
from evonorm_tf.gan.conditional_norm import ConditionalNormAct

__all__ = ["DeepDiscriminatorBlock", "DeepGeneratorBlock"]


def _check_channel_ratio(channel_ratio):
    if not isinstance(channel_ratio, int) or isinstance(channel_ratio, bool) or channel_ratio < 1:
        raise ValueError(f"channel_ratio must be a positive int, received {channel_ratio!r}")


def _input_channels(input_shape, block):
    input_shape = tf.TensorShape(input_shape)
    if input_shape.rank != 4 or input_shape[-1] is None:
        raise ValueError(f"{block} expects [N, H, W, C] inputs with known C, "
                         f"received shape {input_shape}")
    return int(input_shape[-1])


class DeepGeneratorBlock(tf_keras.layers.Layer):
    """BigGAN-deep generator block.

    Residual branch, `C` input channels, `B = C // channel_ratio`:

        cnorm → conv1x1(B) → cnorm → [up] → conv3(B) → cnorm → conv3(B)
              → cnorm → conv1x1(filters)

    Skip: the first `filters` channels of the input, upsampled with the
    branch (`[up]`: 2x nearest neighbour). Each `cnorm` is a
    `ConditionalNormAct` (normalisation, class-conditional γ, β and the
    activation of the `norm_act` family).

    Args:
      filters: output channels; at most the input channels.
      upsample: double the resolution. Default False.
      norm_act: `get_norm_act` name of the four conditional norm-acts.
        Default `"bn_relu"` (BigGAN-deep's choice).
      use_sn: spectral normalisation of the convolutions and the γ/β
        projections. Default True.
      norm_act_kwargs: passed to every `ConditionalNormAct` (e.g. `groups`).
      channel_ratio: input width over bottleneck width. Default 4 (paper).

    Call arguments: `inputs` `[N, H, W, C]`, `condition` `[N, D]`, `training`.
    Returns `[N, H', W', filters]` with `H' = 2H` when `upsample`.
    """

    def __init__(self, filters, upsample=False, norm_act="bn_relu", use_sn=True,
                 norm_act_kwargs=None, channel_ratio=4, **kwargs):
        super().__init__(**kwargs)
        _check_channel_ratio(channel_ratio)
        self.filters = int(filters)
        self.upsample = bool(upsample)
        self.norm_act = norm_act
        self.use_sn = use_sn
        self.norm_act_kwargs = dict(norm_act_kwargs or {})
        self.channel_ratio = channel_ratio
        self.norms = [ConditionalNormAct(norm_act, spectral_norm=use_sn, **self.norm_act_kwargs)
                      for _ in range(4)]

    def build(self, input_shape):
        channels = _input_channels(input_shape, "DeepGeneratorBlock")
        if self.filters > channels:
            raise ValueError(f"DeepGeneratorBlock drops channels on its skip: filters={self.filters} "
                             f"must not exceed the input channels, received {channels}")
        bottleneck = channels // self.channel_ratio
        if bottleneck < 1:
            raise ValueError(f"channel_ratio={self.channel_ratio} leaves no channels of "
                             f"the input's {channels}")
        self.reduce = conv(bottleneck, 1, self.use_sn, name="reduce")
        self.conv1 = conv(bottleneck, 3, self.use_sn, name="conv1")
        self.conv2 = conv(bottleneck, 3, self.use_sn, name="conv2")
        self.expand = conv(self.filters, 1, self.use_sn, name="expand")
        super().build(input_shape)

    def call(self, inputs, condition, training=None):
        h = self.reduce(self.norms[0](inputs, condition, training=training), training=training)
        h = self.norms[1](h, condition, training=training)
        if self.upsample:
            h = _upsample(h)
        h = self.conv1(h, training=training)
        h = self.conv2(self.norms[2](h, condition, training=training), training=training)
        h = self.expand(self.norms[3](h, condition, training=training), training=training)
        skip = inputs[..., :self.filters]
        if self.upsample:
            skip = _upsample(skip)
        return h + tf.cast(skip, h.dtype)

    def compute_output_shape(self, input_shape):
        batch, height, width = tf.TensorShape(input_shape)[:3]
        scale = 2 if self.upsample else 1
        return tf.TensorShape([batch, None if height is None else height * scale,
                               None if width is None else width * scale, self.filters])


class DeepDiscriminatorBlock(tf_keras.layers.Layer):
    """BigGAN-deep discriminator block.

    Residual branch, `B = filters // channel_ratio`:

        relu → conv1x1(B) → relu → conv3(B) → relu → conv3(B) → relu → [avgpool]
             → conv1x1(filters)

    Skip: `[avgpool](x)`, then, when `filters` exceeds the input channels `C`,
    `concat([skip, conv1x1(skip) → filters − C channels])`; the input channels
    pass unchanged. No normalisation layers.

    Args:
      filters: output channels; at least the input channels.
      downsample: halve the resolution (2x2 average pooling). Default False.
      use_sn: spectral normalisation. Default True.
      channel_ratio: output width over bottleneck width. Default 4 (paper).

    Call arguments: `inputs` `[N, H, W, C]`, `training`.
    Returns `[N, H', W', filters]` with `H' = H / 2` when `downsample`.
    """

    def __init__(self, filters, downsample=False, use_sn=True, channel_ratio=4, **kwargs):
        super().__init__(**kwargs)
        _check_channel_ratio(channel_ratio)
        self.filters = int(filters)
        self.downsample = bool(downsample)
        self.use_sn = use_sn
        self.channel_ratio = channel_ratio
        bottleneck = self.filters // channel_ratio
        if bottleneck < 1:
            raise ValueError(f"channel_ratio={channel_ratio} leaves no channels of "
                             f"filters={self.filters}")
        self.reduce = conv(bottleneck, 1, use_sn, name="reduce")
        self.conv1 = conv(bottleneck, 3, use_sn, name="conv1")
        self.conv2 = conv(bottleneck, 3, use_sn, name="conv2")
        self.expand = conv(self.filters, 1, use_sn, name="expand")

    def build(self, input_shape):
        channels = _input_channels(input_shape, "DeepDiscriminatorBlock")
        if channels > self.filters:
            raise ValueError(f"DeepDiscriminatorBlock adds channels on its skip: "
                             f"filters={self.filters} must be at least the input channels, "
                             f"received {channels}")
        self.extra_channels = (conv(self.filters - channels, 1, self.use_sn, name="extra_channels")
                               if channels < self.filters else None)
        super().build(input_shape)

    def call(self, inputs, training=None):
        h = self.reduce(tf.nn.relu(inputs), training=training)
        h = self.conv1(tf.nn.relu(h), training=training)
        h = self.conv2(tf.nn.relu(h), training=training)
        h = tf.nn.relu(h)
        skip = inputs
        if self.downsample:
            h, skip = _downsample(h), _downsample(skip)
        h = self.expand(h, training=training)
        if self.extra_channels is not None:
            skip = tf.concat([skip, tf.cast(self.extra_channels(skip, training=training), skip.dtype)],
                             axis=-1)
        return h + tf.cast(skip, h.dtype)

    def compute_output_shape(self, input_shape):
        batch, height, width = tf.TensorShape(input_shape)[:3]
        scale = 2 if self.downsample else 1
        return tf.TensorShape([batch, None if height is None else height // scale,
                               None if width is None else width // scale, self.filters])

"""EfficientNet-B0…B7 backbones whose every BN-activation pair is a chosen norm-act layer.

The architecture is that of the EfficientNet authors' code (tensorflow/tpu
`efficientnet_builder.py` / `efficientnet_model.py`): a 3×3/2 stem, seven
stages of MBConv blocks (1×1 expansion, k×k depthwise, squeeze-and-excitation,
1×1 projection) from `EFFICIENTNET_B0_BLOCKS`, scaled by `EFFICIENTNET_SCALING`,
then a 1×1 head convolution. Each BN followed by SiLU (stem, expansion,
depthwise, head) becomes the chosen norm-act; the projection's BN, which has no
activation, becomes the norm-act with `nonlinearity=False` (plain BN, or the
affine map `x·γ + β` for an EvoNorm). The squeeze-and-excitation keeps its own
SiLU and sigmoid: it has no normalization. `bn_silu` is the baseline.

Channel counts that the requested group count does not divide (16, 24, 40,
112, 144, ... with 32 groups) follow the group rule of
`evonorm_tf.modeling.norm_act`: the largest divisor of the channels that is at
most `groups` (40 channels → 20 groups, 24 → 24, 144 → 24).

Convolution kernels (also depthwise kernels) carry `kernel_regularizer`; the
norm-act layers and the convolution biases of the squeeze-and-excitation do
not, so norm-act weights are excluded from weight decay.

Reference: Tan & Le. EfficientNet: Rethinking Model Scaling for Convolutional
Neural Networks. arXiv:1905.11946. Liu, Brock, Simonyan, Le. Evolving
Normalization-Activation Layers. arXiv:2004.02967.
"""

import collections
import math

import tensorflow as tf
import tf_keras

from official.modeling import tf_utils
from official.vision.modeling.layers import nn_layers

from evonorm_tf import arguments
from evonorm_tf.modeling import classifier
from evonorm_tf.modeling import norm_act as norm_act_lib
from evonorm_tf.modeling.backbones import registration

# One MBConv stage of EfficientNet-B0: repeats, kernel size, stride of the first
# block, expansion ratio, input and output filters, and whether its output is
# a backbone endpoint (Tan & Le 2019, Table 1).
BlockSpec = collections.namedtuple(
    "BlockSpec", ["repeats", "kernel_size", "strides", "expand_ratio", "in_filters", "out_filters", "is_output"]
)
EFFICIENTNET_B0_BLOCKS = (
    BlockSpec(1, 3, 1, 1, 32, 16, False),
    BlockSpec(2, 3, 2, 6, 16, 24, True),
    BlockSpec(2, 5, 2, 6, 24, 40, True),
    BlockSpec(3, 3, 2, 6, 40, 80, False),
    BlockSpec(3, 5, 1, 6, 80, 112, True),
    BlockSpec(4, 5, 2, 6, 112, 192, False),
    BlockSpec(1, 3, 1, 6, 192, 320, True),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280

# width, depth, input resolution and classifier dropout of each model
# (authors' `efficientnet_builder.efficientnet_params`).
Scaling = collections.namedtuple("Scaling", ["width", "depth", "resolution", "dropout_rate"])
EFFICIENTNET_SCALING = {
    "b0": Scaling(1.0, 1.0, 224, 0.2),
    "b1": Scaling(1.0, 1.1, 240, 0.2),
    "b2": Scaling(1.1, 1.2, 260, 0.3),
    "b3": Scaling(1.2, 1.4, 300, 0.3),
    "b4": Scaling(1.4, 1.8, 380, 0.4),
    "b5": Scaling(1.6, 2.2, 456, 0.4),
    "b6": Scaling(1.8, 2.6, 528, 0.5),
    "b7": Scaling(2.0, 3.1, 600, 0.5),
}


def round_repeats(repeats, depth_scale):
    """Blocks per stage after depth scaling: `ceil(depth_scale · repeats)`."""
    return int(math.ceil(depth_scale * repeats))


def round_filters(filters, width_scale):
    """Filters after width scaling, a multiple of 8 (as the authors' code)."""
    return nn_layers.round_filters(filters, width_scale, divisor=8)


@tf_keras.utils.register_keras_serializable(package="evonorm_tf")
class SqueezeExcitation(tf_keras.layers.Layer):
    """`x · sigmoid(W2 · silu(W1 · mean_hw(x) + b1) + b2)` with 1×1 convolutions.

    Args:
      reduced_filters: channels of the squeeze.
      kernel_initializer, kernel_regularizer: of the two 1×1 kernels (biases
        are not regularized).
      data_format: `"channels_last"` or `"channels_first"`.
    """

    def __init__(self, reduced_filters, kernel_initializer="VarianceScaling",
                 kernel_regularizer=None, data_format="channels_last", **kwargs):
        super().__init__(**kwargs)
        self.reduced_filters = int(reduced_filters)
        self.kernel_initializer = kernel_initializer
        self.kernel_regularizer = kernel_regularizer
        self.data_format = arguments.check_data_format(data_format)

    def build(self, input_shape):
        channels = input_shape[-1] if self.data_format == "channels_last" else input_shape[1]
        common = dict(
            kernel_size=1,
            use_bias=True,
            data_format=self.data_format,
            kernel_regularizer=self.kernel_regularizer,
        )
        self.reduce = tf_keras.layers.Conv2D(
            self.reduced_filters, activation="swish", name="reduce",
            kernel_initializer=tf_utils.clone_initializer(self.kernel_initializer), **common,
        )
        self.expand = tf_keras.layers.Conv2D(
            int(channels), activation="sigmoid", name="expand",
            kernel_initializer=tf_utils.clone_initializer(self.kernel_initializer), **common,
        )
        super().build(input_shape)

    def call(self, inputs):
        spatial_axes = [1, 2] if self.data_format == "channels_last" else [2, 3]
        squeezed = tf.reduce_mean(inputs, axis=spatial_axes, keepdims=True)
        return inputs * self.expand(self.reduce(squeezed))

    def get_config(self):
        return {
            **super().get_config(),
            "reduced_filters": self.reduced_filters,
            "kernel_initializer": self.kernel_initializer,
            "kernel_regularizer": tf_keras.regularizers.serialize(self.kernel_regularizer),
            "data_format": self.data_format,
        }


@tf_keras.utils.register_keras_serializable(package="evonorm_tf")
class NormActEfficientNet(tf_keras.Model):
    """EfficientNet with a pluggable norm-act layer.

    The model maps an image batch to a dict of feature maps keyed by
    `str(log2(stride))`: `"2"`…`"5"` (stage outputs, listed in `output_specs`
    as in Model Garden's EfficientNet) and `"6"`, the head convolution's
    norm-act output at stride 32, which a classifier pools.

    Args:
      model_id: `"b0"` … `"b7"`.
      input_specs: a `tf_keras.layers.InputSpec` in `data_format` layout.
      norm_act: a norm-act name or a `NormActFactory`. Default `"bn_silu"`.
      norm_act_options: dict of norm-act options (`momentum`, `epsilon`,
        `groups`, `synchronized`); each layer receives those it accepts.
      se_ratio: squeeze channels = `max(1, int(block input filters · se_ratio))`.
        Default 0.25; 0 disables squeeze-and-excitation.
      stochastic_depth_drop_rate: drop rate of the last block's residual
        branch; block i of n uses `rate · i / n` (authors' code). Default 0.2.
      width_scale, depth_scale: override the model's scaling (e.g. a narrow
        B0 for tests); default those of `EFFICIENTNET_SCALING[model_id]`.
      kernel_initializer, kernel_regularizer: of every convolution kernel.
      data_format: default `tf_keras.backend.image_data_format()`.

    Reference: arXiv:1905.11946 (EfficientNet), arXiv:2004.02967 (EvoNorm).
    """

    def __init__(
        self,
        model_id="b0",
        input_specs=None,
        norm_act="bn_silu",
        norm_act_options=None,
        se_ratio=0.25,
        stochastic_depth_drop_rate=0.2,
        width_scale=None,
        depth_scale=None,
        kernel_initializer="VarianceScaling",
        kernel_regularizer=None,
        data_format=None,
        **kwargs,
    ):
        if model_id not in EFFICIENTNET_SCALING:
            raise ValueError(
                f"model_id must be one of {sorted(EFFICIENTNET_SCALING)}, received model_id={model_id!r}"
            )
        if not 0.0 <= se_ratio <= 1.0:
            raise ValueError(f"se_ratio must be in [0, 1], received se_ratio={se_ratio!r}")
        if not 0.0 <= stochastic_depth_drop_rate < 1.0:
            raise ValueError(
                "stochastic_depth_drop_rate must be in [0, 1), received "
                f"stochastic_depth_drop_rate={stochastic_depth_drop_rate!r}"
            )
        self._model_id = model_id
        scaling = EFFICIENTNET_SCALING[model_id]
        self._width_scale = float(width_scale if width_scale is not None else scaling.width)
        self._depth_scale = float(depth_scale if depth_scale is not None else scaling.depth)
        self._se_ratio = float(se_ratio)
        self._stochastic_depth_drop_rate = float(stochastic_depth_drop_rate)
        self._data_format = arguments.check_data_format(
            data_format or tf_keras.backend.image_data_format()
        )
        self._norm_act = norm_act_lib.as_factory(
            norm_act, self._data_format, **(norm_act_options or {})
        )
        self._kernel_initializer = kernel_initializer
        self._kernel_regularizer = kernel_regularizer
        self._input_specs = classifier.as_input_spec(input_specs)

        inputs = tf_keras.Input(shape=self._input_specs.shape[1:])
        stem_filters = round_filters(STEM_FILTERS, self._width_scale)
        x = self._conv(inputs, stem_filters, 3, 2, name="stem_conv")
        x = self._norm_act(stem_filters, name="stem_norm_act")(x)

        stages = [
            spec._replace(
                repeats=round_repeats(spec.repeats, self._depth_scale),
                in_filters=round_filters(spec.in_filters, self._width_scale),
                out_filters=round_filters(spec.out_filters, self._width_scale),
            )
            for spec in EFFICIENTNET_B0_BLOCKS
        ]
        total_blocks = sum(spec.repeats for spec in stages)
        block_index = 0
        endpoints = {}
        level = 1
        for stage_index, spec in enumerate(stages):
            level += 1 if spec.strides > 1 else 0
            for repeat in range(spec.repeats):
                x = self._mbconv(
                    x,
                    in_filters=spec.in_filters if repeat == 0 else spec.out_filters,
                    out_filters=spec.out_filters,
                    expand_ratio=spec.expand_ratio,
                    kernel_size=spec.kernel_size,
                    strides=spec.strides if repeat == 0 else 1,
                    drop_rate=self._stochastic_depth_drop_rate * block_index / total_blocks,
                    name=f"stage{stage_index + 1}_block{repeat + 1}",
                )
                block_index += 1
            if spec.is_output:
                endpoints[str(level)] = x
        self._output_specs = {key: value.get_shape() for key, value in endpoints.items()}

        head_filters = round_filters(HEAD_FILTERS, self._width_scale)
        x = self._conv(x, head_filters, 1, 1, name="head_conv")
        endpoints[str(level + 1)] = self._norm_act(head_filters, name="head_norm_act")(x)
        super().__init__(inputs=inputs, outputs=endpoints, **kwargs)

    def _conv(self, x, filters, kernel_size, strides, name):
        return tf_keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding="same",
            use_bias=False,
            data_format=self._data_format,
            kernel_initializer=tf_utils.clone_initializer(self._kernel_initializer),
            kernel_regularizer=self._kernel_regularizer,
            name=name,
        )(x)

    def _mbconv(self, x, in_filters, out_filters, expand_ratio, kernel_size, strides, drop_rate, name):
        inputs = x
        expanded = in_filters * expand_ratio
        if expand_ratio != 1:
            x = self._conv(x, expanded, 1, 1, name=f"{name}_expand_conv")
            x = self._norm_act(expanded, name=f"{name}_expand_norm_act")(x)
        x = tf_keras.layers.DepthwiseConv2D(
            kernel_size,
            strides=strides,
            padding="same",
            use_bias=False,
            data_format=self._data_format,
            depthwise_initializer=tf_utils.clone_initializer(self._kernel_initializer),
            depthwise_regularizer=self._kernel_regularizer,
            name=f"{name}_depthwise_conv",
        )(x)
        x = self._norm_act(expanded, name=f"{name}_depthwise_norm_act")(x)
        if self._se_ratio > 0:
            x = SqueezeExcitation(
                max(1, int(in_filters * self._se_ratio)),
                kernel_initializer=self._kernel_initializer,
                kernel_regularizer=self._kernel_regularizer,
                data_format=self._data_format,
                name=f"{name}_se",
            )(x)
        x = self._conv(x, out_filters, 1, 1, name=f"{name}_project_conv")
        x = self._norm_act(out_filters, nonlinearity=False, name=f"{name}_project_norm")(x)
        if strides == 1 and in_filters == out_filters:
            if drop_rate > 0:
                x = nn_layers.StochasticDepth(drop_rate, name=f"{name}_drop")(x)
            x = tf_keras.layers.Add(name=f"{name}_add")([x, inputs])
        return x

    @property
    def output_specs(self):
        """A dict `{level: TensorShape}` of the stage endpoints "2"…"5"."""
        return self._output_specs

    @property
    def norm_act_factory(self):
        return self._norm_act

    def get_config(self):
        return {
            "model_id": self._model_id,
            # The input shape (with batch dimension), so from_config rebuilds the same model.
            "input_specs": list(self._input_specs.shape),
            "norm_act": self._norm_act.name,
            "norm_act_options": dict(self._norm_act.options),
            "se_ratio": self._se_ratio,
            "stochastic_depth_drop_rate": self._stochastic_depth_drop_rate,
            "width_scale": self._width_scale,
            "depth_scale": self._depth_scale,
            "kernel_initializer": self._kernel_initializer,
            "kernel_regularizer": self._kernel_regularizer,
            "data_format": self._data_format,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


def build_efficientnet(model_id="b0", norm_act="bn_silu", input_shape=None, input_specs=None,
                       num_classes=None, dropout_rate=None, **kwargs):
    """A `NormActEfficientNet` backbone, or a classifier when `num_classes` is given.

    `dropout_rate` defaults to the model's (`EFFICIENTNET_SCALING`); other
    arguments as `NormActEfficientNet`.
    """
    if num_classes is not None and dropout_rate is None and model_id in EFFICIENTNET_SCALING:
        dropout_rate = EFFICIENTNET_SCALING[model_id].dropout_rate  # (an unknown model_id: the backbone's error)
    return classifier.backbone_or_classifier(
        NormActEfficientNet, model_id, input_shape, input_specs, num_classes, dropout_rate or 0.0,
        norm_act=norm_act, **kwargs)


# Model Garden's builder of `backbone.type: evonorm_efficientnet`; the config fields are the class's arguments.
build_efficientnet_backbone = registration.register_backbone("evonorm_efficientnet", NormActEfficientNet)

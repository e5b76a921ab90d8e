"""A Feature Pyramid Network whose normalization layers are chosen by name.

The same network as Model Garden's FPN (`official.vision.modeling.decoders.FPN`,
arXiv:1612.03144): 1x1 lateral convolutions, a nearest-neighbour top-down path
with sum (or concat) fusion, 3x3 post-hoc convolutions, stride-2 convolutions
for the levels above the backbone (an activation between P6 and P7), and one
normalization per output level. Model Garden's normalization there is a plain
BatchNormalization with no activation after it; here each one is a layer of the
norm-act factory built with `nonlinearity=False`, the rule of the EvoNorm
authors' code for BN positions without an activation: plain BN for `bn_relu`,
group normalization without its activation for `gn_*`, and for the EvoNorms
only the affine map `x·γ + β`. Layer names and output levels are
Model Garden's, so the two FPNs give outputs of equal shapes; with `bn_relu`
and equal BN options (and `use_separable_conv` either way) the two are the
same network, weight for weight.

Model Garden's model-level `task.model.norm_activation` reaches every norm
layer as it reaches Model Garden's FPN (`use_sync_bn` → `synchronized`,
`norm_momentum` → `momentum`, `norm_epsilon` → `epsilon`) unless the
decoder's own `norm_activation` block sets that field.
"""

import tf_keras
from official.modeling import tf_utils
from official.vision.modeling.decoders import factory as decoder_factory
from official.vision.ops import spatial_transform_ops

from evonorm_tf import arguments
from evonorm_tf.modeling import norm_act as norm_act_lib

FUSION_TYPES = ("sum", "concat")


@tf_keras.utils.register_keras_serializable(package="evonorm_tf")
class NormActFPN(tf_keras.Model):
    """FPN with one named norm-act (no nonlinearity) per output level.

    Args:
      input_specs: `{level: TensorShape}` of the backbone outputs (string levels).
      min_level: lowest output level. Default 3.
      max_level: highest output level; levels above the backbone's are made
        by stride-2 convolutions. Default 7.
      num_filters: channels of every output level. Default 256.
      fusion_type: `"sum"` (default) or `"concat"` for the top-down fusion.
      use_separable_conv: use `SeparableConv2D` (depthwise then pointwise)
        for every convolution, as Model Garden's `use_separable_conv`. The
        arguments of the convolutions are passed as Model Garden passes them,
        so `kernel_initializer` and `kernel_regularizer` reach no separable
        kernel there either. Default False.
      norm_act: a norm-act name (`bn_relu`, `evonorm_b0`, `evonorm_s0`, ...) or
        a `NormActFactory`. Default `"bn_relu"` (Model Garden's BN).
      norm_act_options: dict of norm-act options (`momentum`, `epsilon`,
        `groups`, `synchronized`); each layer receives those it accepts.
      activation: the activation between the coarser levels (P6 → P7), as
        Model Garden's FPN. Default "relu".
      kernel_initializer, kernel_regularizer, bias_regularizer: of the convolutions.

    Call: a dict `{level: tensor}` of backbone features; returns `{level: tensor}`
    for `min_level…max_level`. `training` selects batch or moving statistics in
    the B-series and BN layers.

    Reference: arXiv:1612.03144 (FPN), arXiv:2004.02967 (EvoNorm).
    """

    def __init__(
        self,
        input_specs,
        min_level=3,
        max_level=7,
        num_filters=256,
        fusion_type="sum",
        use_separable_conv=False,
        norm_act="bn_relu",
        norm_act_options=None,
        activation="relu",
        kernel_initializer="VarianceScaling",
        kernel_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        if not isinstance(input_specs, dict) or not input_specs:
            raise ValueError(
                f"input_specs must be a non-empty dict of levels, received {input_specs!r}"
            )
        if fusion_type not in FUSION_TYPES:
            raise ValueError(
                f"fusion_type must be one of {FUSION_TYPES}, received fusion_type={fusion_type!r}"
            )
        if isinstance(num_filters, bool) or not isinstance(num_filters, int) or num_filters < 1:
            raise ValueError(
                f"num_filters must be a positive integer, received num_filters={num_filters!r}"
            )
        use_separable_conv = arguments.check_bool("use_separable_conv", use_separable_conv)
        backbone_levels = sorted(int(level) for level in input_specs)
        if backbone_levels[0] > min_level or min_level > max_level:
            raise ValueError(
                f"need backbone min level {backbone_levels[0]} <= min_level={min_level} "
                f"<= max_level={max_level}"
            )
        data_format = arguments.check_data_format(tf_keras.backend.image_data_format())
        if isinstance(norm_act, norm_act_lib.NormActFactory):
            make_norm_act = norm_act_lib.as_factory(norm_act, norm_act.data_format)
        else:
            make_norm_act = norm_act_lib.as_factory(norm_act, data_format, **(norm_act_options or {}))
        self._config_dict = {
            "input_specs": input_specs,
            "min_level": min_level,
            "max_level": max_level,
            "num_filters": num_filters,
            "fusion_type": fusion_type,
            "use_separable_conv": use_separable_conv,
            "norm_act": make_norm_act.name,
            "norm_act_options": dict(make_norm_act.options),
            "activation": activation,
            "kernel_initializer": kernel_initializer,
            "kernel_regularizer": kernel_regularizer,
            "bias_regularizer": bias_regularizer,
        }
        channel_axis = -1 if data_format == "channels_last" else 1

        conv_class = tf_keras.layers.SeparableConv2D if use_separable_conv else tf_keras.layers.Conv2D

        def conv(filters, kernel_size, strides, name):
            return conv_class(
                filters,
                kernel_size,
                strides=strides,
                padding="same",
                data_format=data_format,
                kernel_initializer=tf_utils.clone_initializer(kernel_initializer),
                kernel_regularizer=kernel_regularizer,
                bias_regularizer=bias_regularizer,
                name=name,
            )

        inputs = {level: tf_keras.Input(shape=spec[1:]) for level, spec in input_specs.items()}
        backbone_max_level = min(backbone_levels[-1], max_level)
        lateral = {
            level: conv(num_filters, 1, 1, f"lateral_{level}")(inputs[str(level)])
            for level in range(min_level, backbone_max_level + 1)
        }
        feats = {backbone_max_level: lateral[backbone_max_level]}
        for level in range(backbone_max_level - 1, min_level - 1, -1):
            upsampled = spatial_transform_ops.nearest_upsampling(
                feats[level + 1], 2, use_keras_layer=True
            )
            if fusion_type == "sum":
                feats[level] = tf_keras.layers.Add()([upsampled, lateral[level]])
            else:
                concatenate = tf_keras.layers.Concatenate(axis=channel_axis)
                feats[level] = concatenate([upsampled, lateral[level]])
        for level in range(min_level, backbone_max_level + 1):
            feats[level] = conv(num_filters, 3, 1, f"post_hoc_{level}")(feats[level])
        activation_layer = tf_utils.get_activation(activation, use_keras_layer=True)
        for level in range(backbone_max_level + 1, max_level + 1):
            coarser_input = feats[level - 1]
            if level > backbone_max_level + 1:
                coarser_input = activation_layer(coarser_input)
            feats[level] = conv(num_filters, 3, 2, f"coarser_{level}")(coarser_input)
        # Where Model Garden's FPN has BN without activation: norm-acts without nonlinearity.
        outputs = {}
        for level in range(min_level, max_level + 1):
            norm = make_norm_act(num_filters, nonlinearity=False, name=f"norm_{level}")
            outputs[str(level)] = norm(feats[level])
        self._output_specs = {level: tensor.get_shape() for level, tensor in outputs.items()}
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

    @property
    def output_specs(self):
        """`{level: TensorShape}` of the outputs."""
        return self._output_specs

    def get_config(self):
        return dict(self._config_dict)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


@decoder_factory.register_decoder_builder("evonorm_fpn")
def build_fpn_decoder(input_specs, model_config, l2_regularizer=None):
    """Model Garden builder for `decoder.type: evonorm_fpn`.

    Reads `model_config.decoder.evonorm_fpn` (`evonorm_tf.configs.maskrcnn.NormActFPN`)
    with its own `norm_activation`, `model_config.min_level` / `max_level`, and
    Model Garden's model-level `model_config.norm_activation` for the norm
    options the decoder's block leaves unset.
    """
    if model_config.decoder.type != "evonorm_fpn":
        raise ValueError(f"expected decoder type 'evonorm_fpn', received {model_config.decoder.type!r}")
    config = model_config.decoder.get()
    data_format = tf_keras.backend.image_data_format()
    return NormActFPN(
        input_specs=input_specs,
        min_level=model_config.min_level,
        max_level=model_config.max_level,
        num_filters=config.num_filters,
        fusion_type=config.fusion_type,
        use_separable_conv=config.use_separable_conv,
        norm_act=norm_act_lib.norm_act_factory_from_config(
            config.norm_activation, data_format, getattr(model_config, "norm_activation", None)
        ),
        activation=config.activation,
        kernel_regularizer=l2_regularizer,
    )

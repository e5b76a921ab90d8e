"""Normalizer-free ResNets (NF-ResNets): residual networks without activation normalization.

Each residual block computes

    h_{i+1} = h_i + α · g · d_i · f_i(act(h_i) / β_i)

where f_i is the residual branch (Scaled WS convolutions with the activation
between them), β_i the expected standard deviation of h_i, tracked
analytically, α a small fixed scale (0.2), g a learnable scalar initialised
to zero (SkipInit) and d_i stochastic depth (training only; drop rate
`stochastic_depth_drop_rate · i / num_blocks` for the i-th block, counted from 0).
The activation is applied before the division by β_i, as in the reference
code (deepmind-research nfnets, timm's NormFreeBlock): `act(h)·(1/β)`; for
ReLU this equals `act(h/β)`, for SiLU it does not. With unit-variance
branches Var(h_{i+1}) = Var(h_i) + α². A transition block (the first of a
stage: stride or width change) takes its shortcut through a Scaled WS 1×1
convolution of `act(h_i)/β_i`, and the expected variance is reset to
1 + α² after it. Because every convolution's kernel has zero mean per output
channel, the channel means of the residual stream stay near zero: there is no
mean shift to grow with depth, the failure of unnormalized ReLU ResNets.

The activation's gain γ_act (`ACTIVATION_GAINS`, exact for every activation)
is folded into the convolution after it (`ScaledWSConv2D`); the network ends
with the γ-scaled activation `γ_act · act(h)` as the reference's head does.
Convolutions have biases (there is no BN offset). A classifier built by
`build_nf_resnet(..., num_classes=...)` initialises its dense layer as the
reference NF-ResNet does, weights N(0, 0.01) and zero bias (`head_initializer
="zeros"` gives the zero-initialised classifier of NFNets / timm's
`zero_init_fc`).

The graph is written once (`nf_resnet_endpoints`) for both front-ends: this
module's `NFResNet` (tf_keras, a Model Garden backbone) and
`evonorm_tf.neighbours.build_nf_resnet` (Keras 3).

Reference: Brock, De, Smith. Characterizing signal propagation to close the
performance gap in unnormalized ResNets. arXiv:2101.08692.
"""

import collections
import math

import tf_keras

from evonorm_tf import arguments
from evonorm_tf.modeling import classifier
from evonorm_tf.modeling.backbones.resnet import ResNetSpec
from evonorm_tf.modeling.layers.residual import ScaledResidualAdd
from evonorm_tf.modeling.layers.scaled_ws_conv import ScaledWSConv2D, activation_gain_constant
from evonorm_tf.modeling.backbones import registration

# Same layout as `RESNET_SPECS`: stem form, block kind, (filters, repeats) per stage.
NF_RESNET_SPECS = {
    # ImageNet NF-ResNets (arXiv:2101.08692 §5 evaluates 26, 50, 101).
    26: ResNetSpec("imagenet", "bottleneck", ((64, 2), (128, 2), (256, 2), (512, 2))),
    50: ResNetSpec("imagenet", "bottleneck", ((64, 3), (128, 4), (256, 6), (512, 3))),
    101: ResNetSpec("imagenet", "bottleneck", ((64, 3), (128, 4), (256, 23), (512, 3))),
    # 3-stage CIFAR-style forms for small inputs (depth 6n + 2).
    20: ResNetSpec("cifar", "basic", ((16, 3), (32, 3), (64, 3))),
    32: ResNetSpec("cifar", "basic", ((16, 5), (32, 5), (64, 5))),
    56: ResNetSpec("cifar", "basic", ((16, 9), (32, 9), (64, 9))),
}

NF_ACTIVATIONS = ("relu", "silu")
_BOTTLENECK_EXPANSION = 4


def expected_block_variances(model_id, alpha=0.2):
    """Var(h_i) at the input of each block, in order: the analytic β_i² schedule.

    Starts at 1 (the stem's output), grows by α² per block and is reset to
    1 + α² after each stage's first block.
    """
    spec = NF_RESNET_SPECS[_check_model_id(model_id)]
    variances, variance = [], 1.0
    for _, repeats in spec.stages:
        for index in range(repeats):
            variances.append(variance)
            if index == 0:
                variance = 1.0
            variance += alpha**2
    return variances


def _check_model_id(model_id):
    if model_id not in NF_RESNET_SPECS:
        raise ValueError(
            f"model_id must be one of {sorted(NF_RESNET_SPECS)}, received model_id={model_id!r}"
        )
    return model_id


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive number, received {name}={value!r}")
    if not value > 0:
        raise ValueError(f"{name} must be > 0, received {name}={value!r}")
    return float(value)


NFLayers = collections.namedtuple("NFLayers", ["keras", "conv", "merge"])
NFLayers.__doc__ = """A front-end for `nf_resnet_endpoints`: the Keras module and its Scaled WS conv and merge classes."""

TF_KERAS_LAYERS = NFLayers(tf_keras, ScaledWSConv2D, ScaledResidualAdd)

HEAD_INITIALIZERS = ("normal", "zeros")


def check_options(activation, alpha, skip_gain_init, stochastic_depth_drop_rate, width_multiplier):
    """Validates the NF-ResNet options shared by both front-ends; returns them as floats."""
    if activation not in NF_ACTIVATIONS:
        raise ValueError(f"activation must be one of {NF_ACTIVATIONS}, received activation={activation!r}")
    if isinstance(skip_gain_init, bool) or not isinstance(skip_gain_init, (int, float)):
        raise TypeError(f"skip_gain_init must be a number, received skip_gain_init={skip_gain_init!r}")
    if isinstance(stochastic_depth_drop_rate, bool) or not isinstance(stochastic_depth_drop_rate, (int, float)) \
            or not 0.0 <= stochastic_depth_drop_rate < 1.0:
        raise ValueError(
            "stochastic_depth_drop_rate must be a number in [0, 1), "
            f"received stochastic_depth_drop_rate={stochastic_depth_drop_rate!r}")
    return (_check_positive("alpha", alpha), float(skip_gain_init), float(stochastic_depth_drop_rate),
            _check_positive("width_multiplier", width_multiplier))


def classifier_initializer(keras_module, name):
    """The classifier's kernel initializer: `"normal"` N(0, 0.01) (reference NF-ResNet), `"zeros"`, or any."""
    if name == "normal":
        return keras_module.initializers.RandomNormal(mean=0.0, stddev=0.01)
    if name == "zeros":
        return keras_module.initializers.Zeros()
    if isinstance(name, str):
        raise ValueError(f"head_initializer must be one of {HEAD_INITIALIZERS} or an initializer, "
                         f"received head_initializer={name!r}")
    return name


def nf_resnet_endpoints(inputs, layers, model_id, activation="relu", alpha=0.2, skip_gain_init=0.0,
                        stochastic_depth_drop_rate=0.1, width_multiplier=1.0, scaled_final_activation=True,
                        kernel_initializer="he_normal", kernel_regularizer=None, data_format="channels_last"):
    """The NF-ResNet graph on `inputs`: a dict `{level: tensor}` (see the module docstring).

    Args:
      inputs: a symbolic input of `layers.keras`.
      layers: an `NFLayers` front-end (`TF_KERAS_LAYERS`, or the Keras 3 one).
      other arguments: as `NFResNet`.
    """
    spec = NF_RESNET_SPECS[_check_model_id(model_id)]
    keras = layers.keras

    def scaled(filters):
        return max(1, int(filters * width_multiplier))

    def conv(x, filters, kernel_size, strides, gain, name):
        padding = "same"
        if strides > 1 and kernel_size > 1:
            total = kernel_size - 1
            pad = ((total // 2, total - total // 2),) * 2
            x = keras.layers.ZeroPadding2D(pad, data_format=data_format, name=f"{name}_pad")(x)
            padding = "valid"
        initializer = keras.initializers.get(kernel_initializer)
        initializer = keras.initializers.deserialize(keras.initializers.serialize(initializer))
        return layers.conv(
            filters, kernel_size, strides=strides, padding=padding, activation_gain=gain,
            data_format=data_format, kernel_initializer=initializer,
            kernel_regularizer=kernel_regularizer, name=name,
        )(x)

    def block(x, kind, filters, strides, use_projection, beta, drop_rate, name):
        # act(h)/β, as the reference code (the order matters for SiLU).
        activated = keras.layers.Activation(activation, name=f"{name}_preact")(x)
        activated = keras.layers.Rescaling(1.0 / beta, name=f"{name}_inv_beta")(activated)
        out_filters = filters if kind == "basic" else filters * _BOTTLENECK_EXPANSION
        shortcut = x
        if use_projection:
            shortcut = conv(activated, out_filters, 1, strides, activation, name=f"{name}_shortcut_conv")
        if kind == "basic":
            y = conv(activated, filters, 3, strides, activation, name=f"{name}_conv1")
            y = keras.layers.Activation(activation, name=f"{name}_act1")(y)
            y = conv(y, filters, 3, 1, activation, name=f"{name}_conv2")
        else:
            y = conv(activated, filters, 1, 1, activation, name=f"{name}_conv1")
            y = keras.layers.Activation(activation, name=f"{name}_act1")(y)
            y = conv(y, filters, 3, strides, activation, name=f"{name}_conv2")
            y = keras.layers.Activation(activation, name=f"{name}_act2")(y)
            y = conv(y, out_filters, 1, 1, activation, name=f"{name}_conv3")
        return layers.merge(alpha, skip_gain_init, drop_rate=drop_rate, name=f"{name}_add")([y, shortcut])

    # The stem, on the linear input (gain 1).
    if spec.stem == "imagenet":
        x = conv(inputs, scaled(64), 7, 2, "linear", name="stem_conv")
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", data_format=data_format, name="stem_pool")(x)
        level = 2
    else:
        x, level = conv(inputs, scaled(spec.stages[0][0]), 3, 1, "linear", name="stem_conv"), 0
    num_blocks = sum(repeats for _, repeats in spec.stages)
    endpoints, expected_variance, block_index = {}, 1.0, 0
    for stage_index, (filters, repeats) in enumerate(spec.stages):
        level += 0 if stage_index == 0 else 1
        for index in range(repeats):
            x = block(x, spec.block, scaled(filters), strides=1 if stage_index == 0 or index > 0 else 2,
                      use_projection=index == 0, beta=math.sqrt(expected_variance),
                      drop_rate=stochastic_depth_drop_rate * block_index / num_blocks,
                      name=f"stage{stage_index + 1}_block{index + 1}")
            block_index += 1
            if index == 0:
                expected_variance = 1.0
            expected_variance += alpha**2
        endpoints[str(level)] = x
    x = keras.layers.Activation(activation, name="final_activation")(x)
    if scaled_final_activation:
        x = keras.layers.Rescaling(activation_gain_constant(activation), name="final_activation_gain")(x)
    endpoints[str(level)] = x
    return endpoints


@tf_keras.utils.register_keras_serializable(package="evonorm_tf")
class NFResNet(tf_keras.Model):
    """Normalizer-free pre-activation ResNet (see the module docstring).

    Maps images to a dict of feature maps `{level: tensor}` keyed by
    `str(log2(stride))`, like `NormActResNet`; `output_specs` gives their
    shapes. The last level is taken after the final (γ-scaled) activation.

    Args:
      model_id: a depth of `NF_RESNET_SPECS`: 26, 50, 101 (ImageNet form) or
        20, 32, 56 (3-stage CIFAR form for small inputs).
      input_specs: a `tf_keras.layers.InputSpec`; default `[None, None, None, 3]`.
        Inputs should be standardized (zero mean, unit variance).
      activation: `"relu"` (default) or `"silu"`; its gain is folded into
        the convolutions that follow it.
      alpha: residual scale α. Default 0.2 (arXiv:2101.08692).
      skip_gain_init: initial SkipInit gain g. Default 0.0.
      stochastic_depth_drop_rate: the largest stochastic-depth drop rate; block i
        (from 0) drops with `rate · i / num_blocks`. Default 0.1, the
        reference NF-ResNet's.
      width_multiplier: scales the stem and stage filters. Default 1.0.
      scaled_final_activation: end with `γ_act · act(h)` (default True, as
        the reference) or the plain `act(h)`.
      kernel_initializer, kernel_regularizer: of the convolution kernels.
      data_format: `"channels_last"` or `"channels_first"`; default
        `tf_keras.backend.image_data_format()`.

    Reference: arXiv:2101.08692.
    """

    def __init__(
        self,
        model_id,
        input_specs=None,
        activation="relu",
        alpha=0.2,
        skip_gain_init=0.0,
        stochastic_depth_drop_rate=0.1,
        width_multiplier=1.0,
        scaled_final_activation=True,
        kernel_initializer="he_normal",
        kernel_regularizer=None,
        data_format=None,
        **kwargs,
    ):
        self._model_id = _check_model_id(model_id)
        self._activation = activation
        self._alpha, self._skip_gain_init, self._stochastic_depth_drop_rate, self._width_multiplier = check_options(
            activation, alpha, skip_gain_init, stochastic_depth_drop_rate, width_multiplier)
        self._scaled_final_activation = bool(scaled_final_activation)
        self._data_format = arguments.check_data_format(
            data_format or tf_keras.backend.image_data_format()
        )
        self._kernel_initializer = kernel_initializer
        self._kernel_regularizer = kernel_regularizer
        self._input_specs = classifier.as_input_spec(input_specs)

        inputs = tf_keras.Input(shape=self._input_specs.shape[1:])
        endpoints = nf_resnet_endpoints(
            inputs, TF_KERAS_LAYERS, self._model_id, activation=activation, alpha=self._alpha,
            skip_gain_init=self._skip_gain_init, stochastic_depth_drop_rate=self._stochastic_depth_drop_rate,
            width_multiplier=self._width_multiplier, scaled_final_activation=self._scaled_final_activation,
            kernel_initializer=kernel_initializer, kernel_regularizer=kernel_regularizer,
            data_format=self._data_format,
        )
        self._output_specs = {key: value.get_shape() for key, value in endpoints.items()}
        super().__init__(inputs=inputs, outputs=endpoints, **kwargs)

    # -- Model Garden backbone interface -----------------------------------------

    @property
    def output_specs(self):
        """A dict `{level: TensorShape}` of the outputs."""
        return self._output_specs

    def get_config(self):
        return {
            "model_id": self._model_id,
            # The input shape (with batch dimension), so from_config rebuilds the same model.
            "input_specs": list(self._input_specs.shape),
            "activation": self._activation,
            "alpha": self._alpha,
            "skip_gain_init": self._skip_gain_init,
            "stochastic_depth_drop_rate": self._stochastic_depth_drop_rate,
            "width_multiplier": self._width_multiplier,
            "scaled_final_activation": self._scaled_final_activation,
            "kernel_initializer": self._kernel_initializer,
            "kernel_regularizer": self._kernel_regularizer,
            "data_format": self._data_format,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


def build_nf_resnet(model_id, input_shape=None, input_specs=None, num_classes=None, head_initializer="normal",
                    **kwargs):
    """An `NFResNet` backbone, or a classifier when `num_classes` is given.

        model = build_nf_resnet(20, input_shape=(32, 32, 1), num_classes=10)

    Args:
      model_id: a depth of `NF_RESNET_SPECS` (20/32/56: CIFAR-style, small inputs).
      input_shape: the shape of one example, e.g. `(32, 32, 1)`; or `input_specs`.
      num_classes: if set, returns a `tf_keras.Model` mapping images to logits.
      head_initializer: of the classifier's kernel (its bias is zero):
        `"normal"` N(0, 0.01) (default, the reference NF-ResNet's), `"zeros"`
        (NFNets' zero-initialised classifier) or an initializer.
      **kwargs: as `NFResNet` (activation, alpha, skip_gain_init,
        stochastic_depth_drop_rate, width_multiplier, scaled_final_activation,
        kernel_regularizer, data_format, ...).
    """
    return classifier.backbone_or_classifier(
        NFResNet, model_id, input_shape, input_specs, num_classes,
        head_initializer=classifier_initializer(tf_keras, head_initializer), **kwargs)


# Model Garden's builder of `backbone.type: nf_resnet`; the config fields are the class's arguments.
build_nf_resnet_backbone = registration.register_backbone("nf_resnet", NFResNet)

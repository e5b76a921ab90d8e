"""Normalizer-free ResNets (NF-ResNets): residual networks without activation normalization.

Each residual block computes

    h_{i+1} = h_i + α · g · f_i(h_i / β_i)

where f_i is the residual branch (activation, Scaled WS convolutions), β_i
the expected standard deviation of h_i, tracked analytically, α a small
fixed scale (0.2) and g a learnable scalar initialised to zero (SkipInit).
With unit-variance branches Var(h_{i+1}) = Var(h_i) + α². A transition block
(the first of a stage: stride or width change) takes its shortcut through a
Scaled WS 1×1 convolution of `act(h_i / β_i)`, which has unit variance, so
the expected variance is reset to 1 + α² after it. Because every
convolution's kernel has zero mean per output channel, the channel means of
the residual stream stay near zero: there is no mean shift to grow with
depth, the failure of unnormalized ReLU ResNets.

The block is pre-activation: `act(h/β)` feeds the branch and the
projection shortcut. Convolutions have biases (there is no BN offset) and
fold the gain of the activation before them (`ScaledWSConv2D`).

Reference: Brock, De, Smith. Characterizing signal propagation to close the
performance gap in unnormalized ResNets. arXiv:2101.08692.
"""

import math

import tf_keras

from official.modeling import tf_utils

from evonorm_tf import arguments
from evonorm_tf.modeling import classifier
from evonorm_tf.modeling.backbones.resnet import ResNetSpec
from evonorm_tf.modeling.layers.residual import ScaledResidualAdd
from evonorm_tf.modeling.layers.scaled_ws_conv import ScaledWSConv2D
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


@tf_keras.utils.register_keras_serializable(package="evonorm_tf")
class NFResNet(tf_keras.Model):
    """Normalizer-free pre-activation ResNet (see the module docstring).

    Maps images to a dict of feature maps `{level: tensor}` keyed by
    `str(log2(stride))`, like `NormActResNet`; `output_specs` gives their
    shapes. The last level is taken after a final activation.

    Args:
      model_id: a depth of `NF_RESNET_SPECS`: 26, 50, 101 (ImageNet form) or
        20, 32, 56 (3-stage CIFAR form for small inputs).
      input_specs: a `tf_keras.layers.InputSpec`; default `[None, None, None, 3]`.
        Inputs should be standardized (zero mean, unit variance).
      activation: `"relu"` (default) or `"silu"`; its gain is folded into
        the convolutions that follow it.
      alpha: residual scale α. Default 0.2 (arXiv:2101.08692).
      skip_gain_init: initial SkipInit gain g. Default 0.0.
      width_multiplier: scales the stem and stage filters. Default 1.0.
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
        width_multiplier=1.0,
        kernel_initializer="he_normal",
        kernel_regularizer=None,
        data_format=None,
        **kwargs,
    ):
        self._model_id = _check_model_id(model_id)
        if activation not in NF_ACTIVATIONS:
            raise ValueError(f"activation must be one of {NF_ACTIVATIONS}, received activation={activation!r}")
        self._activation = activation
        self._alpha = _check_positive("alpha", alpha)
        if isinstance(skip_gain_init, bool) or not isinstance(skip_gain_init, (int, float)):
            raise TypeError(f"skip_gain_init must be a number, received skip_gain_init={skip_gain_init!r}")
        self._skip_gain_init = float(skip_gain_init)
        self._width_multiplier = _check_positive("width_multiplier", width_multiplier)
        self._data_format = arguments.check_data_format(
            data_format or tf_keras.backend.image_data_format()
        )
        self._kernel_initializer = kernel_initializer
        self._kernel_regularizer = kernel_regularizer
        self._input_specs = classifier.as_input_spec(input_specs)
        self._channel_axis = -1 if self._data_format == "channels_last" else 1
        spec = NF_RESNET_SPECS[self._model_id]

        inputs = tf_keras.Input(shape=self._input_specs.shape[1:])
        x, level = self._stem(inputs, spec)
        endpoints = {}
        expected_variance = 1.0
        for stage_index, (filters, repeats) in enumerate(spec.stages):
            level += 0 if stage_index == 0 else 1
            for index in range(repeats):
                x = self._block(
                    x,
                    spec.block,
                    self._scaled(filters),
                    strides=1 if stage_index == 0 or index > 0 else 2,
                    use_projection=index == 0,
                    beta=math.sqrt(expected_variance),
                    name=f"stage{stage_index + 1}_block{index + 1}",
                )
                if index == 0:
                    expected_variance = 1.0
                expected_variance += self._alpha**2
            endpoints[str(level)] = x
        x = tf_keras.layers.Activation(self._activation, name="final_activation")(x)
        endpoints[str(level)] = x
        self._output_specs = {key: value.get_shape() for key, value in endpoints.items()}
        super().__init__(inputs=inputs, outputs=endpoints, **kwargs)

    # -- building blocks ------------------------------------------------------------

    def _scaled(self, filters):
        return max(1, int(filters * self._width_multiplier))

    def _conv(self, x, filters, kernel_size, strides, gain, name):
        padding = "same"
        if strides > 1 and kernel_size > 1:
            total = kernel_size - 1
            pad = ((total // 2, total - total // 2),) * 2
            x = tf_keras.layers.ZeroPadding2D(pad, data_format=self._data_format, name=f"{name}_pad")(x)
            padding = "valid"
        return ScaledWSConv2D(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            activation_gain=gain,
            data_format=self._data_format,
            kernel_initializer=tf_utils.clone_initializer(self._kernel_initializer),
            kernel_regularizer=self._kernel_regularizer,
            name=name,
        )(x)

    def _stem(self, inputs, spec):
        """The stem (on the linear input: gain 1); returns its output and level."""
        if spec.stem == "imagenet":
            x = self._conv(inputs, self._scaled(64), 7, 2, "linear", name="stem_conv")
            x = tf_keras.layers.MaxPool2D(
                3, strides=2, padding="same", data_format=self._data_format, name="stem_pool"
            )(x)
            return x, 2
        return self._conv(inputs, self._scaled(spec.stages[0][0]), 3, 1, "linear", name="stem_conv"), 0

    def _block(self, x, block, filters, strides, use_projection, beta, name):
        act = self._activation
        activated = tf_keras.layers.Rescaling(1.0 / beta, name=f"{name}_inv_beta")(x)
        activated = tf_keras.layers.Activation(act, name=f"{name}_preact")(activated)
        out_filters = filters if block == "basic" else filters * _BOTTLENECK_EXPANSION
        shortcut = x
        if use_projection:
            shortcut = self._conv(activated, out_filters, 1, strides, act, name=f"{name}_shortcut_conv")
        if block == "basic":
            y = self._conv(activated, filters, 3, strides, act, name=f"{name}_conv1")
            y = tf_keras.layers.Activation(act, name=f"{name}_act1")(y)
            y = self._conv(y, filters, 3, 1, act, name=f"{name}_conv2")
        else:
            y = self._conv(activated, filters, 1, 1, act, name=f"{name}_conv1")
            y = tf_keras.layers.Activation(act, name=f"{name}_act1")(y)
            y = self._conv(y, filters, 3, strides, act, name=f"{name}_conv2")
            y = tf_keras.layers.Activation(act, name=f"{name}_act2")(y)
            y = self._conv(y, out_filters, 1, 1, act, name=f"{name}_conv3")
        return ScaledResidualAdd(self._alpha, self._skip_gain_init, name=f"{name}_add")([y, shortcut])

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
            "width_multiplier": self._width_multiplier,
            "kernel_initializer": self._kernel_initializer,
            "kernel_regularizer": self._kernel_regularizer,
            "data_format": self._data_format,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


def build_nf_resnet(model_id, input_shape=None, input_specs=None, num_classes=None, **kwargs):
    """An `NFResNet` backbone, or a classifier when `num_classes` is given.

        model = build_nf_resnet(20, input_shape=(32, 32, 1), num_classes=10)

    Args:
      model_id: a depth of `NF_RESNET_SPECS` (20/32/56: CIFAR-style, small inputs).
      input_shape: the shape of one example, e.g. `(32, 32, 1)`; or `input_specs`.
      num_classes: if set, returns a `tf_keras.Model` mapping images to logits.
      **kwargs: as `NFResNet` (activation, alpha, skip_gain_init,
        width_multiplier, kernel_regularizer, data_format, ...).
    """
    return classifier.backbone_or_classifier(NFResNet, model_id, input_shape, input_specs, num_classes, **kwargs)


# Model Garden's builder of `backbone.type: nf_resnet`; the config fields are the class's arguments.
build_nf_resnet_backbone = registration.register_backbone("nf_resnet", NFResNet)

"""ResNet backbones whose every normalization-activation is a chosen norm-act layer.

Two forms, both built from `RESNET_SPECS`:

- **Pre-activation (v2)**, the form the EvoNorm paper uses (authors' code,
  tensorflow/tpu `resnet_model.py` with `pre_activation=True`): a norm-act at
  each block input, whose output also feeds the projection shortcut; one after
  each inner convolution except the last; no norm-act in the stem; one after
  the last stage.
- **v1.5** (post-activation, stride on the 3×3 convolution of the bottleneck),
  the form of Model Garden's `ResNet` and of the BN-ReLU baselines: a norm-act
  after the stem convolution and after each inner convolution; the projection
  shortcut's norm and the residual branch's last norm have
  `nonlinearity=False` (plain BN, or the affine map `x·γ + β` for an EvoNorm),
  the last one optionally with γ initialised to zeros; `activation` after the
  residual add. With `bn_relu` it has exactly the parameters of Model Garden's
  `ResNet` of the same depth.

Convolutions have no bias and carry `kernel_regularizer` (Model Garden's L2
weight decay); norm-act layers never get a regularizer, so their weights are
excluded from weight decay as in the authors' code.

Reference: Liu, Brock, Simonyan, Le. Evolving Normalization-Activation Layers.
arXiv:2004.02967. He, Zhang, Ren, Sun. Identity Mappings in Deep Residual
Networks. arXiv:1603.05027.
"""

import collections

import tf_keras

from official.modeling import tf_utils

from evonorm_tf import arguments
from evonorm_tf.modeling import classifier
from evonorm_tf.modeling import norm_act as norm_act_lib
from evonorm_tf.modeling.backbones import registration

# stem: "imagenet" = 7×7/2 convolution then 3×3/2 max pooling (64 filters);
#       "cifar" = 3×3/1 convolution with the first stage's filters.
# block: "basic" (two 3×3) or "bottleneck" (1×1, 3×3, 1×1 with 4× outputs).
# stages: (filters, repeats) per stage; every stage but the first has stride 2.
ResNetSpec = collections.namedtuple("ResNetSpec", ["stem", "block", "stages"])

RESNET_SPECS = {
    # ImageNet ResNets (He et al. 2016, Table 1); 10 is Model Garden's smallest.
    10: ResNetSpec("imagenet", "basic", ((64, 1), (128, 1), (256, 1), (512, 1))),
    18: ResNetSpec("imagenet", "basic", ((64, 2), (128, 2), (256, 2), (512, 2))),
    34: ResNetSpec("imagenet", "basic", ((64, 3), (128, 4), (256, 6), (512, 3))),
    50: ResNetSpec("imagenet", "bottleneck", ((64, 3), (128, 4), (256, 6), (512, 3))),
    101: ResNetSpec("imagenet", "bottleneck", ((64, 3), (128, 4), (256, 23), (512, 3))),
    152: ResNetSpec("imagenet", "bottleneck", ((64, 3), (128, 8), (256, 36), (512, 3))),
    200: ResNetSpec("imagenet", "bottleneck", ((64, 3), (128, 24), (256, 36), (512, 3))),
    # Small 3-stage CIFAR-style ResNets (depth 6n + 2, He et al. 2016 §4.2),
    # for small inputs such as 8×8 or 32×32 images.
    20: ResNetSpec("cifar", "basic", ((16, 3), (32, 3), (64, 3))),
    32: ResNetSpec("cifar", "basic", ((16, 5), (32, 5), (64, 5))),
    56: ResNetSpec("cifar", "basic", ((16, 9), (32, 9), (64, 9))),
    110: ResNetSpec("cifar", "basic", ((16, 18), (32, 18), (64, 18))),
}

_BOTTLENECK_EXPANSION = 4


def _check_model_id(model_id):
    if model_id not in RESNET_SPECS:
        raise ValueError(
            f"model_id must be one of {sorted(RESNET_SPECS)}, received model_id={model_id!r}"
        )
    return model_id


def _check_width_multiplier(width_multiplier):
    if isinstance(width_multiplier, bool) or not isinstance(width_multiplier, (int, float)):
        raise TypeError(
            f"width_multiplier must be a positive number, received width_multiplier={width_multiplier!r}"
        )
    if not width_multiplier > 0:
        raise ValueError(f"width_multiplier must be > 0, received width_multiplier={width_multiplier!r}")
    return float(width_multiplier)


@tf_keras.utils.register_keras_serializable(package="evonorm_tf")
class NormActResNet(tf_keras.Model):
    """ResNet (v2 pre-activation or v1.5) with a pluggable norm-act layer.

    The model maps an image batch to a dict of feature maps `{level: tensor}`
    keyed by `str(log2(stride))` (`"2"`…`"5"` for ImageNet ResNets, `"0"`…`"2"`
    for CIFAR-style ones), like Model Garden backbones; `output_specs` gives
    their shapes. In the v2 form the last level is taken after the final
    norm-act.

    Args:
      model_id: a depth of `RESNET_SPECS`: 10, 18, 34, 50, 101, 152, 200 (ImageNet
        form) or 20, 32, 56, 110 (3-stage CIFAR form for small inputs).
      input_specs: a `tf_keras.layers.InputSpec` of the input, in `data_format`
        layout. Default `[None, None, None, 3]`.
      norm_act: a norm-act name of `evonorm_tf.NORM_ACT_NAMES` or a
        `NormActFactory`. Default `"evonorm_b0"`.
      norm_act_options: dict of norm-act options (`momentum`, `epsilon`,
        `groups`, `synchronized`); each layer receives those it accepts.
      preactivation: True (default) for the v2 form, False for v1.5.
      width_multiplier: scales the stem and stage filters (Model Garden's
        `depth_multiplier`). Default 1.0.
      zero_init_residual: v1.5 only: initialise γ of each residual branch's
        last norm to zeros, as the authors' code (`init_zero=True`). Default True.
      activation: v1.5 only: the activation after the residual add. Default "relu".
      kernel_initializer: initializer of the convolution kernels.
      kernel_regularizer: regularizer of the convolution kernels (L2 weight
        decay); norm-act weights are never regularized.
      data_format: `"channels_last"` or `"channels_first"`; default
        `tf_keras.backend.image_data_format()`.

    Reference: arXiv:2004.02967 (EvoNorm), arXiv:1603.05027 (pre-activation).
    """

    def __init__(
        self,
        model_id,
        input_specs=None,
        norm_act="evonorm_b0",
        norm_act_options=None,
        preactivation=True,
        width_multiplier=1.0,
        zero_init_residual=True,
        activation="relu",
        kernel_initializer="VarianceScaling",
        kernel_regularizer=None,
        data_format=None,
        **kwargs,
    ):
        self._model_id = _check_model_id(model_id)
        self._preactivation = arguments.check_bool("preactivation", preactivation)
        self._zero_init_residual = arguments.check_bool("zero_init_residual", zero_init_residual)
        self._width_multiplier = _check_width_multiplier(width_multiplier)
        self._data_format = arguments.check_data_format(
            data_format or tf_keras.backend.image_data_format()
        )
        self._norm_act = norm_act_lib.as_factory(
            norm_act, self._data_format, **(norm_act_options or {})
        )
        self._activation = activation
        self._kernel_initializer = kernel_initializer
        self._kernel_regularizer = kernel_regularizer
        self._input_specs = classifier.as_input_spec(input_specs)
        self._channel_axis = -1 if self._data_format == "channels_last" else 1
        spec = RESNET_SPECS[self._model_id]

        inputs = tf_keras.Input(shape=self._input_specs.shape[1:])
        x, level = self._stem(inputs, spec)
        endpoints = {}
        for stage_index, (filters, repeats) in enumerate(spec.stages):
            strides = 1 if stage_index == 0 else 2
            level += 0 if stage_index == 0 else 1
            x = self._stage(
                x, spec.block, self._scaled(filters), strides, repeats, name=f"stage{stage_index + 1}"
            )
            endpoints[str(level)] = x
        if self._preactivation:
            x = self._norm_act(x.shape[self._channel_axis], name="final_norm_act")(x)
            endpoints[str(level)] = x
        self._output_specs = {key: value.get_shape() for key, value in endpoints.items()}
        super().__init__(inputs=inputs, outputs=endpoints, **kwargs)

    # -- building blocks ------------------------------------------------------------

    def _scaled(self, filters):
        return max(1, int(filters * self._width_multiplier))

    def _conv(self, x, filters, kernel_size, strides, name):
        """A bias-free convolution; strided ones pad explicitly, as the authors' code."""
        padding = "same"
        if strides > 1 and kernel_size > 1:
            total = kernel_size - 1
            pad = ((total // 2, total - total // 2),) * 2
            x = tf_keras.layers.ZeroPadding2D(pad, data_format=self._data_format, name=f"{name}_pad")(x)
            padding = "valid"
        return tf_keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            use_bias=False,
            data_format=self._data_format,
            kernel_initializer=tf_utils.clone_initializer(self._kernel_initializer),
            kernel_regularizer=self._kernel_regularizer,
            name=name,
        )(x)

    def _stem(self, inputs, spec):
        """The stem; returns its output and its level (log2 of its stride)."""
        if spec.stem == "imagenet":
            x = self._conv(inputs, self._scaled(64), 7, 2, name="stem_conv")
            if not self._preactivation:
                x = self._norm_act(self._scaled(64), name="stem_norm_act")(x)
            x = tf_keras.layers.MaxPool2D(
                3, strides=2, padding="same", data_format=self._data_format, name="stem_pool"
            )(x)
            return x, 2
        filters = self._scaled(spec.stages[0][0])
        x = self._conv(inputs, filters, 3, 1, name="stem_conv")
        if not self._preactivation:
            x = self._norm_act(filters, name="stem_norm_act")(x)
        return x, 0

    def _stage(self, x, block, filters, strides, repeats, name):
        block_fn = self._basic_block if block == "basic" else self._bottleneck_block
        x = block_fn(x, filters, strides, use_projection=True, name=f"{name}_block1")
        for index in range(1, repeats):
            x = block_fn(x, filters, 1, use_projection=False, name=f"{name}_block{index + 1}")
        return x

    def _residual_add(self, branch, shortcut, name):
        x = tf_keras.layers.Add(name=f"{name}_add")([branch, shortcut])
        if self._preactivation:
            return x
        return tf_keras.layers.Activation(self._activation, name=f"{name}_out")(x)

    def _shortcut(self, x, preactivated, out_filters, strides, use_projection, name):
        if not use_projection:
            return x
        shortcut = self._conv(preactivated, out_filters, 1, strides, name=f"{name}_shortcut_conv")
        if not self._preactivation:
            shortcut = self._norm_act(out_filters, nonlinearity=False, name=f"{name}_shortcut_norm")(shortcut)
        return shortcut

    def _last_norm(self, x, filters, name):
        """v1.5: the residual branch's last norm (no activation, optional zero γ)."""
        if self._preactivation:
            return x
        return self._norm_act(
            filters, nonlinearity=False, zero_init=self._zero_init_residual, name=f"{name}_norm_last"
        )(x)

    def _block_input(self, x, name):
        if not self._preactivation:
            return x
        return self._norm_act(x.shape[self._channel_axis], name=f"{name}_preact")(x)

    def _basic_block(self, x, filters, strides, use_projection, name):
        preactivated = self._block_input(x, name)
        shortcut = self._shortcut(x, preactivated, filters, strides, use_projection, name)
        y = self._conv(preactivated, filters, 3, strides, name=f"{name}_conv1")
        y = self._norm_act(filters, name=f"{name}_norm_act1")(y)
        y = self._conv(y, filters, 3, 1, name=f"{name}_conv2")
        y = self._last_norm(y, filters, name)
        return self._residual_add(y, shortcut, name)

    def _bottleneck_block(self, x, filters, strides, use_projection, name):
        out_filters = filters * _BOTTLENECK_EXPANSION
        preactivated = self._block_input(x, name)
        shortcut = self._shortcut(x, preactivated, out_filters, strides, use_projection, name)
        y = self._conv(preactivated, filters, 1, 1, name=f"{name}_conv1")
        y = self._norm_act(filters, name=f"{name}_norm_act1")(y)
        y = self._conv(y, filters, 3, strides, name=f"{name}_conv2")
        y = self._norm_act(filters, name=f"{name}_norm_act2")(y)
        y = self._conv(y, out_filters, 1, 1, name=f"{name}_conv3")
        y = self._last_norm(y, out_filters, name)
        return self._residual_add(y, shortcut, name)

    # -- Model Garden backbone interface -----------------------------------------

    @property
    def output_specs(self):
        """A dict `{level: TensorShape}` of the outputs."""
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
            "preactivation": self._preactivation,
            "width_multiplier": self._width_multiplier,
            "zero_init_residual": self._zero_init_residual,
            "activation": self._activation,
            "kernel_initializer": self._kernel_initializer,
            "kernel_regularizer": self._kernel_regularizer,
            "data_format": self._data_format,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


def build_resnet(model_id, norm_act="evonorm_b0", input_shape=None, input_specs=None, num_classes=None, **kwargs):
    """A `NormActResNet` backbone, or a classifier when `num_classes` is given.

        model = build_resnet(20, "evonorm_s0", input_shape=(32, 32, 1), num_classes=10)

    Args:
      model_id: a depth of `RESNET_SPECS` (20/32/56/110 are the 3-stage
        CIFAR-style ResNets for small inputs).
      norm_act: a norm-act name or a `NormActFactory`.
      input_shape: the shape of one example, e.g. `(32, 32, 1)`; or give
        `input_specs` (a `tf_keras.layers.InputSpec` with a batch dimension).
      num_classes: if set, returns a `tf_keras.Model` mapping images to logits
        (global average pooling of the last level, then a dense layer).
      **kwargs: as `NormActResNet` (preactivation, width_multiplier,
        norm_act_options, kernel_regularizer, data_format, ...).
    """
    return classifier.backbone_or_classifier(
        NormActResNet, model_id, input_shape, input_specs, num_classes, norm_act=norm_act, **kwargs)


# Model Garden's builder of `backbone.type: evonorm_resnet`; the config fields are the class's arguments.
build_resnet_backbone = registration.register_backbone("evonorm_resnet", NormActResNet)

"""Model Garden's RPN, detection and mask heads with a named norm-act in place of BN + activation.

Model Garden's Mask R-CNN heads (`official.vision.modeling.heads.RPNHead`,
`DetectionHead`, `MaskHead`) follow every intermediate convolution or dense
layer with a BatchNormalization and then their activation. The classes here
are subclasses that keep Model Garden's layers, names and `call` and swap each
such BN + activation pair for one norm-act layer of a `NormActFactory` (which
holds the nonlinearity, so the separate activation becomes the identity):

    head = NormActDetectionHead(num_classes=4, num_fcs=2, fc_dims=64, norm_act="evonorm_s0")

With `norm_act="bn_relu"` and equal BN options a head computes exactly what
Model Garden's head computes. The norm layers keep Model Garden's names
(`detection-conv-bn_0`, `mask-deconv-bn`, `rpn-conv-norm_3_0`, ...).

Dense positions. The detection head's dense layers output `[batch, rois,
features]`; each RoI is one sample there, so their norm-act sees
`[batch·rois, 1, 1, features]` (`PerRoiNormAct`). For BN this is Model
Garden's normalization over batch and RoIs; for a grouped layer the statistics
are those of each RoI's channel groups; for the B-series the instance variance
of a 1x1 map is 0, leaving `x / max(σ_batch, v·x + √ε)`.

Reference: arXiv:1703.06870 (Mask R-CNN), arXiv:2004.02967 (EvoNorm).
"""

import tensorflow as tf
import tf_keras
from official.vision.modeling.heads import dense_prediction_heads, instance_heads

from evonorm_tf.modeling import norm_act as norm_act_lib


@tf_keras.utils.register_keras_serializable(package="evonorm_tf")
class PerRoiNormAct(tf_keras.layers.Layer):
    """Applies a norm-act to `[batch, rois, features]` with each RoI as one sample.

    Args:
      norm_act_layer: a tf_keras norm-act layer (from a `NormActFactory`).
      data_format: that layer's data format.
    """

    def __init__(self, norm_act_layer, data_format="channels_last", **kwargs):
        super().__init__(**kwargs)
        self.norm_act = norm_act_layer
        self.data_format = data_format

    def call(self, inputs, training=None):
        features = tf.shape(inputs)[-1]
        per_roi = [-1, 1, 1, features] if self.data_format == "channels_last" else [-1, features, 1, 1]
        outputs = self.norm_act(tf.reshape(inputs, per_roi), training=training)
        return tf.reshape(outputs, tf.shape(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape


def _norm_act_factory(norm_act, norm_act_options, head_arguments):
    """A factory from a name and options; Model Garden's BN arguments fill the options left unset."""
    if isinstance(norm_act, norm_act_lib.NormActFactory):
        return norm_act_lib.as_factory(norm_act, norm_act.data_format, **(norm_act_options or {}))
    options = {
        option: head_arguments[field]
        for option, field in norm_act_lib.MODEL_LEVEL_FIELDS
        if head_arguments.get(field) is not None
    }
    options.update(norm_act_options or {})
    return norm_act_lib.as_factory(norm_act, tf_keras.backend.image_data_format(), **options)


def _check_no_activation(kwargs):
    if "activation" in kwargs:
        raise ValueError(
            f"activation={kwargs['activation']!r}: the nonlinearity belongs to the norm-act "
            "(e.g. norm_act='bn_silu' for BN + swish); do not pass `activation`"
        )


class _NormActHeadMixin:
    """Shared `__init__`/`get_config` of the three heads; `_swap_norms` is per head."""

    def _init_norm_act(self, norm_act, norm_act_options, head_arguments):
        self._norm_act = _norm_act_factory(norm_act, norm_act_options, head_arguments)

    def build(self, input_shape):
        super().build(input_shape)  # Model Garden's layers, with unbuilt BN layers
        self._swap_norms()
        self._activation = tf.identity  # the norm-acts hold the nonlinearity

    def get_config(self):
        config = {key: value for key, value in super().get_config().items() if key != "activation"}
        config.update(norm_act=self._norm_act.name, norm_act_options=dict(self._norm_act.options))
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@tf_keras.utils.register_keras_serializable(package="evonorm_tf")
class NormActRPNHead(_NormActHeadMixin, dense_prediction_heads.RPNHead):
    """Model Garden's `RPNHead` with a norm-act after each shared conv, per level.

    Args:
      norm_act: a norm-act name or a `NormActFactory`. Default `"bn_relu"`.
      norm_act_options: dict of norm-act options (`momentum`, `epsilon`,
        `groups`, `synchronized`).
      **kwargs: `RPNHead` arguments (`min_level`, `max_level`,
        `num_anchors_per_location`, `num_convs`, `num_filters`, ...), except
        `activation` (the norm-act holds the nonlinearity; passing it raises
        ValueError). Model Garden's BN options `use_sync_bn`, `norm_momentum`
        and `norm_epsilon`, when given with a norm-act name, set `synchronized`,
        `momentum` and `epsilon` where `norm_act_options` leaves them unset
        (with a ready `NormActFactory` they are unused).
    """

    def __init__(self, norm_act="bn_relu", norm_act_options=None, **kwargs):
        _check_no_activation(kwargs)
        self._init_norm_act(norm_act, norm_act_options, kwargs)
        super().__init__(activation="linear", **kwargs)

    def _swap_norms(self):
        channels = self._config_dict["num_filters"]
        self._norms = [
            [
                self._norm_act(channels, name=f"rpn-conv-norm_{level}_{i}")
                for i in range(self._config_dict["num_convs"])
            ]
            for level in range(self._config_dict["min_level"], self._config_dict["max_level"] + 1)
        ]


@tf_keras.utils.register_keras_serializable(package="evonorm_tf")
class NormActDetectionHead(_NormActHeadMixin, instance_heads.DetectionHead):
    """Model Garden's `DetectionHead` with a norm-act after each conv and dense layer.

    Args:
      norm_act, norm_act_options: as `NormActRPNHead`.
      **kwargs: `DetectionHead` arguments (`num_classes`, `num_convs`,
        `num_filters`, `num_fcs`, `fc_dims`, ...), except `activation`; as
        `NormActRPNHead`.
    """

    def __init__(self, norm_act="bn_relu", norm_act_options=None, **kwargs):
        _check_no_activation(kwargs)
        self._init_norm_act(norm_act, norm_act_options, kwargs)
        super().__init__(activation="linear", **kwargs)

    def _swap_norms(self):
        self._conv_norms = [
            self._norm_act(self._config_dict["num_filters"], name=f"detection-conv-bn_{i}")
            for i in range(self._config_dict["num_convs"])
        ]
        self._fc_norms = [
            PerRoiNormAct(
                self._norm_act(self._config_dict["fc_dims"], name=f"detection-fc-norm-act_{i}"),
                data_format=self._norm_act.data_format,
                name=f"detection-fc-bn_{i}",
            )
            for i in range(self._config_dict["num_fcs"])
        ]


@tf_keras.utils.register_keras_serializable(package="evonorm_tf")
class NormActMaskHead(_NormActHeadMixin, instance_heads.MaskHead):
    """Model Garden's `MaskHead` with a norm-act after each conv and the deconv.

    Args:
      norm_act, norm_act_options: as `NormActRPNHead`.
      **kwargs: `MaskHead` arguments (`num_classes`, `upsample_factor`,
        `num_convs`, `num_filters`, `class_agnostic`, ...), except
        `activation`; as `NormActRPNHead`.
    """

    def __init__(self, norm_act="bn_relu", norm_act_options=None, **kwargs):
        _check_no_activation(kwargs)
        self._init_norm_act(norm_act, norm_act_options, kwargs)
        super().__init__(activation="linear", **kwargs)

    def _swap_norms(self):
        channels = self._config_dict["num_filters"]
        self._conv_norms = [
            self._norm_act(channels, name=f"mask-conv-bn_{i}")
            for i in range(self._config_dict["num_convs"])
        ]
        self._deconv_bn = self._norm_act(channels, name="mask-deconv-bn")

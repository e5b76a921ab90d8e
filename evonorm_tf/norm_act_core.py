"""Framework-independent logic of every norm-act layer.

The classes here are mixins: they validate arguments, create weights, choose
training or inference statistics and call the formulas (`evonorm_tf.formulas`
through the kernel path chosen at build, or `evonorm_tf.backend_formulas`).
They do not derive from any Keras class and call no tensor library directly.
Each front-end combines them with its own `Layer` base, a `_keras` module
attribute and a `_compute` backend (`evonorm_tf.compute_backends`):

    class EvoNormB0(norm_act_core.EvoNormB0Core, keras.layers.Layer):
        _keras = keras
        _compute = compute_backends.for_keras_backend()

(`evonorm_tf.layers` for Keras 3, `evonorm_tf.tf_keras.layers` for tf_keras),
and implements `_add_channel_weight`, the one method whose signature differs
between the two Keras versions. Docstrings of the public layers live here.
"""

from evonorm_tf import arguments, compute_backends, statistics
from evonorm_tf.compute_backends import training_flag  # noqa: F401  (public: extensions use it)

#: The largest finite float16: outputs of float16 layers saturate there (`docs/robustness.md`).
FLOAT16_MAX = 65504.0


class NormActCore:
    """Arguments, weights and config shared by all norm-act layers.

    Subclasses implement `_normalize(x, training)` on float32 inputs and may
    extend `_build_weights(channels)` and `get_config`.
    """

    _keras = None  # the Keras module of the front-end: `keras` or `tf_keras`
    _compute = compute_backends.TENSORFLOW  # the tensor operations (`compute_backends`)

    def __init__(
        self,
        nonlinearity=True,
        epsilon=1e-5,
        gamma_initializer="ones",
        beta_initializer="zeros",
        gamma_regularizer=None,
        beta_regularizer=None,
        gamma_constraint=None,
        beta_constraint=None,
        data_format=None,
        axis=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.nonlinearity = arguments.check_bool("nonlinearity", nonlinearity)
        self.epsilon = arguments.check_epsilon(epsilon)
        self.data_format = arguments.data_format_from_axis(axis, data_format)
        self._axis = axis
        keras_api = self._keras
        self.gamma_initializer = keras_api.initializers.get(gamma_initializer)
        self.beta_initializer = keras_api.initializers.get(beta_initializer)
        self.gamma_regularizer = keras_api.regularizers.get(gamma_regularizer)
        self.beta_regularizer = keras_api.regularizers.get(beta_regularizer)
        self.gamma_constraint = keras_api.constraints.get(gamma_constraint)
        self.beta_constraint = keras_api.constraints.get(beta_constraint)
        self.supports_masking = True

    # -- weights -----------------------------------------------------------------

    def _add_channel_weight(self, name, channels, initializer, regularizer=None,
                            constraint=None, trainable=True):
        raise NotImplementedError("front-ends implement _add_channel_weight")

    def build(self, input_shape):
        channels = arguments.check_input_shape(input_shape, self.data_format)
        arguments.check_axis_matches(self._axis, len(input_shape))
        self.channels = channels
        # The kernel path is chosen here, once (`evonorm_tf.kernels`); calls use `self._kernels`.
        self._kernels = self._compute.kernels()
        self._build_weights(channels)
        super().build(input_shape)

    def _build_weights(self, channels):
        self.gamma = self._add_channel_weight(
            "gamma", channels, self.gamma_initializer, self.gamma_regularizer, self.gamma_constraint
        )
        self.beta = self._add_channel_weight(
            "beta", channels, self.beta_initializer, self.beta_regularizer, self.beta_constraint
        )

    # -- call --------------------------------------------------------------------

    def call(self, inputs, training=None):
        # A frozen layer runs in inference mode, as Keras BatchNormalization.
        compute = self._compute
        training = compute.training_flag(training) if self.trainable else False
        if isinstance(training, bool):
            outputs = self._normalize(inputs, training)
        else:
            outputs = compute.cond(
                training,
                lambda: self._normalize(inputs, True),
                lambda: self._normalize(inputs, False),
            )
        if self.compute_dtype == "float16":
            # Saturate rather than overflow: values beyond float16 become ±65504, not inf.
            outputs = compute.clip(outputs, -FLOAT16_MAX, FLOAT16_MAX)
        return compute.cast(outputs, self.compute_dtype)

    def _normalize(self, x, training):
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        serialize = self._keras.initializers.serialize
        config = {
            "nonlinearity": self.nonlinearity,
            "epsilon": self.epsilon,
            "data_format": self.data_format,
            "gamma_initializer": serialize(self.gamma_initializer),
            "beta_initializer": serialize(self.beta_initializer),
            "gamma_regularizer": self._keras.regularizers.serialize(self.gamma_regularizer),
            "beta_regularizer": self._keras.regularizers.serialize(self.beta_regularizer),
            "gamma_constraint": self._keras.constraints.serialize(self.gamma_constraint),
            "beta_constraint": self._keras.constraints.serialize(self.beta_constraint),
        }
        return {**super().get_config(), **config}


class BatchSeriesCore(NormActCore):
    """EvoNorm B-series: a batch variance in training, `moving_variance` in inference."""

    uses_v = False

    def __init__(self, momentum=0.9, synchronized=False, v_initializer="ones",
                 moving_variance_initializer="ones", **kwargs):
        super().__init__(**kwargs)
        self.momentum = arguments.check_momentum(momentum)
        self.synchronized = arguments.check_bool("synchronized", synchronized)
        self.v_initializer = self._keras.initializers.get(v_initializer)
        self.moving_variance_initializer = self._keras.initializers.get(moving_variance_initializer)

    def _build_weights(self, channels):
        super()._build_weights(channels)
        if not self.nonlinearity:
            return
        if self.uses_v:
            self.v = self._add_channel_weight("v", channels, self.v_initializer)
        self.moving_variance = self._add_channel_weight(
            "moving_variance", channels, self.moving_variance_initializer, trainable=False
        )

    def _normalize(self, x, training):
        if not self.nonlinearity:
            return self._kernels.affine(x, self.gamma, self.beta, self.data_format)
        if training and not (self.synchronized and self._compute.all_reduces_batch_statistics):
            # One op computes the batch variance with y (and differentiates both).
            outputs, variance = self._kernels.evonorm_b_training(
                self.formula_kind, x, self.gamma, self.beta, getattr(self, "v", None),
                self.epsilon, self.data_format,
            )
            self._update_moving_variance(variance)
            return outputs
        if training:
            variance = self._compute.batch_variance(x, self.data_format, self.synchronized)
            self._update_moving_variance(variance)
        else:
            variance = self._compute.read(self.moving_variance)
        return self._formula(x, variance)

    def _update_moving_variance(self, batch_variance):
        # Saturates at the largest float32 (never inf), so later batches bring it back down.
        compute = self._compute
        batch_variance = compute.clip(batch_variance, 0.0, statistics.FLOAT32_MAX)
        self.moving_variance.assign(compute.clip(
            self.momentum * compute.read(self.moving_variance) + (1.0 - self.momentum) * batch_variance,
            0.0, statistics.FLOAT32_MAX,
        ))

    def _formula(self, x, batch_variance):
        raise NotImplementedError

    def get_config(self):
        config = {
            "momentum": self.momentum,
            "synchronized": self.synchronized,
            "v_initializer": self._keras.initializers.serialize(self.v_initializer),
            "moving_variance_initializer": self._keras.initializers.serialize(
                self.moving_variance_initializer
            ),
        }
        return {**super().get_config(), **config}


class GroupedCore(NormActCore):
    """Layers with group statistics: `groups` or `group_size`, mutually exclusive."""

    def __init__(self, groups=None, group_size=None, **kwargs):
        super().__init__(**kwargs)
        self.groups, self.group_size = arguments.check_grouping(groups, group_size)

    def _build_weights(self, channels):
        self.resolved_groups = arguments.resolve_groups(self.groups, self.group_size, channels)
        super()._build_weights(channels)

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "group_size": self.group_size}


class SeriesSCore(GroupedCore):
    """EvoNorm S-series: batch-independent, group statistics only."""

    uses_v = False

    def __init__(self, v_initializer="ones", **kwargs):
        super().__init__(**kwargs)
        self.v_initializer = self._keras.initializers.get(v_initializer)

    def _build_weights(self, channels):
        super()._build_weights(channels)
        if self.nonlinearity and self.uses_v:
            self.v = self._add_channel_weight("v", channels, self.v_initializer)

    def _normalize(self, x, training):
        if not self.nonlinearity:
            return self._kernels.affine(x, self.gamma, self.beta, self.data_format)
        return self._formula(x)

    def _formula(self, x):
        raise NotImplementedError

    def get_config(self):
        return {
            **super().get_config(),
            "v_initializer": self._keras.initializers.serialize(self.v_initializer),
        }


COMMON_ARGUMENTS = """
    Args:
      nonlinearity: if False the layer is only the affine map `x·γ + β`, as in
        the authors' code (use it where a BN is not followed by an activation).
        Default True.
      epsilon: added inside every square root. Default 1e-5.
      gamma_initializer, beta_initializer: default `"ones"`, `"zeros"`
        (`"zeros"` for γ gives the zero-init of a residual branch's last norm).
      gamma_regularizer, beta_regularizer, gamma_constraint, beta_constraint:
        optional Keras regularizers / constraints.
      data_format: `"channels_last"` (default, `[N, *spatial, C]`) or
        `"channels_first"` (`[N, C, *spatial]`); inputs of rank 3, 4 or 5.
      axis: the channel axis as Keras normalization layers take it, instead
        of `data_format`: -1 (or the last axis) for channels-last, 1 for
        channels-first.
"""

B_SERIES_ARGUMENTS = """      momentum: moving-average momentum, `mv ← momentum·mv + (1 − momentum)·s2_bhw`,
        in [0, 1). Default 0.9.
      synchronized: if True, the batch variance is that of all replicas of
        the current `tf.distribute` strategy (an all-reduce). Default False:
        per-replica statistics, as the authors' TPU code. On JAX, a
        `keras.distribution` program sees the global batch, so the
        statistics are synchronized over devices either way.
      v_initializer: initializer of v (B0 only). Default `"ones"`.
      moving_variance_initializer: initializer of `moving_variance`. Default `"ones"`.

    Call arguments:
      inputs: a float tensor (float32, float16 or bfloat16); statistics are
        computed in float32, at any scale of the inputs, and the output has
        the layer's compute dtype (float16 outputs saturate at ±65504). A
        batch variance beyond float32 enters `moving_variance` as the
        largest float32 (see docs/robustness.md).
      training: in training the batch variance of `inputs` is used and
        `moving_variance` is updated; in inference `moving_variance` is used,
        so outputs do not depend on the rest of the batch. The instance term
        is always computed per sample. A layer with `trainable=False` runs in
        inference mode whatever `training` says, as Keras BatchNormalization.

    Weights: `gamma`, `beta`, `v` (B0), `moving_variance` (float32, not trainable).
"""

S_SERIES_ARGUMENTS = """      groups: number of channel groups; must divide the channels. Default
        None: 32 groups unless `group_size` is given. Mutually exclusive with
        `group_size`.
      group_size: channels per group instead of `groups`.
      v_initializer: initializer of v (S0 only). Default `"ones"`.

    Call arguments:
      inputs: a float tensor; statistics in float32 at any scale of the
        inputs, output in compute dtype (float16 outputs saturate at ±65504).
      training: ignored; training and inference compute the same function,
        and each sample's output depends only on that sample.

    Weights: `gamma`, `beta`, `v` (S0).
"""


class EvoNormB0Core(BatchSeriesCore):
    formula_kind = "b0"
    uses_v = True

    def _formula(self, x, batch_variance):
        return self._kernels.evonorm_b0(
            x, self.gamma, self.beta, self.v, batch_variance, self.epsilon, self.data_format
        )


class EvoNormB1Core(BatchSeriesCore):
    formula_kind = "b1"
    def _formula(self, x, batch_variance):
        return self._kernels.evonorm_b1(
            x, self.gamma, self.beta, batch_variance, self.epsilon, self.data_format
        )


class EvoNormB2Core(BatchSeriesCore):
    formula_kind = "b2"
    def _formula(self, x, batch_variance):
        return self._kernels.evonorm_b2(
            x, self.gamma, self.beta, batch_variance, self.epsilon, self.data_format
        )


class EvoNormS0Core(SeriesSCore):
    uses_v = True

    def _formula(self, x):
        return self._kernels.evonorm_s0(
            x, self.gamma, self.beta, self.v, self.resolved_groups, self.epsilon, self.data_format
        )


class EvoNormS1Core(SeriesSCore):
    def _formula(self, x):
        return self._kernels.evonorm_s1(
            x, self.gamma, self.beta, self.resolved_groups, self.epsilon, self.data_format
        )


class EvoNormS2Core(SeriesSCore):
    def _formula(self, x):
        return self._kernels.evonorm_s2(
            x, self.gamma, self.beta, self.resolved_groups, self.epsilon, self.data_format
        )

"""Framework-independent logic of the baselines: GroupNorm, FRN + TLU and BatchNorm with an activation.

Mixins in the shared signature of `evonorm_tf.norm_act_core`, combined with
each front-end's `Layer` (GN, FRN) or its own `BatchNormalization` (BN) by
`evonorm_tf.layers` and `evonorm_tf.tf_keras.layers`.
"""

from evonorm_tf import arguments, compute_backends
from evonorm_tf.norm_act_core import GroupedCore, NormActCore


class GroupNormActCore(GroupedCore):
    """GroupNorm then an activation (`relu` or `silu`), in the shared signature.

    `(x − mean_hwg) / sqrt(s2_hwg + ε) · γ + β`, then the activation unless
    `nonlinearity=False`. Arguments as the S-series EvoNorms.
    Reference: Wu & He, Group Normalization, arXiv:1803.08494.
    """

    activation = None

    def _normalize(self, x, training):
        y = self._kernels.group_norm(
            x, self.gamma, self.beta, self.resolved_groups, self.epsilon, self.data_format
        )
        return self._compute.activations[self.activation](y) if self.nonlinearity else y


class FilterResponseNormTLUCore(NormActCore):
    """Filter Response Normalization + Thresholded Linear Unit, in the shared signature.

    `max(γ·x / sqrt(mu2_hw + ε) + β, τ)` with a learned per-channel τ (weight
    `tau`, initialised to zeros); `nonlinearity=False` drops the TLU.
    Reference: Singh & Krishnan, Filter Response Normalization, arXiv:1911.09737.
    """

    def __init__(self, tau_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.tau_initializer = self._keras.initializers.get(tau_initializer)

    def _build_weights(self, channels):
        super()._build_weights(channels)
        if self.nonlinearity:
            self.tau = self._add_channel_weight("tau", channels, self.tau_initializer)

    def _normalize(self, x, training):
        y = self._kernels.filter_response_norm(x, self.gamma, self.beta, self.epsilon, self.data_format)
        if not self.nonlinearity:
            return y
        return self._kernels.thresholded_linear_unit(y, self.tau, self.data_format)

    def get_config(self):
        return {
            **super().get_config(),
            "tau_initializer": self._keras.initializers.serialize(self.tau_initializer),
        }


class BatchNormActCore:
    """BatchNormalization then an activation, in the shared signature.

    Mixed into each front-end's own `BatchNormalization`, so tf_keras keeps its
    fused kernel. Weights `gamma`, `beta`, `moving_mean`, `moving_variance`;
    `nonlinearity=False` gives plain BN. Arguments as the B-series EvoNorms.
    Reference: Ioffe & Szegedy, Batch Normalization, arXiv:1502.03167.
    """

    _keras = None
    _compute = compute_backends.TENSORFLOW
    activation = None

    def __init__(
        self,
        nonlinearity=True,
        epsilon=1e-5,
        momentum=0.9,
        gamma_initializer="ones",
        beta_initializer="zeros",
        gamma_regularizer=None,
        beta_regularizer=None,
        gamma_constraint=None,
        beta_constraint=None,
        data_format=None,
        synchronized=False,
        axis=None,
        **kwargs,
    ):
        self.nonlinearity = arguments.check_bool("nonlinearity", nonlinearity)
        self.data_format = arguments.data_format_from_axis(axis, data_format)
        self._requested_axis = axis
        super().__init__(
            axis=-1 if self.data_format == "channels_last" else 1,
            momentum=arguments.check_momentum(momentum),
            epsilon=arguments.check_epsilon(epsilon),
            gamma_initializer=gamma_initializer,
            beta_initializer=beta_initializer,
            gamma_regularizer=gamma_regularizer,
            beta_regularizer=beta_regularizer,
            gamma_constraint=gamma_constraint,
            beta_constraint=beta_constraint,
            synchronized=arguments.check_bool("synchronized", synchronized),
            **kwargs,
        )

    def build(self, input_shape):
        arguments.check_input_shape(input_shape, self.data_format)
        arguments.check_axis_matches(self._requested_axis, len(input_shape))
        super().build(input_shape)

    def call(self, inputs, training=None):
        outputs = super().call(inputs, training=training)
        if not self.nonlinearity:
            return outputs
        return self._compute.activations[self.activation](outputs)

    def get_config(self):
        keras_api = self._keras
        config = {
            "nonlinearity": self.nonlinearity,
            "epsilon": self.epsilon,
            "momentum": self.momentum,
            "data_format": self.data_format,
            "synchronized": self.synchronized,
            "gamma_initializer": keras_api.initializers.serialize(self.gamma_initializer),
            "beta_initializer": keras_api.initializers.serialize(self.beta_initializer),
            "gamma_regularizer": keras_api.regularizers.serialize(self.gamma_regularizer),
            "beta_regularizer": keras_api.regularizers.serialize(self.beta_regularizer),
            "gamma_constraint": keras_api.constraints.serialize(self.gamma_constraint),
            "beta_constraint": keras_api.constraints.serialize(self.beta_constraint),
        }
        return {**keras_api.layers.Layer.get_config(self), **config}

"""Shadow Batch Normalization (MixPath): one BatchNorm per number of active paths.

In a multi-path one-shot supernet a block sums m of its k candidate paths,
and the sum of m paths has roughly m times the variance of one path. A single
BatchNorm shared by all m would track a mixture of these statistics. Shadow
BN keeps k BatchNorms, one per m = 1..k, and normalizes the block's summed
output with BN number m:

    y = (x − mean) / sqrt(var + ε) · γ[m] + β[m]

with `mean, var` the batch statistics in training (and then only
`moving_mean[m]`, `moving_variance[m]` are updated) and the moving statistics
of BN number m in inference. A stand-alone child network with m paths uses
the BN matching m.

m is a tensor at call time, so one traced `tf.function` (and one XLA
program) serves every m: the k BNs are stored as stacked `[k, C]` weights and
BN number m is a row gathered from them.

This module holds the formula and the framework-independent layer logic
(`ShadowBatchNormCore`) and the Keras 3 layer; `evonorm_tf.tf_keras` has the
tf_keras layer for Model Garden models. On the JAX and PyTorch backends the
Keras 3 layer computes with `keras.ops` (`evonorm_tf.compute_backends`).

Reference: Chu, Zhou, Zhang, Li. MixPath: A Unified Approach for One-shot
Neural Architecture Search. arXiv:2001.05887.
"""

import numbers

import keras
import tensorflow as tf

from evonorm_tf import arguments, compute_backends, statistics

_REFERENCE = (
    "Chu, Zhou, Zhang, Li. MixPath: A Unified Approach for One-shot Neural "
    "Architecture Search. arXiv:2001.05887"
)


def shadow_batch_norm(x, mean, variance, gamma, beta, epsilon=1e-5, data_format="channels_last"):
    """`(x − mean) / sqrt(variance + ε) · γ + β` with `[C]` statistics and weights; float32."""
    x = tf.cast(x, tf.float32)
    rank = x.shape.rank
    scale = gamma * tf.math.rsqrt(variance + epsilon)
    offset = beta - mean * scale
    scale = statistics.broadcast_channel_vector(scale, rank, data_format)
    offset = statistics.broadcast_channel_vector(offset, rank, data_format)
    return x * scale + offset


def check_num_paths(num_paths):
    """k, the number of candidate paths: a positive integer."""
    if isinstance(num_paths, bool) or not isinstance(num_paths, numbers.Integral):
        raise TypeError(f"num_paths must be a positive integer, received num_paths={num_paths!r}")
    if num_paths < 1:
        raise ValueError(f"num_paths must be >= 1, received num_paths={num_paths!r}")
    return int(num_paths)


def path_index(active_paths, num_paths):
    """The row `m − 1` of the stacked BNs, as an int32 scalar tensor.

    A statically known m outside 1..k raises ValueError; a dynamic one is
    checked by an assertion (compiled out under XLA).
    """
    return compute_backends.TENSORFLOW.path_index(active_paths, num_paths)


class ShadowBatchNormCore:
    """Shadow Batch Normalization: k BatchNorms, BN number m for the sum of m active paths.

    `y = (x − mean) / sqrt(var + ε) · γ[m] + β[m]`. In training `mean, var`
    are the batch statistics over (N, *spatial) and only BN number m's moving
    statistics are updated, `moving ← momentum·moving + (1 − momentum)·batch`;
    in inference they are `moving_mean[m]`, `moving_variance[m]`.

    Args:
      num_paths: k, the number of candidate paths (and of BNs).
      momentum: moving-average momentum in [0, 1). Default 0.9.
      epsilon: added to the variance. Default 1e-5.
      gamma_initializer, beta_initializer: default `"ones"`, `"zeros"`.
      data_format: `"channels_last"` (default) or `"channels_first"`.

    Call arguments:
      inputs: the sum of the m active paths, a float tensor of rank 3 to 5.
      active_paths: m, an integer scalar in 1..k: a tensor (it may change
        between calls of one `tf.function`/XLA program) or a Python int
        (Keras 3 takes it as a keyword: `layer(x, active_paths=2)`).
      training: batch statistics and a moving-statistic update (True), or BN
        number m's moving statistics (False, default). A layer with
        `trainable=False` runs in inference mode whatever `training` says.

    Weights: `gamma`, `beta` (trainable), `moving_mean`, `moving_variance`
    (not trainable), each `[k, C]` float32; row m − 1 is BN number m.

    Reference: {reference}
    """

    _keras = None
    _compute = compute_backends.TENSORFLOW  # the tensor operations (`compute_backends`)

    def __init__(
        self,
        num_paths,
        momentum=0.9,
        epsilon=1e-5,
        gamma_initializer="ones",
        beta_initializer="zeros",
        data_format="channels_last",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_paths = check_num_paths(num_paths)
        self.momentum = arguments.check_momentum(momentum)
        self.epsilon = arguments.check_epsilon(epsilon)
        self.data_format = arguments.check_data_format(data_format)
        self.gamma_initializer = self._keras.initializers.get(gamma_initializer)
        self.beta_initializer = self._keras.initializers.get(beta_initializer)

    def _add_stacked_weight(self, name, shape, initializer, trainable):
        raise NotImplementedError("front-ends implement _add_stacked_weight")

    def build(self, input_shape):
        channels = arguments.check_input_shape(input_shape, self.data_format)
        self.channels = channels
        shape = (self.num_paths, channels)
        self.gamma = self._add_stacked_weight("gamma", shape, self.gamma_initializer, True)
        self.beta = self._add_stacked_weight("beta", shape, self.beta_initializer, True)
        self.moving_mean = self._add_stacked_weight("moving_mean", shape, "zeros", False)
        self.moving_variance = self._add_stacked_weight("moving_variance", shape, "ones", False)
        super().build(input_shape)

    def call(self, inputs, active_paths, training=None):
        compute = self._compute
        index = compute.path_index(active_paths, self.num_paths)
        gamma, beta = compute.row(self.gamma, index), compute.row(self.beta, index)
        # A frozen layer runs in inference mode, as Keras BatchNormalization.
        training = compute.training_flag(training) if self.trainable else False
        if isinstance(training, bool):
            mean, variance = self._statistics(inputs, index, training)
        else:
            mean, variance = compute.cond(
                training,
                lambda: self._statistics(inputs, index, True),
                lambda: self._statistics(inputs, index, False),
            )
        outputs = compute.shadow_batch_norm(
            inputs, mean, variance, gamma, beta, self.epsilon, self.data_format
        )
        return compute.cast(outputs, self.compute_dtype)

    def _statistics(self, inputs, index, training):
        compute = self._compute
        if not training:
            return compute.row(self.moving_mean, index), compute.row(self.moving_variance, index)
        mean, variance = compute.batch_moments(inputs, self.data_format)
        # Only row `index` changes; the other rows stay bit-identical.
        compute.update_row(self.moving_mean, index, mean, self.momentum)
        compute.update_row(self.moving_variance, index, variance, self.momentum)
        return mean, variance

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return input_shape

    def get_config(self):
        serialize = self._keras.initializers.serialize
        config = {
            "num_paths": self.num_paths,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "gamma_initializer": serialize(self.gamma_initializer),
            "beta_initializer": serialize(self.beta_initializer),
            "data_format": self.data_format,
        }
        return {**super().get_config(), **config}


ShadowBatchNormCore.__doc__ = ShadowBatchNormCore.__doc__.format(reference=_REFERENCE)


@keras.saving.register_keras_serializable(package="evonorm_tf")
class ShadowBatchNormalization(ShadowBatchNormCore, keras.layers.Layer):
    __doc__ = ShadowBatchNormCore.__doc__
    _keras = keras
    _compute = compute_backends.for_keras_backend()

    def _add_stacked_weight(self, name, shape, initializer, trainable):
        return self.add_weight(
            name=name,
            shape=shape,
            initializer=initializer,
            trainable=trainable,
            dtype="float32",
            autocast=False,
            aggregation="none" if trainable else "mean",
        )

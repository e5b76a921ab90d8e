"""The residual merge of a normalizer-free block: `h + α·g·d·f`, with a SkipInit gain g.

d is stochastic depth: in training, a per-example Bernoulli(1 − drop_rate)
mask that drops the whole residual branch, not rescaled by the keep
probability (the NF-ResNet reference code's `StochDepth(scale_by_keep=False)`);
d = 1 in inference.

Reference: Brock, De, Smith. arXiv:2101.08692 (NF-ResNets); De & Smith.
Batch Normalization Biases Residual Blocks Towards the Identity Function in
Deep Networks. arXiv:2002.10444 (SkipInit); Huang et al. Deep Networks with
Stochastic Depth. arXiv:1603.09382.
"""

import numbers

import tensorflow as tf
import tf_keras

from evonorm_tf.norm_act_core import training_flag

__all__ = ["ScaledResidualAddCore", "ScaledResidualAdd", "scaled_residual"]


def scaled_residual(branch, shortcut, alpha, skip_gain, drop_rate=0.0, training=False):
    """`shortcut + α · g · d · branch`; d a per-example keep mask when training and drop_rate > 0."""
    scale = tf.cast(alpha * skip_gain, branch.dtype)
    training = training_flag(training)
    if drop_rate > 0.0 and training is not False:
        keep = 1.0 - drop_rate
        shape = [tf.shape(branch)[0]] + [1] * (branch.shape.rank - 1)
        dropped = branch * tf.floor(keep + tf.random.uniform(shape, dtype=branch.dtype))
        branch = dropped if training is True else tf.where(training, dropped, branch)
    return shortcut + scale * branch


class ScaledResidualAddCore:
    """`shortcut + α · g · d · branch` for inputs `[branch, shortcut]`.

    Args:
      alpha: the fixed residual scale α (the rate of variance growth per
        block: Var(h_{i+1}) = Var(h_i) + α² when Var(branch) = 1). Default 0.2.
      skip_gain_init: initial value of the learnable scalar g. Default 0.0
        (SkipInit: every block starts as the identity); 1.0 lets the
        residual branches contribute from the first step, as in the
        signal-propagation analysis at initialization.
      drop_rate: stochastic depth: the probability that a training example
        skips the branch (d = 0). Default 0.0.

    The signal-propagation analysis (`evonorm_tf.analysis`) reads the first
    input of this layer as the residual branch, before α, g and d.
    """

    _keras = None

    def __init__(self, alpha=0.2, skip_gain_init=0.0, drop_rate=0.0, **kwargs):
        super().__init__(**kwargs)
        for label, value in (("alpha", alpha), ("skip_gain_init", skip_gain_init), ("drop_rate", drop_rate)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{label} must be a number, received {label}={value!r}")
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, received alpha={alpha!r}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), received drop_rate={drop_rate!r}")
        self.alpha = float(alpha)
        self.skip_gain_init = float(skip_gain_init)
        self.drop_rate = float(drop_rate)

    def _add_skip_gain(self):
        raise NotImplementedError("front-ends implement _add_skip_gain")

    def build(self, input_shape):
        self.skip_gain = self._add_skip_gain()
        super().build(input_shape)

    def call(self, inputs, training=None):
        branch, shortcut = inputs
        return scaled_residual(branch, shortcut, self.alpha, self.skip_gain, self.drop_rate, training)

    def compute_output_shape(self, input_shape):
        return input_shape[1]

    def get_config(self):
        config = {"alpha": self.alpha, "skip_gain_init": self.skip_gain_init, "drop_rate": self.drop_rate}
        return {**super().get_config(), **config}


@tf_keras.utils.register_keras_serializable(package="evonorm_tf")
class ScaledResidualAdd(ScaledResidualAddCore, tf_keras.layers.Layer):
    __doc__ = ScaledResidualAddCore.__doc__
    _keras = tf_keras

    def _add_skip_gain(self):
        return self.add_weight(
            name="skip_gain", shape=(), initializer=tf_keras.initializers.Constant(self.skip_gain_init),
            dtype=tf.float32, trainable=True, experimental_autocast=False,
        )

"""The residual merge of a normalizer-free block: `h + α·g·f`, with a SkipInit gain g.

Reference: Brock, De, Smith. arXiv:2101.08692 (NF-ResNets); De & Smith.
Batch Normalization Biases Residual Blocks Towards the Identity Function in
Deep Networks. arXiv:2002.10444 (SkipInit).
"""

import numbers

import tensorflow as tf
import tf_keras

__all__ = ["ScaledResidualAdd"]


@tf_keras.utils.register_keras_serializable(package="evonorm_tf")
class ScaledResidualAdd(tf_keras.layers.Layer):
    """`shortcut + α · g · branch` for inputs `[branch, shortcut]`.

    Args:
      alpha: the fixed residual scale α (the rate of variance growth per
        block: Var(h_{i+1}) = Var(h_i) + α² when Var(branch) = 1). Default 0.2.
      skip_gain_init: initial value of the learnable scalar g. Default 0.0
        (SkipInit: every block starts as the identity); 1.0 lets the
        residual branches contribute from the first step, as in the
        signal-propagation analysis at initialization.

    The signal-propagation analysis (`evonorm_tf.analysis`) reads the first
    input of this layer as the residual branch, before α and g.
    """

    def __init__(self, alpha=0.2, skip_gain_init=0.0, **kwargs):
        super().__init__(**kwargs)
        for label, value in (("alpha", alpha), ("skip_gain_init", skip_gain_init)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{label} must be a number, received {label}={value!r}")
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, received alpha={alpha!r}")
        self.alpha = float(alpha)
        self.skip_gain_init = float(skip_gain_init)

    def build(self, input_shape):
        self.skip_gain = self.add_weight(
            name="skip_gain", shape=(), initializer=tf_keras.initializers.Constant(self.skip_gain_init),
            dtype=tf.float32, trainable=True, experimental_autocast=False,
        )
        super().build(input_shape)

    def call(self, inputs):
        branch, shortcut = inputs
        scale = tf.cast(self.alpha * self.skip_gain, branch.dtype)
        return shortcut + scale * branch

    def compute_output_shape(self, input_shape):
        return input_shape[1]

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "skip_gain_init": self.skip_gain_init}

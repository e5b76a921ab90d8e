"""Keras 3 front-ends of the NF-ResNet layers and the MixPath multi-path block.

Each class adds only the Keras 3 weight creation to the shared logic:
`scaled_standardized_kernel` (evonorm_tf.modeling.layers.scaled_ws_conv),
`ScaledResidualAddCore` (…residual) and `MultiPathBlockCore` (…multipath).

References: Brock, De, Smith. arXiv:2101.08692 (NF-ResNets); Chu, Zhou,
Zhang, Li. MixPath. arXiv:2001.05887.
"""

import keras
import tensorflow as tf

from evonorm_tf.modeling.layers.multipath import MultiPathBlockCore
from evonorm_tf.modeling.layers.residual import ScaledResidualAddCore
from evonorm_tf.modeling.layers.scaled_ws_conv import activation_gain_constant, scaled_standardized_kernel
from evonorm_tf.shadow_batch_norm import ShadowBatchNormalization

__all__ = ["MultiPathBlock", "ScaledResidualAdd", "ScaledWSConv2D"]


@keras.saving.register_keras_serializable(package="evonorm_tf")
class ScaledWSConv2D(keras.layers.Conv2D):
    """Keras 3 `Conv2D` with a Scaled Weight Standardized kernel.

        Ŵ = g · γ_act · (W − mean(W)) / sqrt(N·var(W) + ε)

    Args:
      filters, kernel_size, strides, padding, use_bias, data_format, ...: as
        `keras.layers.Conv2D` (`use_bias` defaults to True).
      activation_gain: the activation before this convolution, whose exact
        gain γ_act is folded into the kernel: `"linear"` (default), `"relu"`,
        `"silu"`, or a positive number (see `ACTIVATION_GAINS`).

    Weights: `kernel` (the raw W), `bias`, `gain` (g, `[filters]`, ones).

    Reference: arXiv:2101.08692.
    """

    def __init__(self, filters, kernel_size, activation_gain="linear", use_bias=True, **kwargs):
        if kwargs.get("groups", 1) != 1:
            raise ValueError(f"ScaledWSConv2D supports groups=1 only, received groups={kwargs['groups']!r}")
        super().__init__(filters, kernel_size, use_bias=use_bias, **kwargs)
        self.activation_gain = activation_gain
        self._fixed_gain = activation_gain_constant(activation_gain)

    def build(self, input_shape):
        super().build(input_shape)
        self.gain = self.add_weight(name="gain", shape=(self.filters,), initializer="ones", dtype="float32",
                                    trainable=True, autocast=False)

    def standardized_kernel(self):
        """Ŵ, float32."""
        return scaled_standardized_kernel(self.kernel, self.gain, self._fixed_gain)

    def convolution_op(self, inputs, kernel):
        del kernel  # the raw kernel; the convolution uses the standardized one
        return super().convolution_op(inputs, tf.cast(self.standardized_kernel(), inputs.dtype))

    # Conv2D stores only kernel and bias; Layer's own methods store every weight (the gain too).
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)

    def get_config(self):
        return {**super().get_config(), "activation_gain": self.activation_gain}


@keras.saving.register_keras_serializable(package="evonorm_tf")
class ScaledResidualAdd(ScaledResidualAddCore, keras.layers.Layer):
    __doc__ = ScaledResidualAddCore.__doc__
    _keras = keras

    def _add_skip_gain(self):
        return self.add_weight(name="skip_gain", shape=(), initializer=keras.initializers.Constant(self.skip_gain_init),
                               dtype="float32", trainable=True, autocast=False)


@keras.saving.register_keras_serializable(package="evonorm_tf")
class MultiPathBlock(MultiPathBlockCore, keras.layers.Layer):
    __doc__ = MultiPathBlockCore.__doc__
    _keras = keras
    _shadow_norm_class = ShadowBatchNormalization

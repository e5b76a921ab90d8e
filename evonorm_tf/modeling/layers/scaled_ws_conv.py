"""Scaled Weight Standardization convolution, the convolution of normalizer-free ResNets.

    Ŵ = g · γ_act · (W − mean(W)) / sqrt(N·var(W) + ε)

with the mean and (biased) variance of W over the fan-in of each output
channel (N = kh·kw·C_in elements), g a learnable per-output-channel gain
(initialised to ones) and γ_act a fixed gain of the activation that *precedes*
the convolution: it makes `conv(act(z))` keep unit variance for z ~ N(0, 1),
so no activation normalization is needed. ε = 1e-4 guards a constant kernel.

γ_act = 1 / sqrt(Var[act(z)]), z ~ N(0, 1), computed exactly for every
activation (`ACTIVATION_GAINS`):

    activation  γ_act here (exact)   reference code (deepmind-research nfnets)
    relu        1.7128585            1.7139589
    silu        1.7871872            1.7881293

The formula lives here once; `evonorm_tf.neighbours` builds the Keras 3
layer on it.

Reference: Brock, De, Smith. Characterizing signal propagation to close the
performance gap in unnormalized ResNets. arXiv:2101.08692 (§4).
"""

import math
import numbers

import numpy as np
import tensorflow as tf
import tf_keras

__all__ = [
    "ACTIVATION_GAINS",
    "REFERENCE_ACTIVATION_GAINS",
    "ScaledWSConv2D",
    "activation_gain_constant",
    "scaled_standardized_kernel",
]


def _gaussian_inverse_std(function):
    """1 / std(function(z)) for z ~ N(0, 1), by 120-point Gauss–Hermite quadrature.

    Exact to float64 rounding for smooth activations (SiLU: agrees with
    adaptive quadrature to 1e-15).
    """
    nodes, weights = np.polynomial.hermite_e.hermegauss(120)
    weights = weights / math.sqrt(2.0 * math.pi)
    values = function(nodes)
    mean = np.sum(weights * values)
    return float(1.0 / math.sqrt(np.sum(weights * values**2) - mean**2))


def _silu(z):
    return z / (1.0 + np.exp(-np.clip(z, -700.0, 700.0)))


# One rule for every activation: γ_act = 1 / sqrt(Var[act(z)]), z ~ N(0, 1),
# computed exactly (closed form, or quadrature for SiLU). DeepMind's
# reference code uses constants fitted by sampling instead; they are kept in
# `REFERENCE_ACTIVATION_GAINS` for comparison only.
ACTIVATION_GAINS = {
    "linear": 1.0,
    # Var(relu(z)) = (1/2)(1 − 1/π): γ = sqrt(2 / (1 − 1/π)) = 1.7128585.
    "relu": math.sqrt(2.0 / (1.0 - 1.0 / math.pi)),
    # 1 / std(silu(z)) = 1.7871872.
    "silu": _gaussian_inverse_std(_silu),
}
ACTIVATION_GAINS["swish"] = ACTIVATION_GAINS["silu"]

# The constants of the NF-ResNet reference code (deepmind-research
# nfnets/base.py), 0.06% (ReLU) and 0.05% (SiLU) above the exact values.
REFERENCE_ACTIVATION_GAINS = {"linear": 1.0, "relu": 1.7139588594436646, "silu": 1.7881293296813965}

_WS_EPSILON = 1e-4


def activation_gain_constant(activation):
    """γ_act of an activation name (`linear`, `relu`, `silu`/`swish`) or a positive number."""
    if isinstance(activation, numbers.Real) and not isinstance(activation, bool):
        if not activation > 0:
            raise ValueError(f"an activation gain must be > 0, received {activation!r}")
        return float(activation)
    key = activation.strip().lower() if isinstance(activation, str) else activation
    if key not in ACTIVATION_GAINS:
        raise ValueError(
            f"activation must be one of {sorted(ACTIVATION_GAINS)} or a positive gain, "
            f"received activation={activation!r}"
        )
    return ACTIVATION_GAINS[key]


def scaled_standardized_kernel(kernel, gain, fixed_gain, epsilon=_WS_EPSILON):
    """Ŵ of a `[kh, kw, C_in, C_out]` kernel; statistics over the first three axes (float32)."""
    kernel = tf.cast(kernel, tf.float32)
    fan_in = float(kernel.shape[0] * kernel.shape[1] * kernel.shape[2])
    mean, variance = tf.nn.moments(kernel, axes=[0, 1, 2], keepdims=True)
    scale = tf.math.rsqrt(variance * fan_in + epsilon) * (gain * fixed_gain)
    return (kernel - mean) * scale


@tf_keras.utils.register_keras_serializable(package="evonorm_tf")
class ScaledWSConv2D(tf_keras.layers.Conv2D):
    """`Conv2D` with a Scaled Weight Standardized kernel (see the module docstring).

    Args:
      filters, kernel_size, strides, padding, use_bias, data_format, ...: as
        `tf_keras.layers.Conv2D` (`use_bias` defaults to True: without a
        normalization the bias is the only offset).
      activation_gain: the activation *before* this convolution, whose gain
        γ_act is folded into the kernel: `"linear"` (default, e.g. on the
        input image), `"relu"` (1.7128585), `"silu"` (1.7871872), or a
        number; see `ACTIVATION_GAINS` (the reference code's constants,
        1.7139589 and 1.7881293, are in `REFERENCE_ACTIVATION_GAINS`).

    Weights: `kernel` (the raw W), `gain` (g, `[filters]`, ones), `bias`.
    The standardized kernel is recomputed from W at every call, so it is
    differentiated through; at inference it could be folded once.

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
        self.gain = self.add_weight(
            name="gain", shape=(self.filters,), initializer="ones", dtype=tf.float32,
            trainable=True, experimental_autocast=False,
        )

    def standardized_kernel(self):
        """Ŵ, float32."""
        return scaled_standardized_kernel(self.kernel, self.gain, self._fixed_gain)

    def convolution_op(self, inputs, kernel):
        del kernel  # the raw kernel; the convolution uses the standardized one
        kernel = tf.cast(self.standardized_kernel(), inputs.dtype)
        return super().convolution_op(inputs, kernel)

    def get_config(self):
        return {**super().get_config(), "activation_gain": self.activation_gain}

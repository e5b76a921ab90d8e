"""The cpu kernel path of the baselines: GroupNorm and Filter Response Normalization.

The same design as the EvoNorm kernels of `evonorm_tf.kernels.cpu` (one XLA
launch per direction, sums over short blocks, one written pass each way,
mixed-precision inputs widened inside the kernel), for

    GN:  y = (x − mean_hwg) / sqrt(s2_hwg + ε) · γ + β   (Wu & He, arXiv:1803.08494)
    FRN: y = x / sqrt(mu2_hw + ε) · γ + β                (Singh & Krishnan, arXiv:1911.09737)

GN's group statistics are the S-series' (`cpu.group_statistics`); FRN's are
per (sample, channel), so no group repeat. Both are `x̂·γ + β` with
`x̂ = (x − centre)·ρ⁻¹`, and with `a = dy·γ`, M the elements of one
statistic and sums over them:

    dβ = Σ dy,  dγ = Σ dy·x̂,
    dx = ρ⁻¹·a − ρ⁻¹/M·Σ a − ρ⁻³/M·Σ a·(x − centre)·(x − centre)

(the middle term only when centred: the centre is the mean). Per (sample,
channel) the backward pass needs Σ dy and Σ dy·(x − origin), origin the
statistics' shift; the group sums are combinations of those.

TLU, `max(y, τ)`, is one kernel each way too: its gradient is `dy` where
`y ≥ τ` (TensorFlow's tie rule for `maximum`), `dτ = Σ dy` where `y < τ`. The
activations after GN stay TensorFlow ops. At shapes XLA does not compile, the
passes over channels_last x are native ops (`evonorm_tf.kernels.native`).
"""

import tensorflow as tf

from evonorm_tf import arguments, formulas, statistics
from evonorm_tf.kernels import native, register
from evonorm_tf.kernels.cpu_dtypes import _activations, _float32, _narrowed, _widened
from evonorm_tf.kernels.cpu_launch import compiling
from evonorm_tf.kernels.cpu_launch import kernel as _kernel
from evonorm_tf.kernels.cpu_s_series import group_statistics
from evonorm_tf.kernels.cpu_sums import (
    S_BLOCK,
    _block_sums,
    _blocked,
    _channel_sum,
    _finish,
    _from_groups,
    _spatial_count,
    _to_groups,
    _unit,
    _vector,
    mean_square,
)

__all__ = ["normalized_affine", "thresholded"]


def _statistics(channels_last, groups, centered, epsilon, x4):
    """`(inverse, origin, offset)`; groups None: per (sample, channel), uncentred (FRN)."""
    if groups is not None:
        return group_statistics(channels_last, groups, centered, epsilon, x4)
    inverse = statistics.inverse_root(*mean_square(x4, channels_last), epsilon)
    zeros = tf.zeros_like(inverse)
    return inverse, zeros, zeros


@_kernel(layout_index=0, native_form=True)
def _forward(channels_last, groups, centered, epsilon, x4, gamma, beta):
    """y (x's dtype) and `(inverse, origin, offset)`: statistics, then one pass writing y."""
    if not compiling() and native.available(channels_last):
        inverse, origin, offset = _statistics(channels_last, groups, centered, epsilon, x4)
        y4 = native.affine(x4, origin, offset, inverse * _vector(gamma, channels_last), beta)
        return y4, inverse, origin, offset
    x4, dtype = _widened(x4)
    inverse, origin, offset = _statistics(channels_last, groups, centered, epsilon, x4)
    scale = inverse * _vector(gamma, channels_last)
    y4 = ((x4 - origin) - offset) * scale + _vector(beta, channels_last)
    return _narrowed(y4, dtype), inverse, origin, offset


def _per_statistic(t, groups):
    """Sums of a stat-shaped tensor over the channels of each group, repeated over them."""
    if groups is None:
        return t
    return _from_groups(tf.reduce_sum(_to_groups(t, groups), axis=2, keepdims=True), t)


@_kernel(layout_index=0, native_form=True)
def _backward(channels_last, groups, centered, x4, dy4, gamma, inverse, origin, offset):
    """dx (x's dtype), dγ, dβ in one kernel: two sums, their coefficients, one pass writing dx."""
    use_native = not compiling() and native.available(channels_last)
    if use_native:
        sum_dy, sum_dy_x = native.affine_backward_sums(x4, dy4, origin)
    else:
        (x4, dtype), (dy4, _) = _widened(x4), _widened(dy4)
        sum_dy, sum_dy_x = _finish(channels_last, _block_sums(channels_last, dy4, dy4 * (x4 - origin)))
    g = _vector(gamma, channels_last)
    sum_dy_centred = sum_dy_x - offset * sum_dy  # Σ dy·(x − centre)
    count = _spatial_count(x4, channels_last)
    if groups is not None:
        channels = tf.shape(sum_dy)[3 if channels_last else 1]
        count = tf.cast(channels // groups, tf.float32) * count
    # −ρ⁻³·Σ/count over `unit`, multiplied in this order: ρ⁻³ alone is below float32 at scale 1e30.
    unit = _unit(1.0 / inverse)
    coefficient = -_per_statistic(g * sum_dy_centred, groups) * inverse * inverse * (inverse / unit) / count
    shift = inverse / count * _per_statistic(g * sum_dy, groups) if centered else tf.zeros_like(inverse)
    scale = inverse * g
    small = (_channel_sum(inverse * sum_dy_centred), _channel_sum(sum_dy))
    if use_native:
        return (native.affine_backward_dx(x4, dy4, scale, coefficient, unit, origin, offset, shift),) + small
    dx4 = dy4 * scale + coefficient * ((x4 * unit - origin * unit) - offset * unit) - shift
    return (_narrowed(dx4, dtype),) + small


def normalized_affine(x, gamma, beta, groups, epsilon, data_format, centered=True):
    """`(x − centre) / sqrt(statistic + ε) · γ + β` with a hand-written gradient.

    Args:
      x: activations of rank 3 to 5, float32, float16 or bfloat16.
      gamma, beta: float32 `[C]` vectors.
      groups: channel groups of the statistic (GroupNorm), or None for one
        statistic per (sample, channel), uncentred (FRN).
      centered: the statistic is the variance about the mean and the mean
        is subtracted (GroupNorm); otherwise the second moment, nothing
        subtracted.
    Returns:
      y in x's dtype; statistics are float32.
    """
    if groups is None and centered:
        raise ValueError("per-(sample, channel) statistics are uncentred (FRN); received centered=True")

    @tf.custom_gradient
    def op(x, gamma, beta):
        x4, channels_last = _blocked(x, data_format, S_BLOCK)
        y4, *saved = _forward(channels_last, groups, centered, epsilon, x4, gamma, beta)

        def grad(dy):
            dy4 = tf.reshape(dy, tf.shape(x4))
            dx4, dgamma, dbeta = _backward(channels_last, groups, centered, x4, dy4, gamma, *saved)
            return tf.reshape(dx4, tf.shape(x)), dgamma, dbeta

        return tf.reshape(y4, tf.shape(x)), grad

    return op(x, gamma, beta)


@register("group_norm", "cpu")
def group_norm(x, gamma, beta, groups, epsilon=1e-5, data_format="channels_last"):
    arguments.check_data_format(data_format)
    x = _activations(x)
    channels = x.shape[-1] if data_format == "channels_last" else x.shape[1]
    arguments.check_groups_divide(groups, channels)
    return normalized_affine(x, _float32(gamma), _float32(beta), groups, epsilon, data_format, centered=True)


@register("filter_response_norm", "cpu")
def filter_response_norm(x, gamma, beta, epsilon=1e-5, data_format="channels_last"):
    arguments.check_data_format(data_format)
    return normalized_affine(_activations(x), _float32(gamma), _float32(beta), None, epsilon, data_format,
                             centered=False)


@_kernel(layout_index=0)
def _tlu_forward(channels_last, y4, tau):
    y4, dtype = _widened(y4)
    return _narrowed(tf.maximum(y4, _vector(tau, channels_last)), dtype)


@_kernel(layout_index=0)
def _tlu_backward(channels_last, y4, dy4, tau):
    (y4, _), (dy4, dtype) = _widened(y4), _widened(dy4)
    below = y4 < _vector(tau, channels_last)
    (sum_below,) = _finish(channels_last, _block_sums(channels_last, tf.where(below, dy4, 0.0)))
    return _narrowed(tf.where(below, 0.0, dy4), dtype), _channel_sum(sum_below)


def thresholded(y, tau, data_format):
    """`max(y, τ)` (TLU) for y of rank 3 to 5 in float32, float16 or bfloat16 and a float32 `[C]` τ; y's dtype out."""

    @tf.custom_gradient
    def op(y, tau):
        y4, channels_last = _blocked(y, data_format, S_BLOCK)

        def grad(dz):
            dy4, dtau = _tlu_backward(channels_last, y4, tf.reshape(dz, tf.shape(y4)), tau)
            return tf.reshape(dy4, tf.shape(y)), dtau

        return tf.reshape(_tlu_forward(channels_last, y4, tau), tf.shape(y)), grad

    return op(y, tau)


@register("thresholded_linear_unit", "cpu")
def thresholded_linear_unit(y, tau, data_format="channels_last"):
    arguments.check_data_format(data_format)
    tau = _float32(tau)
    if tau.shape.rank != 1:  # an already broadcastable τ: the definition
        return formulas.thresholded_linear_unit(y, tau, data_format)
    return thresholded(_activations(y), tau, data_format)

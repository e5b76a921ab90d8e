"""EvoNorm-S0, S1 and S2 on the cpu kernel path: one XLA kernel per direction.

The design (one launch per direction, blocked sums, one written pass each
way) is described in `evonorm_tf.kernels.cpu`; sums and layout are in
`evonorm_tf.kernels.cpu_sums`, dtypes in `evonorm_tf.kernels.cpu_dtypes`.
`group_statistics` is shared with the cpu GroupNorm (`cpu_baselines`).

S-series (y = f·ρ⁻¹·γ + β, f = x·σ(v·x), ρ = sqrt(group statistic + ε)):
dβ = Σ dy, dγ = Σ dy·f/ρ, dv = Σ γ/ρ·dy·x²·σ(1−σ), ∂f/∂x = σ·(1 + v·x·(1−σ)),
∂L/∂ρ⁻¹ = Σ_group γ·dy·f. σ'(z) is written σ(z)·(1 − σ(z)), as TF's own
SigmoidGrad.
"""
import tensorflow as tf

from evonorm_tf import arguments, statistics
from evonorm_tf.kernels import native, register
from evonorm_tf.kernels.cpu_dtypes import _activations, _float32, _narrowed, _widened
from evonorm_tf.kernels.cpu_launch import compiling
from evonorm_tf.kernels.cpu_launch import kernel as _kernel
from evonorm_tf.kernels.cpu_sums import (
    _blocked,
    _block_sums,
    _channel_sum,
    _finish,
    _from_groups,
    _spatial_count,
    _to_groups,
    _unit,
    _vector,
    channel_moments,
    combine_groups,
    mean_square,
    s_block_limit,
)

__all__ = ["evonorm_s0", "evonorm_s1", "evonorm_s2", "group_statistics", "s_series"]


def _s_output(channels_last, x4, v, scale, beta):
    return x4 * tf.sigmoid(_vector(v, channels_last) * x4) * scale + _vector(beta, channels_last)


@_kernel(layout_index=0, native_form=True)
def _s_forward(channels_last, groups, centered, epsilon, x4, gamma, beta, v):
    """y and `(inverse, origin, offset)`: ρ⁻¹ per (sample, channel), x − centre = (x − origin) − offset.

    One kernel: statistics, group statistics (per group, repeated over the
    channels by `_from_groups`), then one pass writing y (in x's dtype).
    """
    if not compiling() and native.available(channels_last):
        inverse, origin, offset = group_statistics(channels_last, groups, centered, epsilon, x4)
        return native.s_output(x4, v, inverse * _vector(gamma, channels_last), beta), inverse, origin, offset
    x4, dtype = _widened(x4)
    inverse, origin, offset = group_statistics(channels_last, groups, centered, epsilon, x4)
    y4 = _s_output(channels_last, x4, v, inverse * _vector(gamma, channels_last), beta)
    return _narrowed(y4, dtype), inverse, origin, offset


def group_statistics(channels_last, groups, centered, epsilon, x4):
    """`(inverse, origin, offset)` of float32 `x4`, each stat-shaped (for use inside a kernel).

    `inverse` is `1 / sqrt(group statistic + ε)` repeated over each group's
    channels: the statistic is the group variance (`centered`) or the group
    second moment. x − group mean = (x − origin) − offset (offset 0 and origin
    0 when not centred).
    """
    count = _spatial_count(x4, channels_last)
    if centered:
        shift, mean_delta, m2, m2_small = channel_moments(x4, channels_last)
        reference, group_delta, statistic, small = combine_groups(shift, mean_delta, m2, m2_small, count, groups)
        origin = shift
        offset = (_from_groups(reference, shift) - shift) + _from_groups(group_delta, shift)
    else:
        second, second_small = mean_square(x4, channels_last)
        statistic = tf.reduce_mean(_to_groups(second, groups), axis=2, keepdims=True)
        small = tf.reduce_mean(_to_groups(second_small, groups), axis=2, keepdims=True)
        origin = tf.zeros_like(second)
        offset = origin
    return _from_groups(statistics.inverse_root(statistic, small, epsilon), origin), origin, offset


def _sigmoid(channels_last, x4, v):
    """`(v·x, σ(v·x))`, x-sized."""
    z = _vector(v, channels_last) * x4
    return z, tf.sigmoid(z)


def _s_backward_partials(channels_last, with_v, x4, dy4, v, sigmoid=None):
    """`_block_sums` of dy and the terms the S-series gradient needs: dy·f, dy·x²·σ'.

    With v, dy·f and dy·x²·σ' are summed as the real and imaginary parts of
    one complex64 term: XLA computes an output element of a reduction at a
    time, so two real terms would each evaluate the sigmoid (10–25% slower).
    `_finish` then returns Σdy, Σdy·f, 0 and Σdy·x²·σ'. As plain TensorFlow
    ops (not `cpu_launch.compiling()`) σ is computed once anyway and the
    complex terms would be two more x-sized tensors: the terms stay real.
    `sigmoid`: `_sigmoid(...)` if already computed.
    """
    _, s = sigmoid or _sigmoid(channels_last, x4, v)
    dy_f = dy4 * x4 * s
    if not with_v:
        return _block_sums(channels_last, dy4, dy_f)
    if not compiling():
        return _block_sums(channels_last, dy4, dy_f, dy_f * (x4 * (1.0 - s)))
    # x·(1 − σ) before the product: x² alone overflows float32 where σ' is 0.
    return _block_sums(channels_last, tf.complex(dy4, tf.zeros_like(dy4)), tf.complex(dy_f, dy_f * (x4 * (1.0 - s))))


def _s_gradient_coefficients(channels_last, groups, with_v, count, gamma, inverse, sums):
    """`(scale, coefficient, unit, dγ, dβ, dv)` of an S-series gradient (stat-sized).

    dx's centred term is `coefficient·((x·unit − origin·unit) − offset·unit)` (see `_unit`).
    """
    g = _vector(gamma, channels_last)
    sum_dy, sum_f = sums[:2]
    # ∂L/∂stat = ∂L/∂ρ⁻¹ · (−ρ⁻³/2), ∂L/∂ρ⁻¹ summed over each group; ∂stat/∂x = 2(x − centre)/(S·C/G).
    # Computed per group, then repeated over its channels by `_from_groups`.
    dinverse = tf.reduce_sum(_to_groups(g * sum_f, groups), axis=2, keepdims=True)
    channels = tf.shape(sum_f)[3 if channels_last else 1]
    per_group = tf.cast(channels // groups, tf.float32) * count
    inverse_g = _to_groups(inverse, groups)[:, :, :1]
    unit = _unit(1.0 / inverse_g)
    # −∂L/∂ρ⁻¹·ρ⁻³ over `unit`, multiplied in this order: ρ⁻³ alone is below float32 at scale 1e30.
    coefficient = _from_groups(-dinverse * inverse_g * inverse_g * (inverse_g / unit) / per_group, sum_f)
    scale = inverse * g
    dv = _channel_sum(scale * sums[2]) if with_v else tf.zeros_like(gamma)
    unit = _from_groups(unit, sum_f)
    return scale, coefficient, unit, _channel_sum(sum_f * inverse), _channel_sum(sum_dy), dv


def _s_backward_dx(channels_last, x4, dy4, v, scale, coefficient, unit, origin, offset, sigmoid=None):
    z, s = sigmoid or _sigmoid(channels_last, x4, v)
    direct = dy4 * scale * s * (1.0 + z * (1.0 - s))
    if not compiling():
        # Plain TensorFlow ops (no reassociation, each op a pass over x): one product where unit is 1.
        centred = (x4 - origin) - offset
        return direct + tf.cond(tf.reduce_all(tf.equal(unit, 1.0)), lambda: coefficient * centred,
                                lambda: coefficient * ((x4 * unit - origin * unit) - offset * unit))
    return direct + coefficient * ((x4 * unit - origin * unit) - offset * unit)


@_kernel(layout_index=0, native_form=True)
def _s_backward(channels_last, groups, with_v, x4, dy4, gamma, v, v_for_dx, inverse, origin, offset):
    """dx and the small gradients in one kernel: the sums, their coefficients, one pass writing dx.

    `v_for_dx` is `v` again, as a separate input: were both passes to compute
    σ(v·x) from the same input, XLA would evaluate it once and write it out
    at x's size for the second pass (one x-sized write and read more, slower
    than evaluating it twice).
    """
    count = _spatial_count(x4, channels_last)
    if not compiling() and native.available(channels_last):
        sums = native.s_backward_sums(x4, dy4, v)
        scale, coefficient, unit, *small = _s_gradient_coefficients(
            channels_last, groups, with_v, count, gamma, inverse, sums if with_v else sums[:2])
        return [native.s_backward_dx(x4, dy4, v_for_dx, scale, coefficient, unit, origin, offset)] + small
    (x4, dtype), (dy4, _) = _widened(x4), _widened(dy4)
    # Plain TensorFlow ops: σ(v·x) once, as one x-sized tensor, for both passes.
    sigmoid = None if compiling() else _sigmoid(channels_last, x4, v)
    sums = _finish(channels_last, _s_backward_partials(channels_last, with_v, x4, dy4, v, sigmoid))
    if len(sums) == 4:
        sums = sums[:2] + sums[3:]  # complex terms: Σdy, Σdy·f, Σdy·x²·σ' (the 0 dropped)
    scale, coefficient, unit, *small = _s_gradient_coefficients(channels_last, groups, with_v, count, gamma,
                                                                 inverse, sums)
    dx4 = _s_backward_dx(channels_last, x4, dy4, v_for_dx, scale, coefficient, unit, origin, offset, sigmoid)
    return [_narrowed(dx4, dtype)] + small


def s_series(x, gamma, beta, v, groups, epsilon, data_format, centered=True):
    """`x·σ(v·x) / sqrt(stat + ε) · γ + β` with a hand-written gradient.

    `stat` is the group variance (`centered=True`: S0, S1) or the group second
    moment (S2); `v` is a `[C]` vector, or None for σ(x) (S1, S2). x is
    float32, float16 or bfloat16, y in x's dtype, statistics float32.
    """
    with_v = v is not None
    inputs = [x, gamma, beta] + ([v] if with_v else [])

    @tf.custom_gradient
    def op(*tensors):
        x, gamma, beta = tensors[:3]
        v = tensors[3] if with_v else tf.ones_like(gamma)
        x4, channels_last = _blocked(x, data_format, s_block_limit(x, data_format))
        y4, *saved = _s_forward(channels_last, groups, centered, epsilon, x4, gamma, beta, v)

        def grad(dy):
            dy4 = tf.reshape(dy, tf.shape(x4))
            dx4, dgamma, dbeta, dv = _s_backward(channels_last, groups, with_v, x4, dy4, gamma, v, v, *saved)
            return [tf.reshape(dx4, tf.shape(x)), dgamma, dbeta] + ([dv] if with_v else [])

        return tf.reshape(y4, tf.shape(x)), grad

    return op(*inputs)


# -- registration -------------------------------------------------------------------


def _s_formula(x, gamma, beta, v, groups, epsilon, data_format, centered):
    arguments.check_data_format(data_format)
    channels = x.shape[-1] if data_format == "channels_last" else x.shape[1]
    arguments.check_groups_divide(groups, channels)
    vectors = [_float32(t) for t in (gamma, beta, v)]
    return s_series(_activations(x), *vectors, groups, epsilon, data_format, centered)


@register("evonorm_s0", "cpu")
def evonorm_s0(x, gamma, beta, v, groups, epsilon=1e-5, data_format="channels_last"):
    return _s_formula(x, gamma, beta, v, groups, epsilon, data_format, centered=True)


@register("evonorm_s1", "cpu")
def evonorm_s1(x, gamma, beta, groups, epsilon=1e-5, data_format="channels_last"):
    return _s_formula(x, gamma, beta, None, groups, epsilon, data_format, centered=True)


@register("evonorm_s2", "cpu")
def evonorm_s2(x, gamma, beta, groups, epsilon=1e-5, data_format="channels_last"):
    return _s_formula(x, gamma, beta, None, groups, epsilon, data_format, centered=False)

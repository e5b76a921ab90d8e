"""The cpu kernel path: one-pass statistics and hand-written gradients.

`evonorm_tf.formulas` defines each EvoNorm once, as readable TensorFlow; this
module computes the same functions faster on CPUs, and registers them as the
`cpu` implementations (`evonorm_tf.kernels`). Some of its devices (integer
matmuls that materialise sums, one-hot matmuls at default precision, complex
pairs) are CPU-specific: on TPU and GPU layers take the `portable` path. What
makes them fast on CPU (each point measured, see `bench/layers.py`):

1. **One XLA launch per direction.** The forward pass is one kernel
   (statistics, their small per-(sample, channel) and per-group arithmetic,
   and the pass writing y), the backward pass another (the gradient sums,
   their coefficients, the pass writing dx). In a ResNet-50 train step the
   launches and the small TensorFlow ops between kernels, each waiting on a
   thread pool busy with convolutions, cost more than the arithmetic: one
   launch per direction took EvoNorm-S0's step from 1.13x to 1.08x BN's.
2. **Sums fused into short blocks, never written at x's size.** Every
   per-(sample, channel) sum (the statistics of the forward pass, and those
   of dy and the gradient terms in the backward pass) is read from x (and
   dy) once, as partial sums over blocks of 8 (B-series) or 16 (S-series)
   spatial positions, all terms stacked into one reduction (`_block_sums`),
   then finished by an addition tree (`_finish`). On CPU, writing an
   x-sized tensor costs several times reading one (fresh pages,
   write-allocate), and XLA emits a reduction fused with more than a few
   operations per element as scalar code unless its blocks are short: over
   32 positions the same kernels ran 1.5–3× slower. (The B-series' terms,
   with a division and a max, are fastest over 8, the S-series' over 16.)
   `x₀`, the first spatial element of each (sample, channel), keeps
   `Σd² − (Σd)²/S` (d = x − x₀) free of cancellation when |mean| >> std.
   Group and batch statistics are exact (Chan et al.) combinations of the
   per-channel ones, so the B-series get their batch variance without
   another pass. Second moments (B1, B2 at inference, S2) are one sum of x².
   Each sum of squares has a twin over the values times 2⁻⁸⁰, a third term
   of the same reduction, used where float32 overflows (inputs of scale
   1e30: `evonorm_tf.statistics.root`, docs/robustness.md).
3. **Small math kept out of the x-sized loops.** XLA fuses cheap producers
   into each consumer and recomputes them there, per element in an x-sized
   loop. So the finished sums are materialised once (`_materialized`), group
   repeats are matmuls (`_from_groups`), and the S-series backward pass
   takes v twice (`_s_backward`).
4. **One written pass each way.** The forward pass writes y, the backward
   pass dx; nothing x-sized is saved but x (the statistics are reused, the
   cheap elementwise work recomputed).
5. **No autodiff copies, no compile per passing shape.** See
   `evonorm_tf.kernels.cpu_launch`: kernels hidden from gradient tapes,
   compiled per static shape only once a shape recurs, a bounded cache,
   shape-generic graphs otherwise; inside a compiled model they are inlined.
   Layout and sums are in `evonorm_tf.kernels.cpu_sums`.

Derivations (y = x / den · γ + β for the B-series, den = max(σ_b, r), σ_b =
sqrt(s2_bhw + ε); P = dy·x/den; R = [r > σ_b] the per-element branch):

    dβ = Σ dy,  dγ = Σ P,  ∂L/∂den = −γ·P/den,
    ∂L/∂σ_b = −(γ/σ_b)·Σ_{not R} P = −(γ/σ_b)·(ΣP − Σ_R P)   (den = σ_b there),
    ∂L/∂r   = −γ·R·P/den (elementwise), pushed into x, v and the instance term:
      B0: r = v·x + σ_i, σ_i = sqrt(s2_hw + ε):  ∂r/∂x = v, ∂r/∂v = x, ∂r/∂σ_i = 1
      B1: r = (x + 1)·ρ,  ρ = sqrt(mu2_hw + ε):   ∂r/∂x = ρ, ∂r/∂ρ = x + 1 = den/ρ on R
      B2: r = ρ − x:                                ∂r/∂x = −1, ∂r/∂ρ = 1
    and a variance V of M elements with mean m passes ∂L/∂V · 2(x − m)/M to x
    (a second moment: ∂L/∂mu2 · 2x/M). The moving-variance update has no gradient.

B0 needs Σ_R P/den (for σ_i) and Σ_R P·x/den (for v); on R, den = v·x + σ_i,
so Σ_R P = v·Σ_R P·x/den + σ_i·Σ_R P/den comes from those two without a sum
of its own. Both the instance and the batch terms are centred on the same
per-(sample, channel) origin x₀, so dx is one pass:

    dx = γ·dy/den·(R ? σ_i or ρ / den : 1) + (c_i + c_b)·(x − x₀) − k,

with c_i, c_b, k per (sample, channel). (On the instance branch 1 − x·∂r/∂x
/ den equals instance/den for all of B0, B1, B2: no cancellation.)

S-series (y = f·ρ⁻¹·γ + β, f = x·σ(v·x), ρ = sqrt(group statistic + ε)):
dβ = Σ dy, dγ = Σ dy·f/ρ, dv = Σ γ/ρ·dy·x²·σ(1−σ), ∂f/∂x = σ·(1 + v·x·(1−σ)),
∂L/∂ρ⁻¹ = Σ_group γ·dy·f. σ'(z) is written σ(z)·(1 − σ(z)), as TF's own
SigmoidGrad.

All kernels take inputs of rank 3 to 5 in either data format and are
XLA-compilable. x may be float32, float16 or bfloat16 (mixed precision): it is
read in its own dtype and widened to float32 inside the kernel, where every
statistic and sum is float32, and y (forward) and dx (backward) are written in
x's dtype. Casting outside the kernels instead costs three x-sized passes more
per direction (a float32 copy of x, a float32 y or dx, its narrowing), more
than the kernel's own passes over half-width data; the other outputs (the
batch variance, dγ, dβ, dv) are float32.
"""
import tensorflow as tf

from evonorm_tf import arguments, statistics
from evonorm_tf.kernels import register
from evonorm_tf.kernels.cpu_launch import kernel as _kernel
from evonorm_tf.statistics import DOWNSCALE
from evonorm_tf.kernels.cpu_sums import (  # noqa: F401 (B_BLOCK, S_BLOCK re-exported)
    B_BLOCK,
    S_BLOCK,
    _batch_sum,
    _blocked,
    _block_sums,
    _channel_sum,
    _finish,
    _from_groups,
    _spatial_count,
    _to_groups,
    _vector,
    channel_moments,
    combine_batch,
    combine_groups,
    mean_square,
)

__all__ = ["KERNEL_DTYPES", "b_series", "group_statistics", "s_series"]

#: The dtypes of x the kernels read as they are (any other is cast to float32 first).
KERNEL_DTYPES = (tf.float32, tf.float16, tf.bfloat16)


def _widened(x4):
    """`(x4 as float32, x4's dtype)`: inside a kernel XLA fuses the cast into every loop reading x4."""
    return (x4 if x4.dtype == tf.float32 else tf.cast(x4, tf.float32)), x4.dtype


# -- B-series -----------------------------------------------------------------------


def _right_branch(kind, x4, v, instance):
    if kind == "b0":
        return v * x4 + instance
    if kind == "b1":
        return (x4 + 1.0) * instance
    return instance - x4


@_kernel(layout_index=1)
def _b_forward(kind, channels_last, epsilon, x4, gamma, beta, v, given_variance):
    """y and what the backward pass needs: statistics, then one pass writing y, in one kernel.

    Returns `(y4, variance [C], instance, batch_std, origin, instance_offset,
    batch_offset)`: dx's centred terms are `(x − origin) − offset` (see
    `_b_backward`). With `given_variance` (inference) B1 and B2 only reduce x².
    y has x's dtype; everything else is float32 (see `_widened`).
    """
    x4, dtype = _widened(x4)
    count = _spatial_count(x4, channels_last)
    training = given_variance is None
    if kind == "b0" or training:
        shift, mean_delta, m2, m2_small = channel_moments(x4, channels_last)
        origin = shift
    if kind == "b0":
        instance = statistics.root(m2 / count, m2_small / count, epsilon)
        instance_offset = mean_delta  # x − mean_hw = (x − x₀) − mean_delta
    elif training:
        mean = shift + mean_delta
        instance = statistics.root(m2 / count + tf.square(mean),
                                   m2_small / count + tf.square(mean * DOWNSCALE), epsilon)
        instance_offset = -origin  # x = (x − x₀) + x₀
    else:
        instance = statistics.root(*mean_square(x4, channels_last), epsilon)
        origin = tf.zeros_like(instance)
        instance_offset = origin
    if training:
        reference, batch_delta, variance, variance_small = combine_batch(shift, mean_delta, m2, m2_small, count)
        batch_offset = (reference - origin) + batch_delta  # x − mean_bhw = (x − x₀) − batch_offset
        batch_std = statistics.root(variance, variance_small, epsilon)
        variance = statistics.saturated(variance, variance_small)
    else:
        variance = _vector(given_variance, channels_last)
        batch_offset = tf.zeros_like(variance)
        batch_std = tf.sqrt(variance + epsilon)
    y4 = tf.cast(_b_output(kind, channels_last, x4, gamma, beta, v, instance, batch_std), dtype)
    return y4, tf.reshape(variance, [-1]), instance, batch_std, origin, instance_offset, batch_offset


def _b_output(kind, channels_last, x4, gamma, beta, v, instance, batch_std):
    den = tf.maximum(batch_std, _right_branch(kind, x4, _vector(v, channels_last), instance))
    return x4 / den * _vector(gamma, channels_last) + _vector(beta, channels_last)


def _b_backward_partials(kind, channels_last, x4, dy4, v, instance, batch_std):
    """`_block_sums` of dy and the terms the B-series gradient needs.

    B0: P, R·P·x/den, R·P/den; B1: P, R·P; B2: P, R·P, R·P/den (P = dy·x/den).
    """
    right = _right_branch(kind, x4, _vector(v, channels_last), instance)
    den = tf.maximum(batch_std, right)
    p = dy4 * x4 / den
    p_right_den = tf.where(right > batch_std, p / den, 0.0)
    if kind == "b0":
        return _block_sums(channels_last, dy4, p, p_right_den * x4, p_right_den)
    p_right = tf.where(right > batch_std, p, 0.0)
    return _block_sums(channels_last, dy4, p, p_right, *([] if kind == "b1" else [p_right_den]))


def _b_gradient_coefficients(kind, channels_last, training, count, batch, gamma, v, instance, batch_std, origin,
                             instance_offset, batch_offset, sums):
    """Per-(sample, channel) coefficients of dx and the small gradients (stat-sized).

    Returns `(slopes, units, offset, dγ, dβ, dv, d batch_variance)`, with
    `dx = γ·dy/den·(R ? instance/den : 1) + Σ slope·((x − origin)·unit) − offset`
    over the instance and the batch term. Each unit is 1, or 1/root of its
    statistic where that is above `_LARGE_ROOT` (`_unit`): the slope of x of
    scale 1e30 is of order 1e-60, below float32, that of `(x − origin)·unit` is not.
    """
    g, v = _vector(gamma, channels_last), _vector(v, channels_last)
    sum_dy, sum_p = sums[:2]
    # ∂L/∂(instance statistic); B0 gets Σ_R P from the two sums it needs anyway.
    if kind == "b0":
        sum_p_right_x_den, sum_p_right_den = sums[2:]
        sum_p_right = v * sum_p_right_x_den + instance * sum_p_right_den
        dinstance = -g * sum_p_right_den
    elif kind == "b1":
        sum_p_right = sums[2]
        dinstance = -g * sum_p_right / instance
    else:
        sum_p_right = sums[2]
        dinstance = -g * sums[3]
    # ∂σ/∂statistic · ∂statistic/∂x = 1/(2σ) · 2(x − centre)/S.
    instance_unit, batch_unit = _unit(instance), _unit(batch_std)
    instance_coefficient = dinstance / count / (instance * instance_unit)
    # ∂L/∂σ_b from the elements where σ_b won the max.
    dbatch_std = -g / batch_std * _batch_sum(sum_p - sum_p_right)
    dvariance = dbatch_std / (2.0 * batch_std)
    if training:
        # 2·∂L/∂variance/(S·N) = ∂L/∂σ_b/(σ_b·S·N), over `unit`.
        batch_coefficient = dbatch_std / (count * batch) / (batch_std * batch_unit)
    else:
        batch_coefficient = tf.zeros_like(dvariance)
    slopes = (instance_coefficient, batch_coefficient)
    offset = (instance_coefficient * (instance_offset * instance_unit)
              + batch_coefficient * (batch_offset * batch_unit))
    dv = -_channel_sum(g * sum_p_right_x_den) if kind == "b0" else tf.zeros_like(gamma)
    return (slopes, (instance_unit, batch_unit), offset, _channel_sum(sum_p), _channel_sum(sum_dy), dv,
            tf.reshape(dvariance, [-1]))


#: Roots above this make the gradients' slopes per unit of (x − centre)/root (see `_unit`).
_LARGE_ROOT = 2.0**40


def _unit(root):
    """1, or `1/root` where `root` is above `_LARGE_ROOT` (stat-sized).

    The gradient of a statistic with root σ passes `c·(x − centre)` to x with
    c of order 1/σ²: below float32 for σ above ~1e19. Gradients take it as
    `(c/unit)·((x − centre)·unit)` instead; for ordinary inputs unit is 1.
    """
    return tf.where(root > _LARGE_ROOT, 1.0 / root, tf.ones_like(root))


def _b_backward_dx(kind, channels_last, x4, dy4, gamma, v, instance, batch_std, slopes, units, origin, offset):
    right = _right_branch(kind, x4, _vector(v, channels_last), instance)
    den = tf.maximum(batch_std, right)
    direct = _vector(gamma, channels_last) * dy4 / den * tf.where(right > batch_std, instance / den, 1.0)
    # (x·unit − origin·unit), not (x − origin)·unit: XLA would reassociate slope·(t·unit) into
    # (slope·unit)·t, which is below float32 at scale 1e30. For ordinary inputs unit is 1.
    return (direct + slopes[0] * (x4 * units[0] - origin * units[0])
            + slopes[1] * (x4 * units[1] - origin * units[1]) - offset)


@_kernel(layout_index=1)
def _b_backward(kind, channels_last, training, x4, dy4, gamma, v, instance, batch_std, *offsets):
    """dx and the small gradients in one kernel: the sums, their coefficients, one pass writing dx."""
    (x4, dtype), (dy4, _) = _widened(x4), _widened(dy4)
    sums = _finish(channels_last, _b_backward_partials(kind, channels_last, x4, dy4, v, instance, batch_std))
    count, batch = _spatial_count(x4, channels_last), tf.cast(tf.shape(x4)[0], tf.float32)
    slopes, units, offset, *small = _b_gradient_coefficients(
        kind, channels_last, training, count, batch, gamma, v, instance, batch_std, *offsets, sums)
    dx4 = _b_backward_dx(kind, channels_last, x4, dy4, gamma, v, instance, batch_std, slopes, units, offsets[0],
                         offset)
    return [tf.cast(dx4, dtype)] + small


def b_series(kind, x, gamma, beta, v, batch_variance, epsilon, data_format):
    """EvoNorm-B0/B1/B2 (`kind` "b0", "b1", "b2") with a hand-written gradient.

    Args:
      x: activations, rank 3 to 5: float32, float16 or bfloat16 (statistics float32).
      gamma, beta, v: `[C]` vectors (`v` is ignored unless kind is "b0").
      batch_variance: the batch variance to use (`[C]` or broadcastable
        keepdims shape), or None to compute it from x (training); its
        gradient reaches x in both cases.
    Returns:
      `(y, batch_variance)`: y in x's dtype, the batch variance as a float32 `[C]`.
    """
    training = batch_variance is None
    if v is None:
        v = tf.ones_like(gamma)
    inputs = [x, gamma, beta, v] + ([] if training else [batch_variance])

    @tf.custom_gradient
    def op(*tensors):
        x, gamma, beta, v = tensors[:4]
        x4, channels_last = _blocked(x, data_format, B_BLOCK)
        given_variance = None if training else tf.reshape(tensors[4], [-1])
        y4, variance, *saved = _b_forward(kind, channels_last, epsilon, x4, gamma, beta, v, given_variance)

        def grad(dy, unused_dvariance):
            dy4 = tf.reshape(dy, tf.shape(x4))
            dx4, dgamma, dbeta, dv, dvariance = _b_backward(kind, channels_last, training, x4, dy4, gamma, v, *saved)
            grads = [tf.reshape(dx4, tf.shape(x)), dgamma, dbeta, dv]
            if not training:
                grads.append(tf.reshape(dvariance, tf.shape(tensors[4])))
            return grads

        return (tf.reshape(y4, tf.shape(x)), tf.stop_gradient(variance)), grad

    return op(*inputs)


# -- S-series -----------------------------------------------------------------------


def _s_output(channels_last, x4, v, scale, beta):
    return x4 * tf.sigmoid(_vector(v, channels_last) * x4) * scale + _vector(beta, channels_last)


@_kernel(layout_index=0)
def _s_forward(channels_last, groups, centered, epsilon, x4, gamma, beta, v):
    """y and `(inverse, origin, offset)`: ρ⁻¹ per (sample, channel), x − centre = (x − origin) − offset.

    One kernel: statistics, group statistics (per group, repeated over the
    channels by `_from_groups`), then one pass writing y (in x's dtype).
    """
    x4, dtype = _widened(x4)
    inverse, origin, offset = group_statistics(channels_last, groups, centered, epsilon, x4)
    y4 = _s_output(channels_last, x4, v, inverse * _vector(gamma, channels_last), beta)
    return tf.cast(y4, dtype), inverse, origin, offset


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


def _s_backward_partials(channels_last, with_v, x4, dy4, v):
    """`_block_sums` of dy and the terms the S-series gradient needs: dy·f, dy·x²·σ'.

    With v, dy·f and dy·x²·σ' are summed as the real and imaginary parts of
    one complex64 term: XLA computes an output element of a reduction at a
    time, so two real terms would each evaluate the sigmoid (10–25% slower).
    """
    s = tf.sigmoid(_vector(v, channels_last) * x4)
    dy_f = dy4 * x4 * s
    if not with_v:
        return _block_sums(channels_last, dy4, dy_f)
    # x·(1 − σ) before the product: x² alone overflows float32 where σ' is 0.
    pair = _block_sums(channels_last, tf.complex(dy4, tf.zeros_like(dy4)), tf.complex(dy_f, dy_f * (x4 * (1.0 - s))))
    axis = 2 if channels_last else 1
    second = tf.gather(pair, [1], axis=axis)
    return tf.concat([tf.math.real(pair), tf.math.imag(second)], axis)


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


def _s_backward_dx(channels_last, x4, dy4, v, scale, coefficient, unit, origin, offset):
    z = _vector(v, channels_last) * x4
    s = tf.sigmoid(z)
    return dy4 * scale * s * (1.0 + z * (1.0 - s)) + coefficient * ((x4 * unit - origin * unit) - offset * unit)


@_kernel(layout_index=0)
def _s_backward(channels_last, groups, with_v, x4, dy4, gamma, v, v_for_dx, inverse, origin, offset):
    """dx and the small gradients in one kernel: the sums, their coefficients, one pass writing dx.

    `v_for_dx` is `v` again, as a separate input: were both passes to compute
    σ(v·x) from the same input, XLA would evaluate it once and write it out
    at x's size for the second pass (one x-sized write and read more, slower
    than evaluating it twice).
    """
    (x4, dtype), (dy4, _) = _widened(x4), _widened(dy4)
    sums = _finish(channels_last, _s_backward_partials(channels_last, with_v, x4, dy4, v))
    count = _spatial_count(x4, channels_last)
    scale, coefficient, unit, *small = _s_gradient_coefficients(channels_last, groups, with_v, count, gamma,
                                                                 inverse, sums)
    dx4 = _s_backward_dx(channels_last, x4, dy4, v_for_dx, scale, coefficient, unit, origin, offset)
    return [tf.cast(dx4, dtype)] + small


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
        x4, channels_last = _blocked(x, data_format, S_BLOCK)
        y4, *saved = _s_forward(channels_last, groups, centered, epsilon, x4, gamma, beta, v)

        def grad(dy):
            dy4 = tf.reshape(dy, tf.shape(x4))
            dx4, dgamma, dbeta, dv = _s_backward(channels_last, groups, with_v, x4, dy4, gamma, v, v, *saved)
            return [tf.reshape(dx4, tf.shape(x)), dgamma, dbeta] + ([dv] if with_v else [])

        return tf.reshape(y4, tf.shape(x)), grad

    return op(*inputs)


# -- registration -------------------------------------------------------------------


def _float32(t):
    if t is None:
        return None
    t = tf.convert_to_tensor(t)
    return t if t.dtype == tf.float32 else tf.cast(t, tf.float32)


def _activations(x):
    """x as the kernels take it: float16, bfloat16 and float32 as they are, any other dtype as float32."""
    x = tf.convert_to_tensor(x)
    return x if x.dtype in KERNEL_DTYPES else tf.cast(x, tf.float32)


def _b_formula(kind):
    def evonorm_b(x, gamma, beta, *rest, epsilon=1e-5, data_format="channels_last"):
        v, batch_variance = rest if kind == "b0" else (None,) + tuple(rest)
        arguments.check_data_format(data_format)
        vectors = [_float32(t) for t in (gamma, beta, v, batch_variance)]
        return b_series(kind, _activations(x), *vectors, epsilon, data_format)[0]

    return evonorm_b


@register("evonorm_b0", "cpu")
def evonorm_b0(x, gamma, beta, v, batch_variance, epsilon=1e-5, data_format="channels_last"):
    return _b_formula("b0")(x, gamma, beta, v, batch_variance, epsilon=epsilon, data_format=data_format)


@register("evonorm_b1", "cpu")
def evonorm_b1(x, gamma, beta, batch_variance, epsilon=1e-5, data_format="channels_last"):
    return _b_formula("b1")(x, gamma, beta, batch_variance, epsilon=epsilon, data_format=data_format)


@register("evonorm_b2", "cpu")
def evonorm_b2(x, gamma, beta, batch_variance, epsilon=1e-5, data_format="channels_last"):
    return _b_formula("b2")(x, gamma, beta, batch_variance, epsilon=epsilon, data_format=data_format)


@register("evonorm_b_training", "cpu")
def evonorm_b_training(kind, x, gamma, beta, v, epsilon=1e-5, data_format="channels_last"):
    if kind not in ("b0", "b1", "b2"):
        raise ValueError(f"kind must be one of ['b0', 'b1', 'b2'], received {kind!r}")
    arguments.check_data_format(data_format)
    vectors = [_float32(t) for t in (gamma, beta, v)]
    return b_series(kind, _activations(x), *vectors, None, epsilon, data_format)


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

"""EvoNorm-B0, B1 and B2 on the cpu kernel path: one XLA kernel per direction.

The design (one launch per direction, blocked sums, one written pass each
way) is described in `evonorm_tf.kernels.cpu`; sums and layout are in
`evonorm_tf.kernels.cpu_sums`, dtypes in `evonorm_tf.kernels.cpu_dtypes`.

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
"""
import tensorflow as tf

from evonorm_tf import arguments, statistics
from evonorm_tf.kernels import native, register
from evonorm_tf.kernels.cpu_dtypes import _activations, _float32, _narrowed, _widened
from evonorm_tf.kernels.cpu_launch import compiling
from evonorm_tf.kernels.cpu_launch import kernel as _kernel
from evonorm_tf.kernels.cpu_sums import (
    B_BLOCK,
    _batch_sum,
    _blocked,
    _block_sums,
    _channel_sum,
    _finish,
    _spatial_axes,
    _spatial_count,
    _unit,
    _vector,
    channel_moments,
    combine_batch,
    mean_square,
)
from evonorm_tf.statistics import DOWNSCALE

__all__ = ["b_series", "evonorm_b0", "evonorm_b1", "evonorm_b2", "evonorm_b_training"]


def _right_branch(kind, x4, v, instance):
    if kind == "b0":
        return v * x4 + instance
    if kind == "b1":
        return (x4 + 1.0) * instance
    return instance - x4


@_kernel(layout_index=1, native_form=True)
def _b_forward(kind, channels_last, epsilon, x4, gamma, beta, v, given_variance):
    """y and what the backward pass needs: statistics, then one pass writing y, in one kernel.

    Returns `(y4, variance [C], instance, batch_std, origin, instance_offset,
    batch_offset, den, normalized)`: dx's centred terms are `(x − origin) −
    offset` (see `_b_backward`). With `given_variance` (inference) B1 and B2
    only reduce x². y has x's dtype; everything else is float32 (see
    `_widened`). The x-sized denominator and x/den are kept for the backward
    pass only as plain TensorFlow ops, else None: eagerly, where the backward
    pass runs on its own, recomputing them made forward+backward 7–9% slower
    over many shapes (`bench/shapes.py`; also keeping x − origin gained
    nothing more). XLA recomputes them inside its fused loops, for less than
    writing them out.
    """
    use_native = not compiling() and native.available(channels_last)
    if not use_native:
        x4, dtype = _widened(x4)
    count = _spatial_count(x4, channels_last)
    training = given_variance is None
    if kind == "b0" or training:
        shift, mean_delta, m2, m2_small = channel_moments(x4, channels_last, fused_norm=training)
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
    saved = (tf.reshape(variance, [-1]), instance, batch_std, origin, instance_offset, batch_offset)
    if use_native:
        return (native.b_output(kind, x4, v, instance, batch_std, gamma, beta),) + saved + (None, None)
    den = _denominator(kind, channels_last, x4, v, instance, batch_std)
    normalized = x4 / den
    if compiling():
        y4 = normalized * _vector(gamma, channels_last) + _vector(beta, channels_last)
        return (_narrowed(y4, dtype),) + saved + (None, None)
    return (_narrowed(_affine(channels_last, normalized, gamma, beta), dtype),) + saved + (den, normalized)


def fused_bn_ops():
    """Whether the plain forms may use TensorFlow's fused BN ops with ε 0: no GPU in sight.

    They stand for exact products and sums only with ε 0, and cuDNN takes ε
    of at least 1e-5. The cpu path runs on GPUs only where chosen by name.
    """
    return not tf.config.list_logical_devices("GPU")


def _affine(channels_last, t, gamma, beta):
    """`t·γ + β` as plain TensorFlow ops: channels_last, one inference-mode fused BN op (mean 0, variance 1, ε 0)."""
    if not (channels_last and fused_bn_ops()):
        return t * _vector(gamma, channels_last) + _vector(beta, channels_last)
    zeros, ones = tf.zeros_like(gamma), tf.ones_like(gamma)
    return tf.raw_ops.FusedBatchNormV3(x=t, scale=gamma, offset=beta, mean=zeros, variance=ones, epsilon=0.0,
                                       data_format="NHWC", is_training=False)[0]


def _denominator(kind, channels_last, x4, v, instance, batch_std):
    """max(σ_b, r), x-sized."""
    return tf.maximum(batch_std, _right_branch(kind, x4, _vector(v, channels_last), instance))


def _branches(kind, channels_last, x4, v, instance, batch_std):
    """`(den, R)`, x-sized: the denominator max(σ_b, r) and where r won."""
    right = _right_branch(kind, x4, _vector(v, channels_last), instance)
    return tf.maximum(batch_std, right), right > batch_std


def _b_backward_partials(kind, channels_last, x4, dy4, v, instance, batch_std):
    """`_block_sums` of dy and the terms the B-series gradient needs.

    B0: P, R·P·x/den, R·P/den; B1: P, R·P; B2: P, R·P, R·P/den (P = dy·x/den).
    """
    den, on_right = _branches(kind, channels_last, x4, v, instance, batch_std)
    p = dy4 * x4 / den
    p_right_den = tf.where(on_right, p / den, 0.0)
    if kind == "b0":
        return _block_sums(channels_last, dy4, p, p_right_den * x4, p_right_den)
    p_right = tf.where(on_right, p, 0.0)
    return _block_sums(channels_last, dy4, p, p_right, *([] if kind == "b1" else [p_right_den]))


def _plain_sums(kind, channels_last, x4, dy4, normalized, den, on_right, quotient):
    """The sums of `_b_backward_partials` as plain TensorFlow ops, from the forward pass's den and x/den.

    Σ dy and Σ P come summed over the batch too (`[1, ...]`), from one
    inference-mode fused BN gradient op (channels_last and `fused_bn_ops()`;
    it writes a third output, dy, unused), the others per (sample, channel).
    """
    if channels_last and fused_bn_ops():
        ones = tf.ones(tf.shape(x4)[-1:])
        zeros = tf.zeros_like(ones)
        _, sum_p, sum_dy = tf.raw_ops.FusedBatchNormGradV3(
            y_backprop=dy4, x=normalized, scale=ones, reserve_space_1=zeros, reserve_space_2=ones,
            reserve_space_3=zeros, epsilon=0.0, data_format="NHWC", is_training=False)[:3]
        sum_dy, sum_p = _vector(sum_dy, True), _vector(sum_p, True)
    else:
        axes = [0] + _spatial_axes(channels_last)
        sum_dy, sum_p = (tf.reduce_sum(t, axis=axes, keepdims=True) for t in (dy4, dy4 * normalized))
    if kind == "b0":
        p_right_den = tf.where(on_right, quotient * normalized, 0.0)  # R·dy·x/den²
        terms = [p_right_den * x4, p_right_den]
    else:
        p_right = tf.where(on_right, dy4 * normalized, 0.0)
        terms = [p_right] + ([] if kind == "b1" else [p_right / den])
    return [sum_dy, sum_p] + _finish(channels_last, _block_sums(channels_last, *terms))


def _b_gradient_coefficients(kind, channels_last, training, count, batch, gamma, v, instance, batch_std, origin,
                             instance_offset, batch_offset, sums, batch_summed=False):
    """Per-(sample, channel) coefficients of dx and the small gradients (stat-sized).

    Returns `(slopes, units, offset, dγ, dβ, dv, d batch_variance)`, with
    `dx = γ·dy/den·(R ? instance/den : 1) + Σ slope·((x − origin)·unit) − offset`
    over the instance and the batch term. Each unit is 1, or 1/root of its
    statistic where that is above `_LARGE_ROOT` (`_unit`): the slope of x of
    scale 1e30 is of order 1e-60, below float32, that of `(x − origin)·unit` is not.
    `batch_summed`: the first two sums, Σ dy and Σ P, are over the batch too (`_plain_sums`).
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
    not_right = sum_p - _batch_sum(sum_p_right) if batch_summed else _batch_sum(sum_p - sum_p_right)
    dbatch_std = -g / batch_std * not_right
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


def _b_backward_dx(kind, channels_last, x4, dy4, gamma, v, instance, batch_std, slopes, units, origin, offset,
                   branches=None, quotient=None):
    """dx; as plain TensorFlow ops from `branches` and `quotient` (dy/den) of `_b_backward`."""
    den, on_right = branches or _branches(kind, channels_last, x4, v, instance, batch_std)
    g = _vector(gamma, channels_last)
    if not compiling():
        # Plain TensorFlow ops (no reassociation, each op a pass over x): γ folded into the
        # branch factor, and one centred term where both units are 1, as for all ordinary inputs.
        direct = quotient * tf.where(on_right, (g * instance) / den, g)
        centred = x4 - origin
        ordinary = tf.reduce_all(tf.equal(units[0], 1.0)) & tf.reduce_all(tf.equal(units[1], 1.0))
        term = tf.cond(ordinary, lambda: (slopes[0] + slopes[1]) * centred,
                       lambda: slopes[0] * (centred * units[0]) + slopes[1] * (centred * units[1]))
        return direct + term - offset
    direct = g * dy4 / den * tf.where(on_right, instance / den, 1.0)
    # (x·unit − origin·unit), not (x − origin)·unit: XLA would reassociate slope·(t·unit) into
    # (slope·unit)·t, which is below float32 at scale 1e30. For ordinary inputs unit is 1.
    return (direct + slopes[0] * (x4 * units[0] - origin * units[0])
            + slopes[1] * (x4 * units[1] - origin * units[1]) - offset)


@_kernel(layout_index=1, plain_only=(12, 13), native_form=True)
def _b_backward(kind, channels_last, training, x4, dy4, gamma, v, instance, batch_std, origin, instance_offset,
                batch_offset, den, normalized):
    """dx and the small gradients in one kernel: the sums, their coefficients, one pass writing dx.

    `den`, `normalized`: the forward pass's den and x/den, or None (see `_b_forward`).
    """
    if not compiling() and native.available(channels_last):
        sums = native.b_backward_sums(kind, x4, dy4, v, instance, batch_std)
        count, batch = _spatial_count(x4, channels_last), tf.cast(tf.shape(x4)[0], tf.float32)
        slopes, units, offset, *small = _b_gradient_coefficients(
            kind, channels_last, training, count, batch, gamma, v, instance, batch_std, origin, instance_offset,
            batch_offset, sums)
        return [native.b_backward_dx(kind, x4, dy4, v, instance, batch_std, gamma, slopes, units, origin,
                                     offset)] + small
    (x4, dtype), (dy4, _) = _widened(x4), _widened(dy4)
    if compiling():
        # XLA recomputes the branches in each fused loop (cheaper than writing them out).
        branches = quotient = None
        sums = _finish(channels_last, _b_backward_partials(kind, channels_last, x4, dy4, v, instance, batch_std))
    else:
        # Plain TensorFlow ops (the shape-generic graph without native ops): each op is a pass over x.
        if den is None:
            den = _denominator(kind, channels_last, x4, v, instance, batch_std)
        if normalized is None:
            normalized = x4 / den
        branches = (den, den > batch_std)  # max(σ_b, r) > σ_b exactly where r > σ_b
        quotient = dy4 / den
        sums = _plain_sums(kind, channels_last, x4, dy4, normalized, den, branches[1], quotient)
    count, batch = _spatial_count(x4, channels_last), tf.cast(tf.shape(x4)[0], tf.float32)
    slopes, units, offset, *small = _b_gradient_coefficients(
        kind, channels_last, training, count, batch, gamma, v, instance, batch_std, origin, instance_offset,
        batch_offset, sums, batch_summed=branches is not None)
    dx4 = _b_backward_dx(kind, channels_last, x4, dy4, gamma, v, instance, batch_std, slopes, units, origin,
                         offset, branches, quotient)
    return [_narrowed(dx4, dtype)] + small


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


# -- registration -------------------------------------------------------------------


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

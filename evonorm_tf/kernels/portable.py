"""The portable kernel path: exact on TPU and GPU under XLA, at any shape.

Every statistic is a float reduction (`reduce_sum`/`reduce_mean` over a
reshaped group axis), every broadcast a reshape: XLA emits no dot, no integer
or complex op for the forward or the backward pass, so nothing is rounded to
bfloat16 or TF32 by a matmul unit. Statistics are float32 whatever the input
dtype, and centred (mean first, then squared deviations), which keeps them
exact when |mean| >> std. Group statistics are taken on the grouped view of x
(`[N, *spatial, G, C/G]`) and applied there, so no statistic is ever tiled
over channels. The B-series training pass takes the batch moments from the
per-(sample, channel) ones (Chan et al.'s combination): one pass over x for
both. Every mean of squares is also taken of the values scaled by a power of
two (`statistics.mean_squares`, a sibling reduction XLA fuses into the same
pass) and used where the plain one overflows float32: finite at any scale.
Gradients are TensorFlow's, which XLA fuses into the same reductions.

Nothing here is shape-specialised: a `tf.function` with `None` dimensions
traces once, and inside a compiled model the ops join the model's cluster.
"""

import tensorflow as tf

from evonorm_tf import arguments, statistics
from evonorm_tf.kernels import register

__all__ = []


def _float32(x):
    x = tf.convert_to_tensor(x)
    return x if x.dtype == tf.float32 else tf.cast(x, tf.float32)


def _layout(x, data_format):
    arguments.check_data_format(data_format)
    rank = x.shape.rank
    channels_last = data_format == "channels_last"
    spatial = list(range(1, rank - 1)) if channels_last else list(range(2, rank))
    return channels_last, spatial


def _channel(t, rank, channels_last):
    """A `[C]` vector (or an already broadcastable tensor) shaped to broadcast against x."""
    t = _float32(t)
    if t.shape.rank != 1 or channels_last:
        return t
    return tf.reshape(t, [-1] + [1] * (rank - 2))


def _affine(y, gamma, beta, rank, channels_last):
    return y * _channel(gamma, rank, channels_last) + _channel(beta, rank, channels_last)


# -- B-series -----------------------------------------------------------------------


def _instance_moments(x, spatial, channels_last):
    """Per-(sample, channel) means, as offsets from a shift, and variances (plain and scaled).

    The shift (x's first element in each channel) keeps the batch variance
    combined from these exact when channel means are far from 0. Variances
    come as `statistics.mean_squares` pairs: as is, and at `DOWNSCALE²`.
    """
    rank = x.shape.rank
    size = [1] * (rank - 1) + [-1] if channels_last else [1, -1] + [1] * (rank - 2)
    shift = tf.stop_gradient(tf.slice(x, [0] * rank, size))
    d = x - shift
    mean = tf.reduce_mean(d, axis=spatial, keepdims=True)
    return (mean,) + statistics.mean_squares(d - mean, spatial)


def _b_series(kind, x, gamma, beta, v, batch_variance, epsilon, data_format):
    """y of a B-series EvoNorm and the batch variance it used (keepdims, computed from x if None).

    Every statistic enters as its root `sqrt(stat + ε)` (`statistics.root`),
    finite at any scale of x; a computed batch variance beyond float32 is
    returned saturated (`statistics.saturated`).
    """
    x = _float32(x)
    channels_last, spatial = _layout(x, data_format)
    rank = x.shape.rank
    needs_moments = kind == "b0" or batch_variance is None
    if needs_moments:
        mean, variance, variance_small = _instance_moments(x, spatial, channels_last)
    if batch_variance is None:
        # Chan et al.: the batch variance is the mean instance variance plus the variance of the instance means.
        batch_mean = tf.reduce_mean(mean, axis=0, keepdims=True)
        spread, spread_small = statistics.mean_squares(mean - batch_mean, 0)
        statistic = tf.reduce_mean(variance, axis=0, keepdims=True) + spread
        small = tf.reduce_mean(variance_small, axis=0, keepdims=True) + spread_small
        batch_std = statistics.root(statistic, small, epsilon)
        batch_variance = statistics.saturated(statistic, small)
    else:
        batch_std = tf.sqrt(_channel(batch_variance, rank, channels_last) + epsilon)
    if kind == "b0":
        right = _channel(v, rank, channels_last) * x + statistics.root(variance, variance_small, epsilon)
    else:
        rms = statistics.root(*statistics.mean_squares(x, spatial), epsilon)
        right = (x + 1.0) * rms if kind == "b1" else rms - x
    y = _affine(x / tf.maximum(batch_std, right), gamma, beta, rank, channels_last)
    return y, batch_variance


@register("evonorm_b0", "portable")
def evonorm_b0(x, gamma, beta, v, batch_variance, epsilon=1e-5, data_format="channels_last"):
    return _b_series("b0", x, gamma, beta, v, batch_variance, epsilon, data_format)[0]


@register("evonorm_b1", "portable")
def evonorm_b1(x, gamma, beta, batch_variance, epsilon=1e-5, data_format="channels_last"):
    return _b_series("b1", x, gamma, beta, None, batch_variance, epsilon, data_format)[0]


@register("evonorm_b2", "portable")
def evonorm_b2(x, gamma, beta, batch_variance, epsilon=1e-5, data_format="channels_last"):
    return _b_series("b2", x, gamma, beta, None, batch_variance, epsilon, data_format)[0]


@register("evonorm_b_training", "portable")
def evonorm_b_training(kind, x, gamma, beta, v, epsilon=1e-5, data_format="channels_last"):
    if kind not in ("b0", "b1", "b2"):
        raise ValueError(f"kind must be one of ['b0', 'b1', 'b2'], received {kind!r}")
    y, variance = _b_series(kind, x, gamma, beta, v, None, epsilon, data_format)
    return y, tf.stop_gradient(tf.reshape(variance, [-1]))


# -- group statistics ----------------------------------------------------------------


def _grouped(x, groups, data_format):
    """x as `[N, *spatial, G, C/G]` or `[N, G, C/G, *spatial]`, and the axes of one group."""
    channels_last, spatial = _layout(x, data_format)
    rank = x.shape.rank
    channels = x.shape[-1] if channels_last else x.shape[1]
    arguments.check_groups_divide(groups, channels)
    shape = tf.shape(x)
    if channels_last:
        grouped = tf.reshape(x, tf.concat([shape[:-1], [groups, channels // groups]], 0))
        return grouped, spatial + [rank]
    grouped = tf.reshape(x, tf.concat([shape[:1], [groups, channels // groups], shape[2:]], 0))
    return grouped, list(range(2, rank + 1))


def _group_normalized(x, numerator, groups, epsilon, data_format, centered):
    """`numerator / sqrt(group statistic of x + ε)`, the statistic applied on the grouped view.

    The inverse root is `statistics.inverse_root` of a `statistics.mean_squares`
    pair: finite at any scale of x.
    """
    grouped, axes = _grouped(x, groups, data_format)
    if centered:
        mean = tf.reduce_mean(grouped, axis=axes, keepdims=True)
        statistic = statistics.mean_squares(grouped - mean, axes)
    else:
        mean, statistic = None, statistics.mean_squares(grouped, axes)
    numerator_grouped = tf.reshape(numerator(grouped, mean), tf.shape(grouped))
    return tf.reshape(numerator_grouped * statistics.inverse_root(*statistic, epsilon), tf.shape(x))


def _s_series(x, gamma, beta, v, groups, epsilon, data_format, centered):
    x = _float32(x)
    channels_last, _ = _layout(x, data_format)
    rank = x.shape.rank
    if v is None:
        numerator = x * tf.sigmoid(x)
    else:
        numerator = x * tf.sigmoid(_channel(v, rank, channels_last) * x)
    y = _group_normalized(x, lambda grouped, mean: numerator, groups, epsilon, data_format, centered)
    return _affine(y, gamma, beta, rank, channels_last)


@register("evonorm_s0", "portable")
def evonorm_s0(x, gamma, beta, v, groups, epsilon=1e-5, data_format="channels_last"):
    return _s_series(x, gamma, beta, v, groups, epsilon, data_format, centered=True)


@register("evonorm_s1", "portable")
def evonorm_s1(x, gamma, beta, groups, epsilon=1e-5, data_format="channels_last"):
    return _s_series(x, gamma, beta, None, groups, epsilon, data_format, centered=True)


@register("evonorm_s2", "portable")
def evonorm_s2(x, gamma, beta, groups, epsilon=1e-5, data_format="channels_last"):
    return _s_series(x, gamma, beta, None, groups, epsilon, data_format, centered=False)


@register("group_norm", "portable")
def group_norm(x, gamma, beta, groups, epsilon=1e-5, data_format="channels_last"):
    x = _float32(x)
    channels_last, _ = _layout(x, data_format)
    y = _group_normalized(x, lambda grouped, mean: grouped - mean, groups, epsilon, data_format, centered=True)
    return _affine(y, gamma, beta, x.shape.rank, channels_last)


@register("filter_response_norm", "portable")
def filter_response_norm(x, gamma, beta, epsilon=1e-5, data_format="channels_last"):
    x = _float32(x)
    channels_last, spatial = _layout(x, data_format)
    inverse = statistics.inverse_root(*statistics.mean_squares(x, spatial), epsilon)
    return _affine(x * inverse, gamma, beta, x.shape.rank, channels_last)

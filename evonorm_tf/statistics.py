"""Statistics used by EvoNorms and their baselines, as plain TensorFlow functions.

Every function takes an activation tensor `x` of rank 3, 4 or 5 laid out as
`channels_last` (`[N, *spatial, C]`) or `channels_first` (`[N, C, *spatial]`),
computes in float32 whatever `x`'s dtype, and returns a float32 tensor that
broadcasts against `x`:

| function | reduces over | returned shape (channels_last, rank 4) |
|---|---|---|
| `batch_variance`, `batch_moments` | N, H, W | `[1, 1, 1, C]` |
| `instance_variance`, `instance_second_moment` | H, W | `[N, 1, 1, C]` |
| `group_variance`, `group_second_moment`, `group_moments` | H, W, C/G | `[N, 1, 1, C]` |

Group statistics are repeated over the channels of their group, so a group
statistic can be used exactly like an instance statistic. All variances are
biased (population) variances computed in two passes (mean, then mean squared
deviation), which does not lose precision when |mean| >> std.

Squares of large values overflow float32 (largest value 3.4e38: |x| above
about 1.8e19 already). The layers therefore never use a statistic of squares
directly but its root `sqrt(statistic + ε)`, which is representable whenever
x is: `mean_squares` keeps every mean of squares twice, as is and at the
scale `DOWNSCALE²` (the values scaled by the power of two `DOWNSCALE` before
squaring), and `root` / `inverse_root` use the scaled one exactly where the
other overflows (`docs/robustness.md`). `batch_root`, `instance_root` and
`group_root` are the roots of the layers' statistics computed that way.

All functions are XLA-compilable (`tf.function(jit_compile=True)`).
"""

import tensorflow as tf

from evonorm_tf import arguments

__all__ = [
    "batch_moments",
    "batch_root",
    "batch_variance",
    "broadcast_channel_vector",
    "group_moments",
    "group_second_moment",
    "group_root",
    "group_variance",
    "instance_root",
    "instance_second_moment",
    "instance_variance",
    "inverse_root",
    "mean_squares",
    "root",
    "saturated",
]

#: Squares are also taken of the values times this power of two, for where float32 overflows.
DOWNSCALE = 2.0**-80
#: The largest finite float32.
FLOAT32_MAX = 3.4028234663852886e38


def _as_float32(x):
    x = tf.convert_to_tensor(x)
    return x if x.dtype == tf.float32 else tf.cast(x, tf.float32)


def _spatial_axes(x, data_format):
    rank = x.shape.rank
    if data_format == "channels_last":
        return list(range(1, rank - 1))
    return list(range(2, rank))


def broadcast_channel_vector(vector, rank, data_format):
    """Reshapes a `[C]` vector so it broadcasts against a rank-`rank` activation."""
    if data_format == "channels_last":
        return vector
    return tf.reshape(vector, [-1] + [1] * (rank - 2))


def batch_moments(x, data_format="channels_last", synchronized=False):
    """Per-channel mean and variance over the batch and spatial axes.

    Args:
      x: activations, rank 3 to 5.
      data_format: `"channels_last"` or `"channels_first"`.
      synchronized: if True, the statistics are those of the concatenation of
        the batches of all replicas of the current `tf.distribute` strategy
        (an all-reduce of per-replica counts, means and squared deviations).

    Returns:
      `(mean, variance)`, float32, keepdims shape (`[1, 1, 1, C]` for NHWC).
    """
    arguments.check_data_format(data_format)
    x = _as_float32(x)
    axes = [0] + _spatial_axes(x, data_format)
    mean, variance = tf.nn.moments(x, axes=axes, keepdims=True)
    if not synchronized:
        return mean, variance
    replica_context = tf.distribute.get_replica_context()
    if replica_context is None or replica_context.num_replicas_in_sync == 1:
        return mean, variance
    # Parallel (Chan et al.) combination in two all-reduces: first the global
    # mean, then the squared deviations about it. Exact, no E[x²]−E[x]² cancellation.
    count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), axes)), tf.float32)
    total_count, weighted_mean = replica_context.all_reduce(
        tf.distribute.ReduceOp.SUM, [count, count * mean]
    )
    global_mean = weighted_mean / total_count
    local_squares = count * (variance + tf.square(mean - global_mean))
    global_squares = replica_context.all_reduce(tf.distribute.ReduceOp.SUM, local_squares)
    return global_mean, global_squares / total_count


def batch_variance(x, data_format="channels_last", synchronized=False):
    """Per-channel variance over (N, *spatial): `s2_bhw(x)`. See `batch_moments`."""
    return batch_moments(x, data_format, synchronized)[1]


def instance_variance(x, data_format="channels_last"):
    """Per-sample, per-channel variance over the spatial axes: `s2_hw(x)`."""
    arguments.check_data_format(data_format)
    x = _as_float32(x)
    return tf.nn.moments(x, axes=_spatial_axes(x, data_format), keepdims=True)[1]


def instance_second_moment(x, data_format="channels_last"):
    """Per-sample, per-channel mean of x² over the spatial axes: `mu2_hw(x)`."""
    arguments.check_data_format(data_format)
    x = _as_float32(x)
    return tf.reduce_mean(tf.square(x), axis=_spatial_axes(x, data_format), keepdims=True)


def _grouped(x, groups, data_format):
    """Splits the channel axis into `[groups, C // groups]`.

    Returns the grouped tensor, the axes to reduce (spatial + within-group)
    and a function mapping a keepdims group statistic back to a per-channel
    statistic that broadcasts against `x`.
    """
    rank = x.shape.rank
    channels = x.shape[-1] if data_format == "channels_last" else x.shape[1]
    arguments.check_groups_divide(groups, channels)
    shape = tf.shape(x)
    if data_format == "channels_last":
        grouped_shape = tf.concat([shape[:-1], [groups, channels // groups]], axis=0)
        axes = list(range(1, rank - 1)) + [rank]
        stat_shape = [-1] + [1] * (rank - 2) + [groups, 1]
        per_channel_shape = [-1] + [1] * (rank - 2) + [channels]
    else:
        grouped_shape = tf.concat([shape[:1], [groups, channels // groups], shape[2:]], axis=0)
        axes = list(range(2, rank + 1))
        stat_shape = [-1, groups, 1] + [1] * (rank - 2)
        per_channel_shape = [-1, channels] + [1] * (rank - 2)

    def to_channels(statistic):
        statistic = tf.reshape(statistic, stat_shape)
        multiples = [1] * (rank + 1)
        multiples[-1 if data_format == "channels_last" else 2] = channels // groups
        return tf.reshape(tf.tile(statistic, multiples), per_channel_shape)

    return tf.reshape(x, grouped_shape), axes, to_channels


def group_moments(x, groups, data_format="channels_last"):
    """Per-sample mean and variance over (*spatial, C/G) for G channel groups.

    Returns `(mean, variance)`, float32, each repeated over the channels of its
    group (`[N, 1, 1, C]` for NHWC).
    """
    arguments.check_data_format(data_format)
    x = _as_float32(x)
    grouped, axes, to_channels = _grouped(x, groups, data_format)
    mean, variance = tf.nn.moments(grouped, axes=axes, keepdims=True)
    return to_channels(mean), to_channels(variance)


def group_variance(x, groups, data_format="channels_last"):
    """Per-sample variance over (*spatial, C/G): `s2_hwg(x)`, repeated per channel."""
    return group_moments(x, groups, data_format)[1]


def group_second_moment(x, groups, data_format="channels_last"):
    """Per-sample mean of x² over (*spatial, C/G): `mu2_hwg(x)`, repeated per channel."""
    arguments.check_data_format(data_format)
    x = _as_float32(x)
    grouped, axes, to_channels = _grouped(x, groups, data_format)
    return to_channels(tf.reduce_mean(tf.square(grouped), axis=axes, keepdims=True))


# -- roots of statistics of squares, at any scale ----------------------------------------


def mean_squares(d, axis):
    """`(mean of d², mean of (d·DOWNSCALE)²)` over `axis`, keepdims, float32.

    The first is inf where float32 overflows; the second, `DOWNSCALE²` times
    the first, is finite for every finite d. The second is used only where
    the first overflowed (`root`), i.e. where the squares sum to more than
    3.4e38: values below about 45 in magnitude, which add nothing to it,
    are negligible there.
    """
    d = _as_float32(d)
    plain = tf.reduce_mean(tf.square(d), axis=axis, keepdims=True)
    small = tf.reduce_mean(tf.square(d * DOWNSCALE), axis=axis, keepdims=True)
    return plain, small


def root(statistic, small, epsilon):
    """`sqrt(statistic + ε)`; where `statistic` overflowed, `sqrt(small)/DOWNSCALE`.

    `small` is the statistic of the values scaled by `DOWNSCALE` (see
    `mean_squares`), used only where `statistic` is inf; there ε is below
    float32's resolution of the result. Gradients flow
    through the branch used (the other is fed a harmless value, so no NaN).
    """
    overflow = tf.logical_not(tf.math.is_finite(statistic))
    plain = tf.sqrt(tf.where(overflow, tf.zeros_like(statistic), statistic) + epsilon)
    scaled = tf.sqrt(tf.where(overflow, small, tf.ones_like(small))) * (1.0 / DOWNSCALE)
    return tf.where(overflow, scaled, plain)


def inverse_root(statistic, small, epsilon):
    """`1 / sqrt(statistic + ε)`, as `root` where `statistic` overflowed."""
    overflow = tf.logical_not(tf.math.is_finite(statistic))
    plain = tf.math.rsqrt(tf.where(overflow, tf.zeros_like(statistic), statistic) + epsilon)
    scaled = tf.math.rsqrt(tf.where(overflow, small, tf.ones_like(small))) * DOWNSCALE
    return tf.where(overflow, scaled, plain)


def saturated(statistic, small):
    """`statistic` where finite, else `small/DOWNSCALE²` clipped to `FLOAT32_MAX`.

    What the B-series keep as the batch variance for their moving average
    when it is beyond float32 (`docs/robustness.md`).
    """
    # Two steps with a minimum between, so that no graph optimizer folds 2⁸⁰·2⁸⁰ (inf) into one constant.
    restored = tf.minimum(small * (1.0 / DOWNSCALE), FLOAT32_MAX * DOWNSCALE) * (1.0 / DOWNSCALE)
    return tf.where(tf.math.is_finite(statistic), statistic, restored)


def _centered_mean_squares(x, axes, centered):
    x = _as_float32(x)
    if centered:
        x = x - tf.stop_gradient(tf.reduce_mean(x, axis=axes, keepdims=True))
    return mean_squares(x, axes)


def batch_root(x, epsilon, data_format="channels_last"):
    """`(sqrt(s2_bhw + ε), s2_bhw saturated)` per channel, keepdims, at any scale of x."""
    arguments.check_data_format(data_format)
    x = _as_float32(x)
    statistic, small = _centered_mean_squares(x, [0] + _spatial_axes(x, data_format), True)
    return root(statistic, small, epsilon), saturated(statistic, small)


def instance_root(x, epsilon, data_format="channels_last", centered=True, inverse=False):
    """`sqrt(s2_hw + ε)` (`centered`) or `sqrt(mu2_hw + ε)`, per sample and channel, at any scale.

    `inverse=True` gives `1 / sqrt(...)` (`inverse_root`: its gradient, unlike
    that of `1 / root`, has no factor 1/root², which is below float32 at scale 1e30).
    """
    arguments.check_data_format(data_format)
    x = _as_float32(x)
    statistic = _centered_mean_squares(x, _spatial_axes(x, data_format), centered)
    return (inverse_root if inverse else root)(*statistic, epsilon)


def group_root(x, groups, epsilon, data_format="channels_last", centered=True, inverse=False):
    """`sqrt(s2_hwg + ε)` (`centered`) or `sqrt(mu2_hwg + ε)` per sample and group, at any scale.

    Repeated over the channels of each group; `inverse=True` gives `1 / sqrt(...)`.
    """
    arguments.check_data_format(data_format)
    x = _as_float32(x)
    grouped, axes, to_channels = _grouped(x, groups, data_format)
    statistic, small = _centered_mean_squares(grouped, axes, centered)
    return to_channels((inverse_root if inverse else root)(statistic, small, epsilon))

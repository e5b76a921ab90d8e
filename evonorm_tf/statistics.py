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

All functions are XLA-compilable (`tf.function(jit_compile=True)`).
"""

import tensorflow as tf

from evonorm_tf import arguments

__all__ = [
    "batch_moments",
    "batch_variance",
    "broadcast_channel_vector",
    "group_moments",
    "group_second_moment",
    "group_variance",
    "instance_second_moment",
    "instance_variance",
]


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

"""Compiles a search-space graph (`space.Graph`) to TensorFlow ops.

`graph_forward` is a pure function: activations in, the graph's output (before
`·γ + β`) and the batch statistics it computed out. The layers in
`evonorm_tf.search.layers` own the weights (`v0`, `v1`, γ, β and one moving
statistic per batch-aggregation node) and call it.

Batch aggregations (`*_bwh`) behave like BatchNorm's statistics: in
training they use the current batch (optionally all replicas, `synchronized`)
and report it so the layer can update a moving average; in inference they read
the moving average (`moving[index]`, a `[C]` vector):

| op | training | inference | moving average of | initial value |
|---|---|---|---|---|
| `mean_bwh(u)` | μ_bwh(u) | m | μ_bwh(u) | 0 |
| `mean_sq_bwh(u)` | μ_bwh(u²) + ε | m + ε | μ_bwh(u²) | 1 |
| `std_bwh(u)` | sqrt(σ²_bwh(u) + ε) | sqrt(m + ε) | σ²_bwh(u) | 1 |

so `std_bwh` with its moving variance is exactly EvoNorm-B0's batch term.
Every other op computes the same function in training and inference.
Everything is computed in float32 and is XLA-compilable.
"""

import tensorflow as tf

from evonorm_tf import arguments, statistics
from evonorm_tf.search import space

# Smallest magnitude fed to ln and sqrt: keeps slog(0) = ssqrt(0) = 0 with finite gradients.
_TINY = 1e-30

MOVING_INITIAL_VALUE = {"mean": "zeros", "mean_sq": "ones", "std": "ones"}


def _float32(x):
    x = tf.convert_to_tensor(x)
    return x if x.dtype == tf.float32 else tf.cast(x, tf.float32)


def signed_log(x):
    """`sign(x)·ln|x|`, 0 at x = 0."""
    return tf.sign(x) * tf.math.log(tf.maximum(tf.abs(x), _TINY))


def signed_sqrt(x):
    """`sign(x)·sqrt|x|`, 0 at x = 0."""
    return tf.sign(x) * tf.sqrt(tf.maximum(tf.abs(x), _TINY))


ELEMENTWISE = {
    "add": tf.add,
    "mul": tf.multiply,
    "div": tf.divide,
    "max": tf.maximum,
    "neg": tf.negative,
    "sigmoid": tf.sigmoid,
    "tanh": tf.tanh,
    "exp": tf.exp,
    "log": signed_log,
    "abs": tf.abs,
    "square": tf.square,
    "sqrt": signed_sqrt,
}


def _axes(x, axes, data_format):
    rank = x.shape.rank
    spatial = list(range(1, rank - 1)) if data_format == "channels_last" else list(range(2, rank))
    channel = rank - 1 if data_format == "channels_last" else 1
    return {"wh": spatial, "whc": sorted(spatial + [channel])}[axes]


def _mean_and_variance(u, axes, groups, data_format, synchronized):
    """Keepdims mean and variance of u over one of `space.AXES`."""
    if axes == "bwh":
        return statistics.batch_moments(u, data_format, synchronized)
    if axes == "whg":
        return statistics.group_moments(u, groups, data_format)
    return tf.nn.moments(u, axes=_axes(u, axes, data_format), keepdims=True)


def aggregate(u, op, epsilon, groups, data_format, synchronized=False):
    """One aggregation op in training mode: `(value, raw batch statistic or None)`."""
    if op.statistic == "mean_sq" and op.axes == "wh":
        raw = statistics.instance_second_moment(u, data_format)
    elif op.statistic == "mean_sq" and op.axes == "whg":
        raw = statistics.group_second_moment(u, groups, data_format)
    elif op.statistic == "std" and op.axes == "wh":
        raw = statistics.instance_variance(u, data_format)
    elif op.statistic == "std" and op.axes == "whg":
        raw = statistics.group_variance(u, groups, data_format)
    else:
        mean, variance = _mean_and_variance(u, op.axes, groups, data_format, synchronized)
        raw = {"mean": mean, "mean_sq": variance + tf.square(mean), "std": variance}[op.statistic]
    return _finish(raw, op.statistic, epsilon), (raw if op.uses_batch else None)


def _finish(raw, statistic, epsilon):
    if statistic == "mean":
        return raw
    if statistic == "mean_sq":
        return raw + epsilon
    return tf.sqrt(raw + epsilon)


def batch_nodes(graph):
    """`{node index: statistic}` of the graph's batch-aggregation nodes."""
    return {
        space.NUM_INITIAL + offset: space.OPS[node.op].statistic
        for offset, node in enumerate(graph.nodes)
        if space.OPS[node.op].uses_batch
    }


def graph_forward(graph, x, v0=None, v1=None, training=True, moving=None, epsilon=1e-5,
                  groups=None, data_format="channels_last", synchronized=False):
    """Evaluates `graph` on activations `x` (output before `·γ + β`).

    Args:
      graph: a `space.Graph`.
      x: activations of rank 3 to 5 (computed in float32).
      v0, v1: per-channel `[C]` vectors (needed if the graph reads them).
      training: Python bool; selects batch or moving statistics for `*_bwh` ops.
      moving: `{node index: [C] moving statistic}` for inference
        (see the module docstring); required when `training` is False and the
        graph has batch aggregations.
      epsilon: the ε of `mean_sq` and `std` aggregations.
      groups: number of channel groups of `*_whg` ops.
      data_format: `"channels_last"` or `"channels_first"`.
      synchronized: batch statistics over all replicas of a `tf.distribute` strategy.

    Returns:
      `(output, batch_statistics)`: float32 output of x's shape and, in
      training, `{node index: [C] raw batch statistic}` for the moving averages.
    """
    arguments.check_data_format(data_format)
    x = _float32(x)
    rank = x.shape.rank

    def initial(name, vector):
        if vector is None:
            raise ValueError(f"graph {graph.canonical!r} reads {name} but received {name}=None")
        vector = statistics.broadcast_channel_vector(_float32(vector), rank, data_format)
        return tf.broadcast_to(vector, tf.shape(x))

    used = graph.used_initial_nodes()
    values = [
        x,
        tf.zeros_like(x) if "zero" in used else None,
        initial("v0", v0) if "v0" in used else None,
        initial("v1", v1) if "v1" in used else None,
    ]
    collected = {}
    for offset, node in enumerate(graph.nodes):
        index = space.NUM_INITIAL + offset
        op = space.OPS[node.op]
        inputs = [values[i] for i in node.inputs]
        if not op.is_aggregation:
            values.append(ELEMENTWISE[op.name](*inputs))
        elif op.uses_batch and not training:
            if moving is None or index not in moving:
                raise ValueError(
                    f"inference with batch aggregation node {index} ({op.name}) needs its "
                    f"moving statistic, received moving={moving!r}"
                )
            statistic = statistics.broadcast_channel_vector(_float32(moving[index]), rank, data_format)
            values.append(tf.broadcast_to(_finish(statistic, op.statistic, epsilon), tf.shape(x)))
        else:
            value, raw = aggregate(inputs[0], op, epsilon, groups, data_format, synchronized)
            if raw is not None:
                collected[index] = tf.reshape(raw, [-1])
            values.append(tf.broadcast_to(value, tf.shape(x)))
    return values[-1], collected

"""A searched graph as a norm-act layer, for both front-ends.

    import evonorm_tf
    layer = evonorm_tf.get_norm_act("graph:sigmoid(0);mul(0,4);std_whg(0);div(5,6)", groups=8)

`GraphNormAct` (Keras 3) and `TfKerasGraphNormAct` (tf_keras) take the same
shared signature as every other norm-act layer plus `graph`, so any model of
the package accepts a searched layer through `get_norm_act("graph:<canonical>")`.
"""

import keras
import tensorflow as tf
import tf_keras

from evonorm_tf import arguments, formulas
from evonorm_tf import layers as keras3_layers
from evonorm_tf.norm_act_core import NormActCore
from evonorm_tf.search import compiler, space
from evonorm_tf.tf_keras import layers as tf_keras_layers

GRAPH_PREFIX = "graph:"

__all__ = ["GRAPH_PREFIX", "GraphNormAct", "GraphNormActCore", "TfKerasGraphNormAct", "parse_graph"]


def parse_graph(graph):
    """A `space.Graph` from a `Graph`, a canonical string, or a `graph:`-prefixed name."""
    if isinstance(graph, space.Graph):
        return graph
    if isinstance(graph, space.Genome):
        return graph.to_graph()
    if not isinstance(graph, str):
        raise TypeError(f"graph must be a canonical string or space.Graph, received {graph!r}")
    text = graph.strip()
    if text.lower().startswith(GRAPH_PREFIX):
        text = text[len(GRAPH_PREFIX):]
    return space.Graph.from_string(text)


class GraphNormActCore(NormActCore):
    """A searched layer: `graph(x) · γ + β` (see `evonorm_tf.search.space`).

    Args:
      graph: the canonical graph string (with or without the `graph:` prefix)
        or a `space.Graph`.
      nonlinearity, epsilon, gamma/beta initializers, regularizers,
        constraints, data_format: as every norm-act layer. With
        `nonlinearity=False` the layer is only `x·γ + β`.
      groups, group_size: channel grouping of `*_whg` aggregations (default
        32 groups); only checked if the graph has a group aggregation.
      momentum: momentum of the moving statistic of each batch aggregation
        (`*_bwh`), as EvoNorm-B0's `moving_variance`. Default 0.9.
      synchronized: batch aggregations over all replicas. Default False.
      v0_initializer, v1_initializer: initializers of the trainable
        per-channel initial nodes (default zeros and ones, as in the paper).

    Call arguments:
      training: batch aggregations use the batch (and update their moving
        statistics) in training, the moving statistics in inference.

    Reference: Liu, Brock, Simonyan, Le. Evolving Normalization-Activation
    Layers. arXiv:2004.02967.
    """

    def __init__(self, graph, groups=32, group_size=None, momentum=0.9, synchronized=False,
                 v0_initializer="zeros", v1_initializer="ones", **kwargs):
        super().__init__(**kwargs)
        self.graph = parse_graph(graph)
        self.groups, self.group_size = arguments.check_grouping(groups, group_size)
        self.momentum = arguments.check_momentum(momentum)
        self.synchronized = arguments.check_bool("synchronized", synchronized)
        self.v0_initializer = self._keras.initializers.get(v0_initializer)
        self.v1_initializer = self._keras.initializers.get(v1_initializer)

    def _build_weights(self, channels):
        super()._build_weights(channels)
        self.resolved_groups = None
        self.v0 = self.v1 = None
        # Parallel lists (not a dict keyed by int: tf_keras checkpoints need str keys).
        self.moving_nodes = []
        self.moving_statistics = []
        if not self.nonlinearity:
            return
        if any(space.OPS[node.op].axes == "whg" for node in self.graph.nodes):
            self.resolved_groups = arguments.resolve_groups(self.groups, self.group_size, channels)
        used = self.graph.used_initial_nodes()
        if "v0" in used:
            self.v0 = self._add_channel_weight("v0", channels, self.v0_initializer)
        if "v1" in used:
            self.v1 = self._add_channel_weight("v1", channels, self.v1_initializer)
        for index, statistic in compiler.batch_nodes(self.graph).items():
            self.moving_nodes.append(index)
            self.moving_statistics.append(self._add_channel_weight(
                f"moving_{statistic}_{index}", channels,
                compiler.MOVING_INITIAL_VALUE[statistic], trainable=False,
            ))

    def _normalize(self, x, training):
        if not self.nonlinearity:
            return formulas.affine(x, self.gamma, self.beta, self.data_format)
        weights = dict(zip(self.moving_nodes, self.moving_statistics))
        moving = {index: tf.convert_to_tensor(weight) for index, weight in weights.items()}
        y, batch_statistics = compiler.graph_forward(
            self.graph, x, self.v0, self.v1, training=training, moving=moving,
            epsilon=self.epsilon, groups=self.resolved_groups, data_format=self.data_format,
            synchronized=self.synchronized,
        )
        for index, statistic in batch_statistics.items():
            weight = weights[index]
            weight.assign(self.momentum * weight + (1.0 - self.momentum) * statistic)
        return formulas.affine(y, self.gamma, self.beta, self.data_format)

    def formula(self):
        return self.graph.formula()

    def get_config(self):
        serialize = self._keras.initializers.serialize
        config = {
            "graph": self.graph.canonical,
            "groups": self.groups,
            "group_size": self.group_size,
            "momentum": self.momentum,
            "synchronized": self.synchronized,
            "v0_initializer": serialize(self.v0_initializer),
            "v1_initializer": serialize(self.v1_initializer),
        }
        return {**super().get_config(), **config}


# The front-ends' weight helpers are reused so searched layers store weights
# exactly as the hand-written EvoNorms do (float32, per-replica moving statistics).
@keras.saving.register_keras_serializable(package="evonorm_tf")
class GraphNormAct(keras3_layers._Keras3Weights, GraphNormActCore, keras.layers.Layer):
    __doc__ = GraphNormActCore.__doc__


@tf_keras.utils.register_keras_serializable(package="evonorm_tf")
class TfKerasGraphNormAct(tf_keras_layers._TfKerasWeights, GraphNormActCore, tf_keras.layers.Layer):
    __doc__ = GraphNormActCore.__doc__

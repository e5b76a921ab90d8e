"""`get_norm_act(name, **kwargs)`: one factory over the registry, for Keras 3.

Models never branch on the normalization type; they call the factory of
their front-end (`evonorm_tf.get_norm_act` for Keras 3,
`evonorm_tf.tf_keras.get_norm_act` for tf_keras) with a name from
`NORM_ACT_NAMES`, or a name an extension registered (`"graph:<canonical>"`
once `evonorm_tf.search` is imported).
"""

from evonorm_tf import layers, registry  # noqa: F401  (layers registers the Keras 3 front-end)

#: The built-in norm-act names, in the registry's order.
NORM_ACT_NAMES = registry.names()


def get_norm_act(name, /, **kwargs):
    """Builds the Keras 3 norm-act layer `name` with `kwargs`.

    Args:
      name: one of `NORM_ACT_NAMES` (case-insensitive), or a name an extension
        registered (`"graph:<canonical>"`, a searched layer, after
        `import evonorm_tf.search`).
      **kwargs: the layer's arguments (`nonlinearity`, `epsilon`,
        initializers, `data_format`; `momentum`, `synchronized` for BN and
        B-series; `groups`/`group_size` for GN and S-series).

    Raises:
      ValueError: for an unknown name, listing the valid ones.
    """
    return registry.build(name, "keras", **kwargs)


# -- names kept for the modules written against the earlier tables ---------------------------


def table_for(front_end_module):
    """The name → class table of a front-end module (`layers` or `tf_keras.layers`)."""
    front_end = "keras" if front_end_module is layers else "tf_keras"
    return {name: registry.layer_class(name, front_end) for name in registry.names()}


def lookup(table, name):
    """The class registered under `name` (case-insensitive) in `table`."""
    key = registry.spec(name).name
    return table[key]


def accepted_arguments(table, name):
    """The keyword arguments a norm-act layer accepts (its own and its bases')."""
    return registry.class_arguments(lookup(table, name))


class_arguments = registry.class_arguments


def is_graph_name(name):
    """True for `"graph:<canonical>"`, the name of a searched layer (`evonorm_tf.search`)."""
    return isinstance(name, str) and name.strip().lower().startswith("graph:")


KERAS3_TABLE = table_for(layers)

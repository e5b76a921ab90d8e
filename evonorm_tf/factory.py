"""`get_norm_act(name, **kwargs)`: one name → layer table for every model.

Models never branch on the normalization type; they call the factory of
their front-end (`evonorm_tf.get_norm_act` for Keras 3,
`evonorm_tf.tf_keras.get_norm_act` for tf_keras) with a name from
`NORM_ACT_NAMES`.
"""

import inspect

from evonorm_tf import layers

NORM_ACT_NAMES = (
    "bn_relu",
    "bn_silu",
    "gn_relu",
    "gn_silu",
    "frn_tlu",
    "evonorm_b0",
    "evonorm_b1",
    "evonorm_b2",
    "evonorm_s0",
    "evonorm_s1",
    "evonorm_s2",
)


def table_for(module):
    """The name → class table of a front-end module (`layers` or `tf_keras.layers`)."""
    classes = (
        module.BatchNormReLU, module.BatchNormSiLU, module.GroupNormReLU, module.GroupNormSiLU,
        module.FilterResponseNormTLU, module.EvoNormB0, module.EvoNormB1, module.EvoNormB2,
        module.EvoNormS0, module.EvoNormS1, module.EvoNormS2,
    )
    return dict(zip(NORM_ACT_NAMES, classes))


def lookup(table, name):
    """The class registered under `name` (case-insensitive) in `table`."""
    if not isinstance(name, str):
        raise TypeError(f"norm-act name must be a string, received {name!r}")
    key = name.strip().lower()
    if key not in table:
        raise ValueError(
            f"unknown norm-act name {name!r}; valid names: {', '.join(sorted(table))}"
        )
    return table[key]


def accepted_arguments(table, name):
    """The keyword arguments a norm-act layer accepts (its own and its bases')."""
    return class_arguments(lookup(table, name))


def class_arguments(layer_class):
    """The keyword arguments `layer_class` accepts in its own and its bases' `__init__`."""
    names = set()
    for klass in layer_class.__mro__:
        if "__init__" in vars(klass):
            names.update(
                parameter.name
                for parameter in inspect.signature(klass.__init__).parameters.values()
                if parameter.kind is parameter.KEYWORD_ONLY or parameter.kind is parameter.POSITIONAL_OR_KEYWORD
            )
    names.discard("self")
    return names


def is_graph_name(name):
    """True for `"graph:<canonical>"`, the name of a searched layer (`evonorm_tf.search`)."""
    return isinstance(name, str) and name.strip().lower().startswith("graph:")


KERAS3_TABLE = table_for(layers)


def get_norm_act(name, /, **kwargs):
    """Builds the Keras 3 norm-act layer `name` with `kwargs`.

    Args:
      name: one of `NORM_ACT_NAMES` (case-insensitive), or
        `"graph:<canonical>"` for a searched layer (`evonorm_tf.search`).
      **kwargs: the layer's arguments (`nonlinearity`, `epsilon`,
        initializers, `data_format`; `momentum`, `synchronized` for BN and
        B-series; `groups`/`group_size` for GN and S-series).

    Raises:
      ValueError: for an unknown name, listing the valid ones.
    """
    if is_graph_name(name):
        # A searched layer, `graph:<canonical>` (evonorm_tf.search); imported lazily.
        from evonorm_tf.search import layers as search_layers

        return search_layers.GraphNormAct(graph=name, **kwargs)
    return lookup(KERAS3_TABLE, name)(**kwargs)

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

"""One configured initializer, one fresh instance per weight.

A tf_keras initializer *instance* created without a seed returns the same
values every time it is called, so two weights built from one instance start
equal (tf_keras documents this; an `Orthogonal()` shared by BigGAN's γ and β
projections makes them identical at initialisation). `fresh_initializer`
rebuilds the initializer from its config for each weight, so unseeded copies
draw independently; a seeded initializer keeps being reproducible by giving
the weight with index k the seed `seed + k`.
"""

import tf_keras

__all__ = ["fresh_initializer"]


def fresh_initializer(initializer, index=0):
    """A new instance of `initializer` (a name, config dict or instance) for weight `index`.

    Args:
      initializer: anything `tf_keras.initializers.get` accepts.
      index: the weight's position among those built from `initializer`
        (added to the seed of a seeded initializer). Default 0.

    Returns:
      A new `tf_keras.initializers.Initializer` instance that shares no
      state with `initializer`.
    """
    if not isinstance(index, int) or index < 0:
        raise ValueError(f"index must be a non-negative int, received {index!r}")
    instance = tf_keras.initializers.get(initializer)
    if instance is None:
        raise ValueError(f"initializer must be an initializer, received {initializer!r}")
    config = instance.get_config()
    if config.get("seed") is not None:
        config["seed"] = int(config["seed"]) + index
    return type(instance).from_config(config)

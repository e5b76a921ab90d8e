"""Shared helpers of the layer tests: front-ends, seeded data, layers with random weights."""

import zlib

import numpy as np
import tensorflow as tf

import evonorm_tf
import evonorm_tf.tf_keras
import reference

FRONT_ENDS = {"keras3": evonorm_tf, "tf_keras": evonorm_tf.tf_keras}
NAMES = reference.ALL_NAMES
GROUPED = reference.S_SERIES + reference.GROUP_NORMS
BATCH_DEPENDENT = reference.B_SERIES + reference.BATCH_NORMS


def case_rng(*parts):
    """A generator seeded from the test case, stable across runs and processes."""
    return np.random.default_rng(zlib.crc32(repr(parts).encode()))


def random_shape(rng, rank, channels=None):
    """A small channels_last shape `[N, *spatial, C]` of the given rank."""
    batch = int(rng.integers(2, 4))
    spatial = [int(rng.integers(2, 5)) for _ in range(rank - 2)]
    if channels is None:
        channels = int(rng.choice([4, 6, 8]))
    return [batch] + spatial + [channels]


def random_input(rng, shape):
    """float32 data with a non-zero mean per channel (channels_last)."""
    offset = rng.uniform(0.3, 1.2, size=shape[-1]) * rng.choice([-1.0, 1.0], size=shape[-1])
    scale = rng.uniform(0.7, 1.5, size=shape[-1])
    return (rng.normal(size=shape) * scale + offset).astype(np.float32)


def weight_name(variable):
    """`gamma` for both Keras 3 (`gamma`) and tf_keras (`layer/gamma:0`) variables."""
    return variable.name.split("/")[-1].split(":")[0]


def weights_of(layer):
    return {weight_name(w): np.asarray(w.numpy(), dtype=np.float64) for w in layer.weights}


def randomize_weights(layer, rng):
    """Sets every weight of `layer` to non-trivial random values; returns them as a dict."""
    for variable in layer.weights:
        name = weight_name(variable)
        size = variable.shape
        if name == "gamma":
            value = rng.uniform(0.5, 1.5, size) * rng.choice([-1.0, 1.0], size)
        elif name in ("moving_variance",):
            value = rng.uniform(0.4, 2.0, size)
        elif name == "v":
            value = rng.uniform(-1.5, 1.5, size)
        elif name in ("beta", "tau", "moving_mean"):
            value = rng.normal(0.0, 0.5, size)
        else:
            raise AssertionError(f"unexpected weight {variable.name}")
        variable.assign(value.astype(np.float32))
    return weights_of(layer)


def groups_for(name, channels, rng):
    """A random number of groups dividing `channels` (None for ungrouped layers)."""
    if name not in GROUPED:
        return None
    return int(rng.choice([g for g in (1, 2, 3, 4) if channels % g == 0]))


def make_layer(front_end, name, groups=None, **kwargs):
    """`get_norm_act(name, ...)` of a front-end; `groups=None` leaves the layer's default
    unless `group_size` is given (the two are exclusive)."""
    if groups is not None or "group_size" in kwargs:
        kwargs["groups"] = groups
    return FRONT_ENDS[front_end].get_norm_act(name, **kwargs)


def to_format(x, data_format):
    """channels_last array → array in `data_format`."""
    if data_format == "channels_last":
        return x
    return np.ascontiguousarray(reference.to_channels_first(x))


def from_format(y, data_format):
    """Array in `data_format` → channels_last."""
    y = np.asarray(y)
    return y if data_format == "channels_last" else reference.to_channels_last(y)


def built_layer(front_end, name, x_channels_last, rng, data_format="channels_last",
                groups=None, **kwargs):
    """A layer built for x's shape, with random weights; returns (layer, weights)."""
    layer = make_layer(front_end, name, groups=groups, data_format=data_format, **kwargs)
    layer.build(tuple(to_format(x_channels_last, data_format).shape))
    return layer, randomize_weights(layer, rng)


def call(layer, x, training):
    return layer(tf.constant(x), training=training)

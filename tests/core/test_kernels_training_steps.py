"""Whole training steps agree across kernel paths (cpu, portable, reference).

A small residual network is trained a few steps under `jit_compile=True`
from the same weights on each path; losses and final weights must agree.
Cases cover odd spatial sizes, a `None` batch dimension, channels_first,
bfloat16 compute, and B-series layers synchronized over two replicas (that
one without XLA: a compiled Keras step cannot read mirrored variables placed
on a second logical CPU).
"""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import evonorm_tf
from evonorm_tf import kernels

PATHS = ("cpu", "portable", "reference")


def _small_resnet(norm, data_format, input_shape, dtype_policy=None, **norm_kwargs):
    inputs = keras.Input(input_shape, batch_size=None)
    conv = lambda filters, stride=1: keras.layers.Conv2D(  # noqa: E731
        filters, 3, stride, padding="same", use_bias=False, data_format=data_format, dtype=dtype_policy)
    norm_layer = lambda **kw: evonorm_tf.get_norm_act(  # noqa: E731
        norm, data_format=data_format, dtype=dtype_policy, **norm_kwargs, **kw)
    x = norm_layer()(conv(16)(inputs))
    shortcut = x
    x = norm_layer()(conv(16)(x))
    x = norm_layer(nonlinearity=False)(conv(16)(x))
    x = keras.layers.Add()([x, shortcut])
    x = norm_layer()(conv(32, 2)(x))
    x = keras.layers.GlobalAveragePooling2D(data_format=data_format)(x)
    outputs = keras.layers.Dense(5, dtype="float32")(x)
    return keras.Model(inputs, outputs)


def _train(path, norm, data_format, shape, steps=3, dtype_policy=None, strategy=None, jit=True, **norm_kwargs):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    images = rng.normal(2.0, 1.0, (4,) + shape).astype(np.float32)
    labels = rng.integers(0, 5, 4)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with kernels.use(path), scope:
        model = _small_resnet(norm, data_format, shape, dtype_policy, **norm_kwargs)
        model.compile(optimizer=keras.optimizers.SGD(0.05),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit)
        assert {layer._kernels.path for layer in model.layers if hasattr(layer, "_kernels")} == {path}
        losses = [float(model.train_on_batch(images, labels)) for _ in range(steps)]
    return np.array(losses), [w.numpy().astype(np.float64) for w in model.weights]


CASES = {
    "s0_odd_sizes": ("evonorm_s0", "channels_last", (7, 9, 3), {"groups": 4}),
    "b0_odd_sizes": ("evonorm_b0", "channels_last", (5, 11, 3), {}),
    "s0_channels_first": ("evonorm_s0", "channels_first", (3, 6, 6), {"groups": 4}),
    "b1_channels_first": ("evonorm_b1", "channels_first", (3, 7, 5), {}),
    "s2_none_batch": ("evonorm_s2", "channels_last", (6, 6, 3), {"groups": 8}),
    "gn_relu": ("gn_relu", "channels_last", (6, 7, 3), {"groups": 4}),
}


# Each case compiles the model three times: the default suite keeps one, `-m slow` runs all.
QUICK_CASES = ("s0_odd_sizes",)


@pytest.mark.parametrize("case", [c if c in QUICK_CASES else pytest.param(c, marks=pytest.mark.slow)
                                  for c in sorted(CASES)])
def test_training_steps_agree_across_paths(case):
    norm, data_format, shape, kwargs = CASES[case]
    results = {path: _train(path, norm, data_format, shape, **kwargs) for path in PATHS}
    losses, weights = results["reference"]
    assert losses[-1] < losses[0]
    for path in ("cpu", "portable"):
        np.testing.assert_allclose(results[path][0], losses, rtol=1e-4, err_msg=path)
        for got, expected in zip(results[path][1], weights):
            np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4, err_msg=path)


@pytest.mark.slow
@pytest.mark.parametrize("norm,kwargs", [("evonorm_b0", {}), ("evonorm_s0", {"groups": 4})])
def test_bfloat16_training_steps_agree_across_paths(norm, kwargs):
    results = {path: _train(path, norm, "channels_last", (6, 7, 3), dtype_policy="mixed_bfloat16", **kwargs)
               for path in PATHS}
    losses, weights = results["reference"]
    for path in ("cpu", "portable"):
        np.testing.assert_allclose(results[path][0], losses, rtol=2e-2, err_msg=path)
        for got, expected in zip(results[path][1], weights):
            np.testing.assert_allclose(got, expected, rtol=5e-2, atol=5e-3, err_msg=path)


def test_synchronized_b_series_over_two_replicas_agree_across_paths(mirrored_strategy):
    # Without XLA: a compiled Keras step cannot read the mirrored variables of the second logical CPU.
    results = {path: _train(path, "evonorm_b0", "channels_last", (6, 5, 3), strategy=mirrored_strategy,
                            jit=False, synchronized=True) for path in PATHS}
    losses, weights = results["reference"]
    for path in ("cpu", "portable"):
        np.testing.assert_allclose(results[path][0], losses, rtol=1e-4, err_msg=path)
        for got, expected in zip(results[path][1], weights):
            np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4, err_msg=path)

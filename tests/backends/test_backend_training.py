"""Training the Keras 3 layers with `model.fit` on the process's backend, compiled.

`jit_compile=True` is XLA on TensorFlow and JAX and `torch.compile` on
PyTorch. After a compiled training step the moving statistics are those of
the float64 reference, and on JAX a `keras.distribution.DataParallel` over two
CPU devices (`tests/conftest.py` asks XLA for them) gives B-series statistics
of the global batch.
"""

import keras
import numpy as np
import pytest

import evonorm_tf
import reference
from backend_cases import BACKEND, to_numpy
from layer_cases import case_rng, random_input

# Compiled training on every backend; torch.compile's CPU code generation takes
# minutes on a small machine, so on PyTorch the default suite fits eagerly.
if BACKEND == "torch":
    JIT_COMPILE = (pytest.param(False, id="eager"), pytest.param(True, id="compiled", marks=pytest.mark.slow))
else:
    JIT_COMPILE = (pytest.param(True, id="compiled"),)


def _model(first):
    inputs = keras.Input((6, 6, 4))
    x = first(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same")(x)
    for name in evonorm_tf.NORM_ACT_NAMES:
        grouped = name.startswith(("gn_", "evonorm_s"))
        x = evonorm_tf.get_norm_act(name, **({"groups": 4} if grouped else {}))(x)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("jit_compile", JIT_COMPILE)
def test_fit_updates_moving_variance_as_reference(jit_compile):
    rng = case_rng("backends-fit")
    x = random_input(rng, [8, 6, 6, 4])
    y = rng.normal(size=(8, 2)).astype(np.float32)
    first = evonorm_tf.EvoNormB0(momentum=0.75)
    model = _model(first)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse", jit_compile=jit_compile)
    history = model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    # The first layer sees x itself: three updates from ones with the batch variance of x.
    expected = np.ones(4)
    for _ in range(3):
        expected = reference.moving_variance_update(expected, x.astype(np.float64), 0.75)
    np.testing.assert_allclose(to_numpy(first.moving_variance), expected, rtol=1e-5)
    predictions = model.predict(x, batch_size=8, verbose=0)
    np.testing.assert_allclose(predictions, to_numpy(model(x, training=False)), atol=1e-5)


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution data parallel is JAX's")
@pytest.mark.parametrize("synchronized", (True, False))
def test_data_parallel_statistics_are_global_on_jax(synchronized):
    devices = keras.distribution.list_devices("cpu")
    assert len(devices) >= 2, "tests/conftest.py asks XLA for two CPU devices"
    rng = case_rng("backends-data-parallel")
    # The two halves of the batch, one per device, have different variances.
    x = np.concatenate([random_input(rng, [4, 3, 3, 4]), 3.0 * random_input(rng, [4, 3, 3, 4])])
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices[:2]))
    try:
        layer = evonorm_tf.EvoNormB1(momentum=0.5, synchronized=synchronized)
        inputs = keras.Input((3, 3, 4))
        model = keras.Model(inputs, keras.layers.Dense(1)(layer(inputs)))
        model.compile(optimizer="sgd", loss="mse", jit_compile=True)
        model.fit(x, np.zeros((8, 3, 3, 1), np.float32), batch_size=8, epochs=1, shuffle=False,
                  verbose=0)
        sharding = layer.moving_variance.value.sharding
    finally:
        keras.distribution.set_distribution(None)
    assert len(sharding.device_set) == 2  # the variable lives on both devices
    x64 = x.astype(np.float64)
    global_update = reference.moving_variance_update(np.ones(4), x64, 0.5)
    per_device = np.mean([reference.moving_variance_update(np.ones(4), half, 0.5)
                          for half in (x64[:4], x64[4:])], axis=0)
    moving_variance = to_numpy(layer.moving_variance)
    np.testing.assert_allclose(moving_variance, global_update, rtol=1e-5)
    assert np.max(np.abs(moving_variance - per_device)) > 0.1

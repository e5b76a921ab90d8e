"""Batch statistics under `tf.distribute.MirroredStrategy` over the two logical CPUs.

`synchronized=True` (EvoNorm-B0/B1/B2, and BN through its own flag) gives the
outputs and moving variance of one device on the concatenated batch;
`synchronized=False` gives per-replica statistics: each replica's outputs are
those of its half alone, and the moving variance read after `strategy.run` is
the mean of the per-replica updates (Keras 3: a mirrored variable with
aggregation "mean"; tf_keras: ON_READ with MEAN aggregation). A tf_keras
model with EvoNorm-B0 and S0 trains with `model.fit` under the strategy.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import evonorm_tf
from evonorm_tf import tf_keras as evonorm_tf_keras

CHANNELS = 8
SHAPE = (8, 4, 4, CHANNELS)  # global batch; 4 examples per replica
FRONT_ENDS = {"keras3": evonorm_tf, "tf_keras": evonorm_tf_keras}
BATCH_STATISTICS = ("evonorm_b0", "evonorm_b1", "evonorm_b2", "bn_relu")


@pytest.fixture(scope="module")
def strategy(mirrored_strategy):
    return mirrored_strategy  # tests/conftest.py: one strategy per process


def _inputs(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, SHAPE) * rng.uniform(0.5, 2.0, CHANNELS)
    x[SHAPE[0] // 2:] = 3.0 * x[SHAPE[0] // 2:] + 1.0  # halves with different statistics
    return x.astype("float32")


def _layer(package, name, synchronized, weights=None):
    layer = package.get_norm_act(name, synchronized=synchronized, momentum=0.5)
    layer.build(SHAPE)
    if weights is None:
        rng = np.random.default_rng(1)
        weights = [rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in layer.get_weights()]
    layer.set_weights(weights)
    return layer, weights


def _distributed_training_call(strategy, layer, x):
    """Calls `layer(., training=True)` on each replica's half; returns the concatenated outputs."""
    halves = np.split(x, strategy.num_replicas_in_sync)
    values = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(halves[context.replica_id_in_sync_group])
    )

    @tf.function
    def step(inputs):
        return strategy.run(lambda half: layer(half, training=True), args=(inputs,))

    outputs = strategy.experimental_local_results(step(values))
    return np.concatenate([y.numpy() for y in outputs])


@pytest.mark.parametrize("front_end", sorted(FRONT_ENDS))
@pytest.mark.parametrize("name", BATCH_STATISTICS)
def test_synchronized_statistics_are_those_of_the_global_batch(strategy, front_end, name):
    package = FRONT_ENDS[front_end]
    x = _inputs(0)
    with strategy.scope():
        layer, weights = _layer(package, name, synchronized=True)
    outputs = _distributed_training_call(strategy, layer, x)

    single, _ = _layer(package, name, synchronized=True, weights=weights)
    expected = single(x, training=True).numpy()
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)
    expected_moving_variance = single.moving_variance.numpy()
    assert np.all(np.abs(expected_moving_variance - weights[-1]) > 1e-3)
    np.testing.assert_allclose(layer.moving_variance.numpy(), expected_moving_variance, rtol=1e-5)
    for local in strategy.experimental_local_results(layer.moving_variance):
        np.testing.assert_allclose(np.asarray(local), expected_moving_variance, rtol=1e-5)

    # Inference on each replica uses the (identical) moving variance.
    @tf.function
    def infer(inputs):
        return strategy.run(lambda half: layer(half, training=False), args=(inputs,))

    halves = np.split(x, 2)
    values = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(halves[context.replica_id_in_sync_group])
    )
    inferred = strategy.experimental_local_results(infer(values))
    inferred = np.concatenate([y.numpy() for y in inferred])
    np.testing.assert_allclose(inferred, single(x, training=False).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("front_end", sorted(FRONT_ENDS))
@pytest.mark.parametrize("name", BATCH_STATISTICS)
def test_unsynchronized_statistics_are_per_replica(strategy, front_end, name):
    package = FRONT_ENDS[front_end]
    x = _inputs(2)
    with strategy.scope():
        layer, weights = _layer(package, name, synchronized=False)
    outputs = _distributed_training_call(strategy, layer, x)

    per_half, moving_variances = [], []
    for half in np.split(x, 2):
        single, _ = _layer(package, name, synchronized=False, weights=weights)
        per_half.append(single(half, training=True).numpy())
        moving_variances.append(single.moving_variance.numpy())
    np.testing.assert_allclose(outputs, np.concatenate(per_half), rtol=1e-5, atol=1e-5)

    global_batch, _ = _layer(package, name, synchronized=False, weights=weights)
    assert np.abs(outputs - global_batch(x, training=True).numpy()).max() > 1e-2

    # The value read outside the replicas is the mean of the per-replica updates.
    np.testing.assert_allclose(
        layer.moving_variance.numpy(), np.mean(moving_variances, axis=0), rtol=1e-5
    )
    assert np.abs(moving_variances[0] - moving_variances[1]).min() > 1e-3


def _fit_model(package, synchronized, x, y, strategy=None):
    """Conv → EvoNorm-B0 → Conv → EvoNorm-S0 → pool → dense, trained for two steps."""
    def build():
        tf_keras.utils.set_random_seed(3)
        model = tf_keras.Sequential([
            tf_keras.Input(SHAPE[1:]),
            tf_keras.layers.Conv2D(CHANNELS, 3, padding="same"),
            package.EvoNormB0(synchronized=synchronized, name="b0"),
            tf_keras.layers.Conv2D(CHANNELS, 3, padding="same"),
            package.EvoNormS0(groups=4, name="s0"),
            tf_keras.layers.GlobalAveragePooling2D(),
            tf_keras.layers.Dense(3),
        ])
        model.compile(optimizer=tf_keras.optimizers.SGD(0.1), loss="mse")
        return model

    if strategy is None:
        model = build()
    else:
        with strategy.scope():
            model = build()
    initial = [w.numpy().copy() for w in model.weights]
    history = model.fit(x, y, batch_size=SHAPE[0], epochs=1, shuffle=False, verbose=0)
    return model, initial, history.history["loss"]


@pytest.mark.parametrize("synchronized", [True, False])
def test_tf_keras_model_fit_under_mirrored_strategy(strategy, synchronized):
    rng = np.random.default_rng(4)
    x = np.concatenate([_inputs(5), _inputs(6)])  # two steps of the global batch
    y = rng.normal(size=(2 * SHAPE[0], 3)).astype("float32")
    model, initial, loss = _fit_model(evonorm_tf_keras, synchronized, x, y, strategy)

    assert np.isfinite(loss).all()
    for weight, before in zip(model.weights, initial):
        assert np.all(np.isfinite(weight.numpy())), weight.name
        assert not np.array_equal(weight.numpy(), before), weight.name
    moving_variance = model.get_layer("b0").moving_variance.numpy()
    assert np.all(np.abs(moving_variance - 1.0) > 1e-3)

    if synchronized:
        # Synchronized statistics and averaged gradients: the same training as one device.
        single, _, single_loss = _fit_model(evonorm_tf_keras, synchronized, x, y)
        np.testing.assert_allclose(loss, single_loss, rtol=1e-5)
        for got, want in zip(model.weights, single.weights):
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5,
                                       err_msg=want.name)

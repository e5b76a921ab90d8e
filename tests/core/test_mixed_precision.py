"""Mixed precision (`mixed_bfloat16`, `mixed_float16`) in both front-ends.

Weights (moving_variance included) stay float32, statistics are computed in
float32, outputs have the compute dtype, and inputs with |x| ~ 300 — whose
squares overflow float16 (max 65504) — give finite outputs, statistics and
gradients. A float16 tf_keras / Keras 3 model trains with loss scaling.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import keras

import evonorm_tf
from evonorm_tf import statistics
from evonorm_tf import tf_keras as evonorm_tf_keras

CHANNELS = 8
SHAPE = (4, 5, 5, CHANNELS)
GROUPED = {"gn_relu", "gn_silu", "evonorm_s0", "evonorm_s1", "evonorm_s2"}
BATCH_STATISTICS = {"bn_relu", "bn_silu", "evonorm_b0", "evonorm_b1", "evonorm_b2"}
POLICIES = ("mixed_bfloat16", "mixed_float16")
# Output rounding of the compute dtype (8 and 11 significant bits) with margin.
TOLERANCE = {"mixed_bfloat16": 2e-2, "mixed_float16": 3e-3}


class _Keras3:
    package = evonorm_tf
    keras_api = keras

    @staticmethod
    def get_policy():
        return keras.mixed_precision.dtype_policy()

    @staticmethod
    def set_policy(policy):
        keras.mixed_precision.set_dtype_policy(policy)


class _TfKeras:
    package = evonorm_tf_keras
    keras_api = tf_keras

    @staticmethod
    def get_policy():
        return tf_keras.mixed_precision.global_policy()

    @staticmethod
    def set_policy(policy):
        tf_keras.mixed_precision.set_global_policy(policy)


FRONT_ENDS = {"keras3": _Keras3, "tf_keras": _TfKeras}


@pytest.fixture(params=sorted(FRONT_ENDS))
def front_end(request):
    """The front-end; its global policy is restored after the test."""
    api = FRONT_ENDS[request.param]
    saved = api.get_policy()
    yield api
    api.set_policy(saved)


def layer_arguments(name):
    return {"groups": 4} if name in GROUPED else {}


def large_inputs(seed, shape=SHAPE):
    """|x| ~ 300: x² overflows float16; channel offsets make the batch variance large too."""
    rng = np.random.default_rng(seed)
    return (rng.normal(0.0, 300.0, shape) + rng.uniform(-200.0, 200.0, shape[-1])).astype("float32")


def train_step(layer, x, dy):
    """One training forward/backward; returns outputs, dx and the weight gradients."""
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * dy)
    dx, *dweights = tape.gradient(loss, [x, *layer.trainable_weights])
    return y, dx, dweights


def test_statistics_of_float16_inputs_are_float32_and_do_not_overflow():
    x64 = large_inputs(0).astype(np.float16).astype(np.float64)
    assert np.square(x64).max() > np.finfo(np.float16).max  # the hazard is real
    x16 = tf.constant(x64, tf.float16)
    expected = {
        "batch_variance": x64.var(axis=(0, 1, 2), keepdims=True),
        "instance_variance": x64.var(axis=(1, 2), keepdims=True),
        "instance_second_moment": np.square(x64).mean(axis=(1, 2), keepdims=True),
        "group_variance": np.repeat(
            x64.reshape(4, 5, 5, 4, 2).var(axis=(1, 2, 4)), 2, axis=-1
        ).reshape(4, 1, 1, CHANNELS),
        "group_second_moment": np.repeat(
            np.square(x64).reshape(4, 5, 5, 4, 2).mean(axis=(1, 2, 4)), 2, axis=-1
        ).reshape(4, 1, 1, CHANNELS),
    }
    for name, want in expected.items():
        function = getattr(statistics, name)
        got = function(x16, 4) if name.startswith("group") else function(x16)
        assert got.dtype == tf.float32, name
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", evonorm_tf.NORM_ACT_NAMES)
def test_layer_under_mixed_policy(front_end, policy, name):
    compute_dtype = tf.bfloat16 if policy == "mixed_bfloat16" else tf.float16
    x = tf.cast(large_inputs(1), compute_dtype)
    dy = tf.constant(np.random.default_rng(2).normal(size=SHAPE).astype("float32"))

    front_end.set_policy(policy)
    layer = front_end.package.get_norm_act(name, **layer_arguments(name))
    layer.build(SHAPE)
    rng = np.random.default_rng(3)
    weights = [rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in layer.get_weights()]
    layer.set_weights(weights)
    y, dx, dweights = train_step(layer, x, dy)
    y_inference = layer(x, training=False)

    assert layer.compute_dtype == compute_dtype.name
    assert [w.dtype for w in layer.weights] == [tf.float32] * len(layer.weights)
    if name in BATCH_STATISTICS:
        assert layer.moving_variance.dtype == tf.float32
    assert y.dtype == compute_dtype and y_inference.dtype == compute_dtype
    assert dx.dtype == compute_dtype
    for tensor in [y, y_inference, dx, *dweights]:
        assert np.all(np.isfinite(tf.cast(tensor, tf.float32).numpy())), name
    assert np.abs(tf.cast(dx, tf.float32).numpy()).max() > 0

    # The same layer in float32 on the same (rounded) inputs: only the output
    # rounding may differ, and the moving variance must agree to float32 precision.
    front_end.set_policy("float32")
    reference = front_end.package.get_norm_act(name, **layer_arguments(name))
    reference.build(SHAPE)
    reference.set_weights(weights)
    x32 = tf.cast(x, tf.float32)
    y32, dx32, _ = train_step(reference, x32, dy)
    tolerance = TOLERANCE[policy]
    for got, want in ((y, y32), (y_inference, reference(x32, training=False))):
        want = want.numpy()
        np.testing.assert_allclose(
            tf.cast(got, tf.float32).numpy(), want,
            rtol=tolerance, atol=tolerance * np.abs(want).max(), err_msg=name,
        )
    if name in BATCH_STATISTICS:
        np.testing.assert_allclose(
            layer.moving_variance.numpy(), reference.moving_variance.numpy(), rtol=1e-5
        )
        assert reference.moving_variance.numpy().min() > 1000.0  # large batch variance


def _path(variable):
    """`layer/weight` for Keras 3 and tf_keras variables alike."""
    return getattr(variable, "path", variable.name).split(":")[0]


def test_float16_model_trains_with_loss_scaling(front_end):
    front_end.set_policy("mixed_float16")
    keras_api, package = front_end.keras_api, front_end.package
    keras_api.utils.set_random_seed(0)  # deterministic initial weights
    inputs = keras_api.Input(SHAPE[1:])
    features = keras_api.layers.Conv2D(CHANNELS, 1, use_bias=False)(inputs)
    branches = [
        keras_api.layers.GlobalAveragePooling2D()(
            package.get_norm_act(name, name=name, **layer_arguments(name))(features)
        )
        for name in evonorm_tf.NORM_ACT_NAMES
    ]
    outputs = keras_api.layers.Dense(3, dtype="float32")(keras_api.layers.Concatenate()(branches))
    model = keras_api.Model(inputs, outputs)
    model.compile(optimizer=keras_api.optimizers.SGD(0.01), loss="mse")
    assert isinstance(model.optimizer, keras_api.mixed_precision.LossScaleOptimizer)
    # An identity kernel passes the |x| ~ 300 inputs on to the norm-act layers unchanged.
    model.layers[1].set_weights([np.eye(CHANNELS, dtype="float32")[None, None]])
    before = [w.numpy().copy() for w in model.trainable_weights]

    x = large_inputs(4, shape=(16,) + SHAPE[1:])
    y = np.random.default_rng(5).normal(size=(16, 3)).astype("float32")
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)

    assert np.isfinite(history.history["loss"]).all()
    for weight, old in zip(model.trainable_weights, before):
        assert weight.dtype == tf.float32
        assert np.all(np.isfinite(weight.numpy())), weight.name
    # No step was skipped (a skipped step, one with non-finite gradients, halves
    # the dynamic loss scale) and every weight moved; S0's v is exempt: σ(v·x)
    # saturates at |x| ~ 300, so its update falls below float32 resolution.
    optimizer = model.optimizer
    scale = optimizer.dynamic_scale if hasattr(optimizer, "dynamic_scale") else optimizer.loss_scale
    assert float(scale.numpy()) == optimizer.initial_scale
    unchanged = [
        w.name for w, old in zip(model.trainable_weights, before)
        if np.array_equal(w.numpy(), old) and not _path(w).startswith("evonorm_s0/v")
    ]
    assert not unchanged
    for name in BATCH_STATISTICS:
        moving_variance = model.get_layer(name).moving_variance
        assert moving_variance.dtype == tf.float32
        assert np.all(np.isfinite(moving_variance.numpy()))
        assert moving_variance.numpy().min() > 100.0
    prediction = model.predict(x[:4], verbose=0)
    assert prediction.dtype == np.float32 and np.all(np.isfinite(prediction))

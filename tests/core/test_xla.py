"""XLA (`tf.function(jit_compile=True)`) for the math and for whole train steps.

Every public function of `evonorm_tf.statistics` and `evonorm_tf.formulas`
compiles and gives the non-XLA value and input gradient; a GradientTape +
optimizer train step of a small model using every norm-act layer compiles in
both front-ends and gives the non-XLA losses, weights and moving variances.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import keras

import evonorm_tf
from evonorm_tf import formulas, statistics
from evonorm_tf import tf_keras as evonorm_tf_keras

CHANNELS = 8
GROUPS = 4
GROUPED = {"gn_relu", "gn_silu", "evonorm_s0", "evonorm_s1", "evonorm_s2"}
BATCH_STATISTICS = {"bn_relu", "bn_silu", "evonorm_b0", "evonorm_b1", "evonorm_b2"}


def _vectors(seed):
    rng = np.random.default_rng(seed)
    gamma = tf.constant(rng.uniform(0.5, 1.5, CHANNELS), tf.float32)
    beta = tf.constant(rng.normal(0.0, 0.5, CHANNELS), tf.float32)
    v = tf.constant(rng.uniform(-1.0, 1.0, CHANNELS), tf.float32)
    moving_variance = tf.constant(rng.uniform(0.5, 2.0, CHANNELS), tf.float32)
    return gamma, beta, v, moving_variance


def _calls(data_format):
    """name → function of x for every public function of statistics and formulas."""
    gamma, beta, v, mv = _vectors(0)
    f = data_format
    spatial = [1, 2] if f == "channels_last" else [2, 3]
    return {
        "statistics.batch_moments": lambda x: statistics.batch_moments(x, f),
        "statistics.batch_variance": lambda x: statistics.batch_variance(x, f),
        "statistics.broadcast_channel_vector": lambda x: x * statistics.broadcast_channel_vector(
            gamma, x.shape.rank, f),
        "statistics.group_moments": lambda x: statistics.group_moments(x, GROUPS, f),
        "statistics.group_second_moment": lambda x: statistics.group_second_moment(x, GROUPS, f),
        "statistics.group_variance": lambda x: statistics.group_variance(x, GROUPS, f),
        "statistics.instance_second_moment": lambda x: statistics.instance_second_moment(x, f),
        "statistics.instance_variance": lambda x: statistics.instance_variance(x, f),
        "statistics.mean_squares": lambda x: statistics.mean_squares(x, spatial),
        "statistics.root": lambda x: statistics.root(*statistics.mean_squares(x, spatial), 1e-5),
        "statistics.inverse_root": lambda x: statistics.inverse_root(*statistics.mean_squares(x, spatial), 1e-5),
        "statistics.saturated": lambda x: statistics.saturated(*statistics.mean_squares(x, spatial)),
        "statistics.batch_root": lambda x: statistics.batch_root(x, 1e-5, f),
        "statistics.instance_root": lambda x: statistics.instance_root(x, 1e-5, f),
        "statistics.group_root": lambda x: statistics.group_root(x, GROUPS, 1e-5, f),
        "formulas.affine": lambda x: formulas.affine(x, gamma, beta, f),
        "formulas.evonorm_b0": lambda x: formulas.evonorm_b0(x, gamma, beta, v, mv, 1e-5, f),
        "formulas.evonorm_b1": lambda x: formulas.evonorm_b1(x, gamma, beta, mv, 1e-5, f),
        "formulas.evonorm_b2": lambda x: formulas.evonorm_b2(x, gamma, beta, mv, 1e-5, f),
        "formulas.evonorm_b_training": lambda x: formulas.evonorm_b_training(
            "b0", x, gamma, beta, v, 1e-5, f),
        "formulas.evonorm_s0": lambda x: formulas.evonorm_s0(x, gamma, beta, v, GROUPS, 1e-5, f),
        "formulas.evonorm_s1": lambda x: formulas.evonorm_s1(x, gamma, beta, GROUPS, 1e-5, f),
        "formulas.evonorm_s2": lambda x: formulas.evonorm_s2(x, gamma, beta, GROUPS, 1e-5, f),
        "formulas.group_norm": lambda x: formulas.group_norm(x, gamma, beta, GROUPS, 1e-5, f),
        "formulas.filter_response_norm": lambda x: formulas.filter_response_norm(
            x, gamma, beta, 1e-5, f),
        "formulas.thresholded_linear_unit": lambda x: formulas.thresholded_linear_unit(x, beta, f),
    }


def test_every_public_function_is_covered():
    public = {f"statistics.{name}" for name in statistics.__all__} | {
        f"formulas.{name}" for name in formulas.__all__
    }
    assert set(_calls("channels_last")) == public


def _value_and_gradient(function):
    """Outputs of `function(x)` and the gradient of a fixed weighted sum of them."""
    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            outputs = tf.nest.flatten(function(x))
            loss = tf.add_n([
                tf.reduce_sum(y * tf.sin(tf.cast(tf.reshape(tf.range(tf.size(y)), tf.shape(y)),
                                                 tf.float32) + float(i)))
                for i, y in enumerate(outputs)
            ])
        return outputs, tape.gradient(loss, x)
    return run


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("name", sorted(_calls("channels_last")))
def test_function_compiles_and_matches(name, data_format):
    function = _calls(data_format)[name]
    rng = np.random.default_rng(1)
    x = rng.normal(0.5, 1.5, (3, 4, 5, CHANNELS)).astype("float32")
    if data_format == "channels_first":
        x = np.transpose(x, (0, 3, 1, 2))
    x = tf.constant(x)
    run = _value_and_gradient(function)
    expected, expected_gradient = tf.function(run, jit_compile=False)(x)
    # jit_compile=True fails rather than fall back when an op cannot be compiled.
    actual, actual_gradient = tf.function(run, jit_compile=True)(x)
    for got, want in zip(actual, expected):
        assert got.dtype == want.dtype == tf.float32
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
    assert np.abs(expected_gradient.numpy()).max() > 0
    np.testing.assert_allclose(
        actual_gradient.numpy(), expected_gradient.numpy(), rtol=1e-4, atol=1e-5
    )


# -- train steps ---------------------------------------------------------------------


def _model(keras_api, package):
    keras_api.utils.set_random_seed(0)  # deterministic initial weights
    inputs = keras_api.Input((5, 5, CHANNELS))
    features = keras_api.layers.Conv2D(CHANNELS, 3, padding="same")(inputs)
    branches = []
    for name in evonorm_tf.NORM_ACT_NAMES:
        arguments = {"groups": GROUPS} if name in GROUPED else {}
        layer = package.get_norm_act(name, name=name, **arguments)
        branches.append(keras_api.layers.GlobalAveragePooling2D()(layer(features)))
    outputs = keras_api.layers.Dense(3)(keras_api.layers.Concatenate()(branches))
    return keras_api.Model(inputs, outputs)


def _train(keras_api, package, weights, jit_compile, data):
    model = _model(keras_api, package)
    model.set_weights(weights)
    optimizer = keras_api.optimizers.SGD(0.05, momentum=0.9)
    optimizer.build(model.trainable_variables)

    @tf.function(jit_compile=jit_compile)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    losses = [step(x, y).numpy() for x, y in data]
    return losses, model


@pytest.mark.parametrize("front_end", ["keras3", "tf_keras"])
def test_compiled_train_step_matches_uncompiled(front_end):
    keras_api, package = {"keras3": (keras, evonorm_tf), "tf_keras": (tf_keras, evonorm_tf_keras)}[
        front_end]
    weights = _model(keras_api, package).get_weights()
    rng = np.random.default_rng(2)
    data = [
        (tf.constant(rng.normal(0.5, 2.0, (8, 5, 5, CHANNELS)), tf.float32),
         tf.constant(rng.normal(size=(8, 3)), tf.float32))
        for _ in range(2)
    ]
    expected_losses, expected = _train(keras_api, package, weights, False, data)
    actual_losses, actual = _train(keras_api, package, weights, True, data)

    np.testing.assert_allclose(actual_losses, expected_losses, rtol=1e-5)
    for got, want in zip(actual.weights, expected.weights):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=got.name)
    for name in BATCH_STATISTICS:
        moving_variance = actual.get_layer(name).moving_variance.numpy()
        assert np.all(np.abs(moving_variance - 1.0) > 1e-3), name

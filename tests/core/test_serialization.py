"""Serialization of every norm-act layer in both front-ends.

- `get_config` / `from_config` round trips (config equality, identical outputs
  once the weights are copied);
- Keras 3 `.keras` files, tf_keras SavedModel (`model.save(dir)` and
  `tf.saved_model.save/load`) and H5 files give identical outputs after a few
  training steps (so `moving_variance` is no longer its initial 1);
- the layers are found through `register_keras_serializable`: nothing here
  passes `custom_objects`.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import keras

import evonorm_tf
from evonorm_tf import tf_keras as evonorm_tf_keras

CHANNELS = 8
GROUPED = {"gn_relu", "gn_silu", "evonorm_s0", "evonorm_s1", "evonorm_s2"}
BATCH_STATISTICS = {"bn_relu", "bn_silu", "evonorm_b0", "evonorm_b1", "evonorm_b2"}
FRONT_ENDS = {"keras3": (keras, evonorm_tf), "tf_keras": (tf_keras, evonorm_tf_keras)}


def layer_arguments(name):
    """Small-model arguments, away from the defaults so a lost argument shows."""
    arguments = {"epsilon": 1e-3}
    if name in GROUPED:
        arguments["groups"] = 4
    if name in BATCH_STATISTICS:
        arguments["momentum"] = 0.5
    return arguments


def random_inputs(seed, shape=(4, 5, 5, CHANNELS)):
    return np.random.default_rng(seed).normal(0.5, 2.0, size=shape).astype("float32")


# -- get_config / from_config --------------------------------------------------------


def _randomize_weights(layer, seed):
    """Random weights (moving_variance positive) so a dropped weight changes outputs."""
    rng = np.random.default_rng(seed)
    layer.set_weights([
        rng.uniform(0.5, 2.0, w.shape).astype("float32") for w in layer.get_weights()
    ])


@pytest.mark.parametrize("front_end", sorted(FRONT_ENDS))
@pytest.mark.parametrize("name", evonorm_tf.NORM_ACT_NAMES)
def test_config_round_trip_gives_equal_config_and_outputs(front_end, name):
    keras_api, package = FRONT_ENDS[front_end]
    arguments = layer_arguments(name)
    arguments.update(
        data_format="channels_first",
        gamma_regularizer=keras_api.regularizers.L2(1e-4),
        beta_constraint=keras_api.constraints.NonNeg(),
    )
    layer = package.get_norm_act(name, **arguments)
    x = np.transpose(random_inputs(0), (0, 3, 1, 2))
    layer(x)
    _randomize_weights(layer, seed=1)
    config = layer.get_config()

    # Through the generic (de)serializer: the class is found by its registered name.
    serialized = keras_api.layers.serialize(layer)
    restored = keras_api.layers.deserialize(serialized)
    assert type(restored) is type(layer)
    assert restored.get_config() == config
    for key, value in layer_arguments(name).items():
        assert config[key] == value
    assert config["data_format"] == "channels_first"

    restored(x)
    restored.set_weights(layer.get_weights())
    for training in (False, True):
        np.testing.assert_array_equal(
            restored(x, training=training).numpy(), layer(x, training=training).numpy()
        )


@pytest.mark.parametrize("front_end", sorted(FRONT_ENDS))
def test_layers_are_registered_under_the_package_name(front_end):
    keras_api, package = FRONT_ENDS[front_end]
    for name in evonorm_tf.NORM_ACT_NAMES:
        layer_class = type(package.get_norm_act(name, **layer_arguments(name)))
        registered_name = f"evonorm_tf>{layer_class.__name__}"
        assert keras_api.utils.get_registered_object(registered_name) is layer_class, name
        assert keras_api.utils.get_registered_name(layer_class) == registered_name


# -- whole models ----------------------------------------------------------------------


def build_model(keras_api, package):
    """A conv feeding one branch per norm-act layer, pooled, concatenated, then a dense.

    Returns the model and the names of the norm-act layers.
    """
    keras_api.utils.set_random_seed(0)  # deterministic initial weights
    inputs = keras_api.Input((5, 5, CHANNELS))
    features = keras_api.layers.Conv2D(CHANNELS, 3, padding="same")(inputs)
    pooled, names = [], []
    for name in evonorm_tf.NORM_ACT_NAMES:
        layer = package.get_norm_act(name, name=name, **layer_arguments(name))
        pooled.append(keras_api.layers.GlobalAveragePooling2D()(layer(features)))
        names.append(name)
    outputs = keras_api.layers.Dense(3)(keras_api.layers.Concatenate()(pooled))
    return keras_api.Model(inputs, outputs), names


def train_a_few_steps(model, keras_api):
    model.compile(optimizer=keras_api.optimizers.SGD(0.05), loss="mse")
    x = random_inputs(2, shape=(16, 5, 5, CHANNELS))
    y = np.random.default_rng(3).normal(size=(16, 3)).astype("float32")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)


def norm_act_outputs(model, names, x):
    """Inference outputs of every norm-act layer of a functional model."""
    probe = type(model)(model.inputs, [model.get_layer(name).output for name in names])
    return [np.asarray(y) for y in probe(x, training=False)]


def assert_moving_variances_trained(model, names):
    for name in names:
        if name in BATCH_STATISTICS:
            moving_variance = np.asarray(model.get_layer(name).moving_variance)
            assert np.all(np.abs(moving_variance - 1.0) > 1e-3), name


def assert_same_model(original, restored, names):
    x = random_inputs(4)
    for name in names:
        # A layer found without registration would be a generic revived layer.
        assert type(restored.get_layer(name)) is type(original.get_layer(name)), name
    expected = norm_act_outputs(original, names, x)
    actual = norm_act_outputs(restored, names, x)
    for name, want, got in zip(names, expected, actual):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(
        np.asarray(restored(x, training=False)), np.asarray(original(x, training=False)),
        rtol=1e-6, atol=1e-6,
    )


def test_keras3_model_survives_keras_file(tmp_path):
    model, names = build_model(keras, evonorm_tf)
    train_a_few_steps(model, keras)
    assert_moving_variances_trained(model, names)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert_same_model(model, restored, names)


@pytest.fixture(scope="module")
def trained_tf_keras_model():
    model, names = build_model(tf_keras, evonorm_tf_keras)
    train_a_few_steps(model, tf_keras)
    assert_moving_variances_trained(model, names)
    return model, names


def test_tf_keras_model_survives_savedmodel(trained_tf_keras_model, tmp_path):
    model, names = trained_tf_keras_model
    path = str(tmp_path / "saved_model")
    model.save(path, save_format="tf")
    restored = tf_keras.models.load_model(path)
    assert_same_model(model, restored, names)


def test_tf_keras_model_survives_h5(trained_tf_keras_model, tmp_path):
    model, names = trained_tf_keras_model
    path = str(tmp_path / "model.h5")
    model.save(path, save_format="h5")
    restored = tf_keras.models.load_model(path)
    assert_same_model(model, restored, names)


def test_tf_keras_model_survives_tf_saved_model_save_and_load(trained_tf_keras_model, tmp_path):
    model, _ = trained_tf_keras_model
    path = str(tmp_path / "tf_saved_model")
    tf.saved_model.save(model, path)
    restored = tf.saved_model.load(path)
    x = random_inputs(5)
    np.testing.assert_allclose(
        restored(tf.constant(x), training=False).numpy(),
        model(x, training=False).numpy(),
        rtol=1e-6, atol=1e-6,
    )
    serving = restored.signatures["serving_default"]
    (served,) = serving(tf.constant(x)).values()
    np.testing.assert_allclose(
        served.numpy(), model(x, training=False).numpy(), rtol=1e-6, atol=1e-6
    )

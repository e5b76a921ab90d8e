"""TFLite conversion of every norm-act layer, in inference mode, in both front-ends.

A small trained model (so `moving_variance` is not its initial 1) is
converted with `tf.lite.TFLiteConverter` using TFLite builtin ops only, and
the interpreter's output of every norm-act layer must match TensorFlow's.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import keras

import evonorm_tf
from evonorm_tf import tf_keras as evonorm_tf_keras

try:
    from ai_edge_litert.interpreter import Interpreter
except ImportError:  # older stacks ship the interpreter inside TensorFlow
    Interpreter = tf.lite.Interpreter

CHANNELS = 8
SHAPE = (2, 5, 5, CHANNELS)
GROUPED = {"gn_relu", "gn_silu", "evonorm_s0", "evonorm_s1", "evonorm_s2"}
BATCH_STATISTICS = {"bn_relu", "bn_silu", "evonorm_b0", "evonorm_b1", "evonorm_b2"}
FRONT_ENDS = {"keras3": (keras, evonorm_tf), "tf_keras": (tf_keras, evonorm_tf_keras)}


def trained_norm_act_model(keras_api, package):
    """A conv followed by every norm-act layer; returns a model whose outputs are theirs."""
    keras_api.utils.set_random_seed(0)  # deterministic initial weights
    inputs = keras_api.Input(SHAPE[1:])
    features = keras_api.layers.Conv2D(CHANNELS, 3, padding="same")(inputs)
    outputs = {}
    for name in evonorm_tf.NORM_ACT_NAMES:
        arguments = {"groups": 4} if name in GROUPED else {}
        arguments["name"] = name  # tf_keras names the TFLite outputs after the layers
        outputs[name] = package.get_norm_act(name, **arguments)(features)
    pooled = [keras_api.layers.GlobalAveragePooling2D()(y) for y in outputs.values()]
    head = keras_api.layers.Dense(3)(keras_api.layers.Concatenate()(pooled))
    model = keras_api.Model(inputs, head)
    model.compile(optimizer=keras_api.optimizers.SGD(0.05), loss="mse")
    rng = np.random.default_rng(0)
    model.fit(
        rng.normal(0.5, 2.0, (16,) + SHAPE[1:]).astype("float32"),
        rng.normal(size=(16, 3)).astype("float32"),
        batch_size=8, epochs=1, verbose=0,
    )
    for layer in model.layers:
        if type(layer).__name__.startswith(("EvoNormB", "BatchNorm")):
            assert np.all(np.abs(np.asarray(layer.moving_variance) - 1.0) > 1e-3)
    return keras_api.Model(inputs, outputs)


@pytest.mark.parametrize("front_end", sorted(FRONT_ENDS))
def test_tflite_inference_matches_tensorflow(front_end):
    model = trained_norm_act_model(*FRONT_ENDS[front_end])

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    runner = Interpreter(model_content=converter.convert()).get_signature_runner()

    x = np.random.default_rng(1).normal(0.5, 2.0, SHAPE).astype("float32")
    expected = {name: np.asarray(y) for name, y in model(x, training=False).items()}
    (input_name,) = runner.get_input_details()
    actual = runner(**{input_name: x})
    assert sorted(actual) == sorted(evonorm_tf.NORM_ACT_NAMES)
    for name in evonorm_tf.NORM_ACT_NAMES:
        assert actual[name].shape == SHAPE, name
        np.testing.assert_allclose(actual[name], expected[name], rtol=1e-5, atol=1e-5, err_msg=name)

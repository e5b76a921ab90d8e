"""A `.keras` file saved on one Keras backend loads and predicts the same on another.

A TensorFlow-backend subprocess trains and saves a model holding every
norm-act and Shadow BN; this process (whatever its backend) loads it and
must predict what TensorFlow predicted. The other way round, a model saved
here is loaded and run by a TensorFlow-backend subprocess.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import evonorm_tf
from backend_cases import BACKEND, to_numpy
from layer_cases import case_rng, random_input

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOLERANCE = 1e-5


def build_model():
    """Every norm-act (random weights, moved moving statistics) and Shadow BN, channels_last."""
    rng = case_rng("backends-saving")
    inputs = keras.Input((6, 6, 4))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    for name in evonorm_tf.NORM_ACT_NAMES:
        grouped = name.startswith(("gn_", "evonorm_s"))
        x = evonorm_tf.get_norm_act(name, **({"groups": 2} if grouped else {}))(x)
    x = evonorm_tf.ShadowBatchNormalization(3)(x, active_paths=2)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))
    for variable in model.weights:
        if variable.path.endswith(("gamma", "moving_variance")):
            value = rng.uniform(0.5, 1.5, variable.shape)
        else:
            value = rng.normal(0.0, 0.3, variable.shape)
        variable.assign(value.astype(np.float32))
    data = random_input(rng, [4, 6, 6, 4])
    model(data, training=True)  # moves the statistics
    return model, data


def save(directory):
    model, data = build_model()
    model.save(os.path.join(directory, "model.keras"))
    np.save(os.path.join(directory, "inputs.npy"), data)
    np.save(os.path.join(directory, "predictions.npy"), to_numpy(model(data, training=False)))


def load_and_compare(directory):
    """The largest |difference| between the saved predictions and the loaded model's."""
    model = keras.saving.load_model(os.path.join(directory, "model.keras"))
    data = np.load(os.path.join(directory, "inputs.npy"))
    expected = np.load(os.path.join(directory, "predictions.npy"))
    return float(np.max(np.abs(to_numpy(model(data, training=False)) - expected)))


def _run_on_tensorflow(function, directory):
    code = (
        "import sys, json; sys.path[:0] = [%r, %r]\n"
        "import test_backend_saving as module\n"
        "print(json.dumps(module.%s(%r)))\n"
    ) % (os.path.join(REPOSITORY, "tests"), os.path.dirname(os.path.abspath(__file__)), function,
         str(directory))
    environment = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3",
                   "PYTHONPATH": REPOSITORY}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=600, cwd=REPOSITORY, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_saved_on_tensorflow_predicts_the_same_here(tmp_path):
    _run_on_tensorflow("save", tmp_path)
    assert load_and_compare(tmp_path) <= TOLERANCE


@pytest.mark.skipif(BACKEND == "tensorflow", reason="saved and loaded on TensorFlow above")
def test_saved_here_predicts_the_same_on_tensorflow(tmp_path):
    save(str(tmp_path))
    assert _run_on_tensorflow("load_and_compare", tmp_path) <= TOLERANCE

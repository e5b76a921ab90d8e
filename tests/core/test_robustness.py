"""Hard inputs give finite outputs and finite gradients, for every layer.

Constant inputs (zero variance), batch 1, 1x1 spatial (and both at once:
every statistic over one element), |x| up to 1e4, bfloat16 inputs and a
mixed_bfloat16 policy; in training and inference, both front-ends.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import hard_inputs
from layer_cases import FRONT_ENDS, NAMES, case_rng, groups_for, make_layer

CHANNELS = hard_inputs.CHANNELS
CASES = hard_inputs.EDGE_CASES


def _output_and_gradients(layer, x, training):
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(tf.square(tf.cast(y, tf.float32)))
    gradients = tape.gradient(loss, [x] + layer.trainable_weights)
    return y, gradients


def _assert_finite(y, gradients, trainable_names):
    assert np.all(np.isfinite(tf.cast(y, tf.float32).numpy())), "non-finite output"
    for label, gradient in zip(["x"] + trainable_names, gradients):
        assert gradient is not None, f"no gradient for {label}"
        assert np.all(np.isfinite(tf.cast(gradient, tf.float32).numpy())), f"non-finite d/d{label}"


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_finite_outputs_and_gradients(front_end, name, case):
    rng = case_rng("robust", name, case)
    x = hard_inputs.edge_input(case, rng)
    layer = make_layer(front_end, name, groups=groups_for(name, CHANNELS, rng))
    for training in (True, False):
        y, gradients = _output_and_gradients(layer, x, training)
        _assert_finite(y, gradients, [w.name for w in layer.trainable_weights])
    for weight in layer.weights:  # moving statistics stay finite too
        assert np.all(np.isfinite(weight.numpy())), weight.name


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_bfloat16_inputs(front_end, name):
    """bfloat16 inputs into a float32 layer: float32 output close to the float32 result."""
    rng = case_rng("bf16", name)
    x = (rng.normal(0.5, 1.5, [3, 4, 4, CHANNELS])).astype(np.float32)
    x_bf16 = tf.cast(x, tf.bfloat16)
    layer = make_layer(front_end, name, groups=groups_for(name, CHANNELS, rng))
    for training in (True, False):
        y, gradients = _output_and_gradients(layer, x_bf16, training)
        _assert_finite(y, gradients, [w.name for w in layer.trainable_weights])
        assert gradients[0].dtype == tf.bfloat16
        # Statistics in float32: the result is that of the rounded input, to float32 precision.
        expected = layer(tf.cast(x_bf16, tf.float32), training=training)
        np.testing.assert_allclose(tf.cast(y, tf.float32).numpy(), expected.numpy(), atol=1e-5)


def _mixed_layer(front_end, name, rng):
    if front_end == "tf_keras":
        policy = tf_keras.mixed_precision.Policy("mixed_bfloat16")
    else:
        policy = keras.DTypePolicy("mixed_bfloat16")
    return make_layer(front_end, name, groups=groups_for(name, CHANNELS, rng), dtype=policy)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_mixed_bfloat16_policy(front_end, name):
    """Under mixed_bfloat16 the output is bfloat16, weights stay float32, all finite."""
    rng = case_rng("mixed", name)
    x = rng.normal(0.5, 1.5, [3, 4, 4, CHANNELS]).astype(np.float32) * 100.0
    layer = _mixed_layer(front_end, name, rng)
    for training in (True, False):
        y, gradients = _output_and_gradients(layer, tf.cast(x, tf.bfloat16), training)
        assert y.dtype == tf.bfloat16
        _assert_finite(y, gradients, [w.name for w in layer.trainable_weights])
    assert all(w.dtype == tf.float32 for w in layer.weights)

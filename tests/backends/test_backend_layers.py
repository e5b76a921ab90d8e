"""The Keras 3 layers on the process's Keras backend against the NumPy float64 reference.

Run by the default suite on TensorFlow and, through
`tests/core/test_keras_backends.py`, under `KERAS_BACKEND=jax` and `torch`:
every norm-act and Shadow BN returns a tensor of that backend, matches
`tests/reference.py` to 1e-5 in float32 (training and inference, both data
formats, rank 3 to 5), updates its moving statistics as the reference, has
finite gradients on the hard inputs of `tests/core/test_robustness.py` (`tests/hard_inputs.py`), and
keeps float32 statistics under a mixed precision policy.
"""

import keras
import numpy as np
import pytest

import evonorm_tf
import hard_inputs
import reference
from backend_cases import BACKEND, is_native, output_and_gradients, randomize_weights, to_numpy
from layer_cases import NAMES, case_rng, from_format, groups_for, random_input, random_shape, to_format

TOLERANCE = 1e-5
CHANNELS = 4


def _layer(name, rng, channels, **kwargs):
    groups = groups_for(name, channels, rng)
    if groups is not None:
        kwargs["groups"] = groups
    return evonorm_tf.get_norm_act(name, **kwargs), groups


@pytest.mark.parametrize("rank", (3, 4, 5))
@pytest.mark.parametrize("data_format", ("channels_last", "channels_first"))
@pytest.mark.parametrize("name", NAMES)
def test_matches_reference(name, data_format, rank):
    rng = case_rng("backends", name, data_format, rank)
    shape = random_shape(rng, rank)
    x = random_input(rng, shape)
    epsilon = float(rng.choice([1e-5, 1e-3]))
    layer, groups = _layer(name, rng, shape[-1], data_format=data_format, epsilon=epsilon)
    inputs = to_format(x, data_format)
    layer.build(inputs.shape)
    weights = randomize_weights(layer, rng)
    for training in (False, True):  # inference first: the training call moves the statistics
        output = layer(inputs, training=training)
        assert is_native(output), f"{type(output)} is not a {BACKEND} tensor"
        assert keras.backend.standardize_dtype(output.dtype) == "float32"
        expected = reference.norm_act(name, x.astype(np.float64), weights, training=training,
                                      epsilon=epsilon, groups=groups)
        error = np.max(np.abs(from_format(to_numpy(output), data_format) - expected))
        assert error <= TOLERANCE, f"training={training}: max |error| {error:.3g} (shape {shape})"


@pytest.mark.parametrize("name", NAMES)
def test_nonlinearity_false_matches_reference(name):
    rng = case_rng("backends-affine", name)
    x = random_input(rng, random_shape(rng, 4))
    layer, groups = _layer(name, rng, x.shape[-1], nonlinearity=False)
    layer.build(x.shape)
    weights = randomize_weights(layer, rng)
    expected = reference.norm_act(name, x.astype(np.float64), weights, training=True,
                                  nonlinearity=False, groups=groups)
    assert np.max(np.abs(to_numpy(layer(x, training=True)) - expected)) <= TOLERANCE


@pytest.mark.parametrize("name", reference.B_SERIES + reference.BATCH_NORMS)
def test_moving_statistics_update_as_reference(name):
    rng = case_rng("backends-moving", name)
    x = random_input(rng, random_shape(rng, 4))
    layer, _ = _layer(name, rng, x.shape[-1], momentum=0.8)
    layer.build(x.shape)
    weights = randomize_weights(layer, rng)
    layer(x, training=True)
    moving = {v.path.split("/")[-1]: to_numpy(v) for v in layer.non_trainable_weights}
    expected = reference.moving_variance_update(weights["moving_variance"], x.astype(np.float64), 0.8)
    np.testing.assert_allclose(moving["moving_variance"], expected, atol=1e-5)
    if "moving_mean" in moving:
        expected_mean = 0.8 * weights["moving_mean"] + 0.2 * reference.batch_mean(x.astype(np.float64))
        np.testing.assert_allclose(moving["moving_mean"], expected_mean, atol=1e-5)
    frozen = to_numpy(layer.non_trainable_weights[0])
    layer(x, training=False)
    np.testing.assert_array_equal(to_numpy(layer.non_trainable_weights[0]), frozen)


@pytest.mark.parametrize("case", ("constant_zero", "constant", "batch_1_spatial_1x1", "large"))
@pytest.mark.parametrize("name", NAMES)
def test_finite_outputs_and_gradients(name, case):
    rng = case_rng("backends-robust", name, case)
    x = hard_inputs.edge_input(case, rng, CHANNELS)
    layer, _ = _layer(name, rng, CHANNELS)
    for training in (True, False):
        y, gradients = output_and_gradients(layer, x, training)
        assert np.all(np.isfinite(y)), "non-finite output"
        for label, gradient in zip(["x"] + [w.path for w in layer.trainable_weights], gradients):
            assert np.all(np.isfinite(gradient)), f"non-finite d/d{label} (training={training})"
    for weight in layer.weights:
        assert np.all(np.isfinite(to_numpy(weight))), weight.path


def test_input_gradient_matches_finite_differences():
    """The backend's autodiff of EvoNorm-S0 against central differences of the reference."""
    rng = case_rng("backends-gradient")
    x = random_input(rng, [2, 3, 3, 4])
    layer, groups = _layer("evonorm_s0", rng, 4)
    layer.build(x.shape)
    weights = randomize_weights(layer, rng)
    _, gradients = output_and_gradients(layer, x, True)

    def loss(values):
        y = reference.norm_act("evonorm_s0", values, weights, training=True, groups=groups)
        return np.sum(y * y)

    x64, step = x.astype(np.float64), 1e-6
    expected = np.zeros_like(x64)
    for index in np.ndindex(x64.shape):
        delta = np.zeros_like(x64)
        delta[index] = step
        expected[index] = (loss(x64 + delta) - loss(x64 - delta)) / (2 * step)
    np.testing.assert_allclose(gradients[0], expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", ("evonorm_b0", "evonorm_s0", "bn_relu", "frn_tlu"))
def test_mixed_precision_statistics_in_float32(name):
    rng = case_rng("backends-mixed", name)
    x = random_input(rng, random_shape(rng, 4))
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        layer, groups = _layer(name, rng, x.shape[-1])
        layer.build(x.shape)
        weights = randomize_weights(layer, rng)
        output = layer(keras.ops.cast(x, "bfloat16"), training=True)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert keras.backend.standardize_dtype(output.dtype) == "bfloat16"
    assert {keras.backend.standardize_dtype(w.dtype) for w in layer.weights} == {"float32"}
    bfloat16_x = to_numpy(keras.ops.cast(x, "bfloat16"))
    expected = reference.norm_act(name, bfloat16_x, weights, training=True, groups=groups)
    # float32 statistics, one bfloat16 rounding of the output (8 bits of mantissa).
    assert np.max(np.abs(to_numpy(output) - expected) / (np.abs(expected) + 1.0)) <= 2 ** -7


@pytest.mark.parametrize("data_format", ("channels_last", "channels_first"))
def test_shadow_batch_norm_matches_reference(data_format):
    rng = case_rng("backends-shadow", data_format)
    x = random_input(rng, [3, 4, 4, 6])
    inputs = to_format(x, data_format)
    layer = evonorm_tf.ShadowBatchNormalization(3, momentum=0.7, data_format=data_format)
    layer.build(inputs.shape)
    weights = randomize_weights(layer, rng)
    output = layer(inputs, active_paths=2, training=True)
    assert is_native(output)
    x64 = x.astype(np.float64)
    expected = reference.batch_norm(x64, weights["gamma"][1], weights["beta"][1],
                                    reference.batch_mean(x64), reference.batch_variance(x64), 1e-5)
    assert np.max(np.abs(from_format(to_numpy(output), data_format) - expected)) <= TOLERANCE
    moving_variance = to_numpy(layer.moving_variance)
    expected_moving = weights["moving_variance"].copy()
    expected_moving[1] = 0.7 * expected_moving[1] + 0.3 * reference.batch_variance(x64)
    np.testing.assert_allclose(moving_variance, expected_moving, atol=1e-5)
    inference = layer(inputs, active_paths=3, training=False)
    expected = reference.batch_norm(x64, weights["gamma"][2], weights["beta"][2],
                                    weights["moving_mean"][2], weights["moving_variance"][2], 1e-5)
    assert np.max(np.abs(from_format(to_numpy(inference), data_format) - expected)) <= TOLERANCE
    with pytest.raises(ValueError, match="active_paths"):
        layer(inputs, active_paths=4)


@pytest.mark.skipif(BACKEND != "jax", reason="a traced training flag exists under jax.jit")
def test_traced_training_flag_is_refused_on_jax():
    import jax

    layer = evonorm_tf.EvoNormB0()
    x = np.ones((2, 3, 3, 4), np.float32)
    layer.build(x.shape)
    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]
    call = jax.jit(lambda t: layer.stateless_call(trainable, non_trainable, x, training=t)[0])
    with pytest.raises(TypeError, match="training must be a Python bool"):
        call(True)

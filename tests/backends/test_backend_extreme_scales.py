"""Inputs at the edges of float32's range, on the process's Keras backend.

Run on TensorFlow by the default suite (the kernels) and under JAX and
PyTorch by `tests/core/test_keras_backends.py` (`evonorm_tf.backend_formulas`
in `keras.ops`). Squares of values of scale 1e30 overflow float32, but every
statistic enters a layer as its root `sqrt(stat + ε)`, computed at any scale
(`docs/robustness.md`): outputs at scale 1e30 and 1e-30 are the float64
reference's, the gradients on the adversarial sweep's inputs are finite, and
a batch variance beyond float32 enters `moving_variance` as the largest
float32.

The BN baselines are Keras's own `BatchNormalization`, which does not
rescale: at scale 1e30 in training its batch variance overflows (on JAX
and PyTorch it is saturated at the largest float32, `evonorm_tf.layers`),
so its output is finite but not the reference's; that one combination is
not compared.
"""

import keras
import numpy as np
import pytest

import evonorm_tf
import hard_inputs
import reference
from backend_cases import BACKEND, output_and_gradients, randomize_weights, to_numpy
from layer_cases import GROUPED, NAMES, case_rng

GROUPS = 4
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: The sweep's inputs whose gradients must be finite (prime spatial sizes and 4096 channels are
#: shapes, not values; the TensorFlow sweep covers them).
GRADIENT_CASES = ("zeros", "constant", "scale_1e30", "constant_minus_1e30", "scale_1e-30", "mean_1e4",
                  "batch_1", "spatial_1x1")


def _layer(name, shape, rng, **kwargs):
    """A layer built for `shape` with random non-trivial weights; returns (layer, weights as float64)."""
    if name in GROUPED:
        kwargs["groups"] = GROUPS
    layer = evonorm_tf.get_norm_act(name, **kwargs)
    layer.build(shape)
    weights = randomize_weights(layer, rng)
    return layer, weights


@pytest.mark.parametrize("scale", (1e30, 1e-30))
@pytest.mark.parametrize("name", NAMES)
def test_outputs_match_reference_at_extreme_scales(name, scale):
    for training in (True, False):
        if training and scale > 1 and name in reference.BATCH_NORMS:
            continue  # Keras's BatchNormalization (see the module docstring)
        rng = case_rng("backends-extreme", name, str(scale), str(training))
        x = (rng.normal(0.0, 1.0, (3, 4, 4, 8)) * scale).astype(np.float32)
        layer, weights = _layer(name, x.shape, rng)
        y = to_numpy(layer(x, training=training))
        expected = reference.norm_act(name, x.astype(np.float64), weights, training=training,
                                      groups=GROUPS if name in GROUPED else None)
        assert np.all(np.isfinite(expected))
        np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4, err_msg=f"training={training}")


@pytest.mark.parametrize("case", GRADIENT_CASES)
@pytest.mark.parametrize("name", NAMES)
def test_gradients_finite_on_adversarial_inputs(name, case):
    """Outputs, the gradients of `Σ y·r` (fixed random r) w.r.t. x and every trainable weight,
    and the weights (moving statistics included) are finite, in training and inference."""
    rng = case_rng("backends-adversarial", name, case)
    x, groups = hard_inputs.sweep_input(case, rng)
    x = x.astype(np.float32)
    cotangent = rng.normal(0.0, 1.0, x.shape).astype(np.float32)
    layer = evonorm_tf.get_norm_act(name, **({"groups": groups} if name in GROUPED else {}))
    non_finite = []
    for training in (True, False):
        y, gradients = output_and_gradients(layer, x, training, cotangent)
        if not np.all(np.isfinite(y)):
            non_finite.append(f"output (training={training})")
        for label, gradient in zip(["x"] + [w.path for w in layer.trainable_weights], gradients):
            if not np.all(np.isfinite(gradient)):
                non_finite.append(f"d/d{label} (training={training})")
    if not (BACKEND == "tensorflow" and name in reference.BATCH_NORMS):
        # (Keras's BatchNormalization on TensorFlow keeps an inf moving variance: docs/robustness.md.)
        non_finite += [w.path for w in layer.weights if not np.all(np.isfinite(to_numpy(w)))]
    assert not non_finite, f"non-finite: {non_finite}"


@pytest.mark.parametrize("name", reference.B_SERIES)
def test_moving_variance_saturates_at_float32_max_and_recovers(name):
    """Batch variances of ~1e60 enter `moving_variance` as the largest float32, then decay."""
    rng = case_rng("backends-saturation", name)
    huge = (rng.normal(0.0, 1.0, (4, 4, 4, 8)) * 1e30).astype(np.float32)
    unit = rng.normal(0.0, 1.0, (4, 4, 4, 8)).astype(np.float32)
    momentum = 0.5
    layer, weights = _layer(name, huge.shape, rng, momentum=momentum)
    expected = weights["moving_variance"]
    for _ in range(3):
        assert np.all(np.isfinite(to_numpy(layer(huge, training=True))))
        expected = np.minimum(momentum * expected + (1.0 - momentum) * FLOAT32_MAX, FLOAT32_MAX)
    moving = to_numpy(layer.moving_variance)
    assert np.all(np.isfinite(moving))
    np.testing.assert_allclose(moving, expected, rtol=1e-6)
    # Inference with the saturated moving variance: the float64 reference's values.
    y = to_numpy(layer(huge, training=False))
    expected_y = reference.norm_act(name, huge.astype(np.float64), {**weights, "moving_variance": moving},
                                    training=False)
    np.testing.assert_allclose(y, expected_y, rtol=1e-4, atol=1e-4)
    expected = moving
    for _ in range(3):
        layer(unit, training=True)
        expected = reference.moving_variance_update(expected, unit.astype(np.float64), momentum)
    np.testing.assert_allclose(to_numpy(layer.moving_variance), expected, rtol=1e-5)


def test_float16_outputs_saturate_at_65504():
    """EvoNorm-B0 of a constant -1e4 is -1e4/sqrt(ε) ≈ -3.2e6: in float16, -65504 (not -inf)."""
    x = np.full((2, 4, 4, 8), -1e4, np.float32)
    layer = evonorm_tf.get_norm_act("evonorm_b0", dtype="mixed_float16")
    y = layer(keras.ops.cast(x, "float16"), training=True)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    np.testing.assert_array_equal(to_numpy(y), -65504.0)
    exact = to_numpy(evonorm_tf.get_norm_act("evonorm_b0")(x, training=True))
    np.testing.assert_allclose(exact, -1e4 / np.sqrt(1e-5), rtol=1e-5)


@pytest.mark.skipif(BACKEND == "tensorflow", reason="an all-reduce of variances overflows there (docs/robustness.md)")
@pytest.mark.parametrize("name", reference.B_SERIES)
def test_synchronized_b_series_match_reference_at_scale_1e30(name):
    """On JAX and PyTorch one program sees the global batch: `synchronized=True` is as exact."""
    rng = case_rng("backends-extreme-synchronized", name)
    x = (rng.normal(0.0, 1.0, (3, 4, 4, 8)) * 1e30).astype(np.float32)
    layer, weights = _layer(name, x.shape, rng, synchronized=True)
    expected = reference.norm_act(name, x.astype(np.float64), weights, training=True)
    np.testing.assert_allclose(to_numpy(layer(x, training=True)), expected, rtol=1e-4, atol=1e-4)

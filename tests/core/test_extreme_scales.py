"""Inputs at the edges of float32's range give the float64 reference's values, on every kernel path.

Squares of values of scale 1e30 (1e60) are beyond float32 (3.4e38), but
every statistic enters a layer as its root `sqrt(stat + ε)`, which the layers
compute at any scale (`evonorm_tf.statistics.root`). Where the true value is
itself beyond the dtype, the layers saturate: a B-series batch variance
beyond float32 is kept as the largest float32 in `moving_variance` (later
batches bring it back down), and float16 outputs beyond 65504 are 65504.
See docs/robustness.md.
"""

import numpy as np
import pytest
import tensorflow as tf

import reference
from evonorm_tf import kernels
from layer_cases import GROUPED, built_layer, case_rng, make_layer

PATHS = ("cpu", "portable", "reference")
LAYERS = ("evonorm_b0", "evonorm_b1", "evonorm_b2", "evonorm_s0", "evonorm_s1", "evonorm_s2",
          "gn_relu", "frn_tlu")
# Scale-equivariant layers: y(c·x; ε) = y(x; ε/c²) (no `x + 1`, no sigmoid of x).
EQUIVARIANT = ("evonorm_b0", "evonorm_b2", "gn_silu", "frn_tlu")
FLOAT32_MAX = float(np.finfo(np.float32).max)
GROUPS = 4


def _layer(path, name, x, rng, **kwargs):
    with kernels.use(path):
        return built_layer("tf_keras", name, x, rng, groups=GROUPS if name in GROUPED else None, **kwargs)


@pytest.mark.parametrize("scale", (1e30, 1e-30))
@pytest.mark.parametrize("path", PATHS)
def test_outputs_match_reference_at_extreme_scales(path, scale):
    for name in LAYERS:
        for training in (True, False):
            rng = case_rng("extreme", path, name, str(scale), str(training))
            x = (rng.normal(0.0, 1.0, (3, 4, 4, 8)) * scale).astype(np.float32)
            layer, weights = _layer(path, name, x, rng)
            y = layer(tf.constant(x), training=training).numpy()
            expected = reference.norm_act(name, x.astype(np.float64), weights, training=training,
                                          groups=GROUPS if name in GROUPED else None)
            assert np.all(np.isfinite(expected))
            np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4, err_msg=f"{path} {name} {training}")


@pytest.mark.parametrize("path", ("portable", "reference"))
def test_gradients_at_scale_1e30_are_the_rescaled_unit_scale_ones(path):
    """For scale-equivariant layers, ∂L/∂x at c·x is ∂L/∂x at x over c; weight gradients are equal.

    The portable and reference paths. The cpu path's hand-written B-series
    gradients are finite at this scale (the sweep) but not exact under XLA
    (docs/robustness.md).

    With c = 1e30 the ε of the scaled input is ε/c² ≈ 1e-65; the unit-scale
    layer uses ε = 1e-30, as negligible next to variances of order 1. In
    training (batch statistics; a moving variance does not scale with x).
    """
    scale = 1e30
    training = True
    for name in EQUIVARIANT:
        if True:
            rng = case_rng("gradients", path, name)
            x = rng.normal(0.0, 1.0, (3, 4, 4, 8)).astype(np.float32)
            r = tf.constant(rng.normal(0.0, 1.0, x.shape), tf.float32)
            gradients = []
            for inputs, epsilon in ((x * np.float32(scale), 1e-5), (x, 1e-30)):
                layer, _ = _layer(path, name, x, case_rng("weights", name), epsilon=epsilon)
                inputs = tf.constant(inputs)
                with tf.GradientTape() as tape:
                    tape.watch(inputs)
                    loss = tf.reduce_sum(layer(inputs, training=training) * r)
                gradients.append([g.numpy() for g in tape.gradient(loss, [inputs] + layer.trainable_weights)])
            (dx_large, *dw_large), (dx_unit, *dw_unit) = gradients
            label = f"{path} {name} training={training}"
            assert np.all(np.isfinite(dx_large)), label
            np.testing.assert_allclose(dx_large * scale, dx_unit, rtol=1e-3, atol=1e-3, err_msg=label)
            for large, unit in zip(dw_large, dw_unit):
                np.testing.assert_allclose(large, unit, rtol=1e-3, atol=1e-3, err_msg=label)


@pytest.mark.parametrize("path", PATHS)
def test_moving_variance_saturates_at_float32_max_and_recovers(path):
    """Batch variances of ~1e60 enter `moving_variance` as the largest float32: it stays finite."""
    rng = case_rng("saturation", path)
    huge = (rng.normal(0.0, 1.0, (4, 4, 4, 8)) * 1e30).astype(np.float32)
    unit = rng.normal(0.0, 1.0, (4, 4, 4, 8)).astype(np.float32)
    momentum = 0.5
    for name in ("evonorm_b0", "evonorm_b1", "evonorm_b2"):
        layer, weights = _layer(path, name, huge, rng, momentum=momentum)
        expected = weights["moving_variance"]
        for _ in range(3):
            assert np.all(np.isfinite(layer(tf.constant(huge), training=True).numpy()))
            expected = np.minimum(momentum * expected + (1.0 - momentum) * FLOAT32_MAX, FLOAT32_MAX)
        moving = layer.moving_variance.numpy()
        assert np.all(np.isfinite(moving)), f"{path} {name}"
        np.testing.assert_allclose(moving, expected, rtol=1e-6, err_msg=f"{path} {name}")
        # Inference with the saturated moving variance: the float64 reference's values.
        y = layer(tf.constant(huge), training=False).numpy()
        reference_y = reference.norm_act(name, huge.astype(np.float64), {**weights, "moving_variance": moving},
                                         training=False)
        np.testing.assert_allclose(y, reference_y, rtol=1e-4, atol=1e-4, err_msg=f"{path} {name}")
        # Ordinary batches bring it back down as the moving average says.
        expected = moving.astype(np.float64)
        for _ in range(3):
            layer(tf.constant(unit), training=True)
            expected = reference.moving_variance_update(expected, unit.astype(np.float64), momentum)
        np.testing.assert_allclose(layer.moving_variance.numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("path", PATHS)
def test_float16_outputs_saturate_at_65504(path):
    """EvoNorm-B0 of a constant -1e4 is -1e4/sqrt(ε) ≈ -3.2e6: in float16, -65504 (not -inf)."""
    x = np.full((2, 4, 4, 8), -1e4, np.float32)
    with kernels.use(path):
        float16 = make_layer("tf_keras", "evonorm_b0", dtype="mixed_float16")
        float32 = make_layer("tf_keras", "evonorm_b0")
        float16.build(x.shape)
        float32.build(x.shape)
    inputs = tf.constant(x, tf.float16)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        y = float16(inputs, training=True)
    assert y.dtype == tf.float16
    np.testing.assert_array_equal(y.numpy(), np.float16(-65504.0))
    assert np.all(np.isfinite(tape.gradient(y, inputs).numpy()))
    exact = float32(tf.constant(x), training=True).numpy()
    np.testing.assert_allclose(exact, -1e4 / np.sqrt(1e-5), rtol=1e-5)

"""Gradients of every norm-act layer, w.r.t. the input and the parameters.

The layers compute in float32, so a float32 finite difference is only good to
~1e-4 of the Jacobian's scale (measured up to 1.8e-4 here). What catches a
wrong gradient is the comparison of the analytic (TensorFlow) Jacobian against
a float64 central difference of the independent NumPy reference
(tests/reference.py), accurate to ~1e-9: the analytic float32 gradients agree
with it to < 1e-6 relative (tolerance 2e-5), and a wrong or missing term shows
up far above that. On these small inputs the
terms that flow through the statistics (batch, instance, group) are large; each
case asserts that dropping them would exceed the tolerance by a wide margin,
so the test has the power to catch them. The B-series max(), ReLU and TLU
kinks are kept away from every element (inputs are redrawn until they are).
`tf.test.compute_gradient` also checks analytic against float32 numeric
Jacobians, on the layers (w.r.t. x) and on `evonorm_tf.formulas` (w.r.t. x
and every parameter).
"""

import numpy as np
import pytest
import tensorflow as tf

import reference
from evonorm_tf import formulas
from layer_cases import (
    BATCH_DEPENDENT,
    FRONT_ENDS,
    NAMES,
    built_layer,
    case_rng,
    from_format,
    groups_for,
    random_input,
    randomize_weights,
    to_format,
    weight_name,
)

FLOAT32_DELTA = 1.0 / 512
# Kinks must be this far from every element for both finite differences.
KINK_MARGIN = 0.05
# max |analytic − float64 numeric| relative to max |Jacobian|.
REFERENCE_TOLERANCE = 2e-5
# max |analytic − float32 numeric| relative to max |Jacobian| (float32 noise).
FLOAT32_TOLERANCE = 1e-3
# Dropping the statistics' gradient must change the Jacobian this much more.
POWER_FACTOR = 20
LAYOUTS = (("channels_last", 4), ("channels_first", 3), ("channels_first", 5))
# Rank → shape; rank 0 names the smaller shape of the full-Jacobian test.
SHAPES = {3: [3, 5, 4], 4: [3, 3, 2, 4], 5: [2, 2, 3, 2, 4], 0: [2, 3, 4]}
COTANGENTS = 3
# Training, plus inference where it differs (batch statistics); S-series, GN and
# FRN compute the same function in both modes.
MODES = [(name, True) for name in NAMES] + [(name, False) for name in BATCH_DEPENDENT]
EPSILON = 1e-3


def _reference_jacobian(function, x, delta=1e-6):
    """`[y_size, x_size]` float64 central-difference Jacobian of `function` at x."""
    x = np.array(x, dtype=np.float64)
    columns = []
    for index in range(x.size):
        step = np.zeros(x.size)
        step[index] = delta
        step = step.reshape(x.shape)
        columns.append(((function(x + step) - function(x - step)) / (2 * delta)).ravel())
    return np.stack(columns, axis=1)


def _smooth_case(front_end, name, training, data_format, rank):
    """A layer with random weights and an input whose elements are all away from kinks."""
    rng = case_rng("gradients", front_end, name, training, data_format, rank)
    shape = SHAPES[rank]
    groups = groups_for(name, shape[-1], rng)
    layer, _ = built_layer(front_end, name, np.zeros(shape, np.float32), rng,
                           data_format=data_format, groups=groups, epsilon=EPSILON)
    for _ in range(200):
        x = random_input(rng, shape)
        weights = randomize_weights(layer, rng)
        x64 = x.astype(np.float64)
        margin = reference.nonsmooth_margin(name, x64, weights, training=training,
                                            epsilon=EPSILON, groups=groups)
        if margin < KINK_MARGIN:
            continue
        if name in reference.B_SERIES:
            # Both branches of the max() must be exercised.
            left, right = reference.b_series_branches_of(
                name, x64, weights, training=training, epsilon=EPSILON)
            if not 0.2 < np.mean(right > left) < 0.8:
                continue
        return layer, weights, x, groups
    raise AssertionError("no input away from the kinks found; widen the search")


def _reference_function(name, weights, training, groups, **kwargs):
    def function(x):
        return reference.norm_act(name, x, weights, training=training, epsilon=EPSILON,
                                  groups=groups, **kwargs)
    return function


def _in_format(function, data_format):
    """A channels_last reference function as a function of data in `data_format`."""
    return lambda xf: to_format(function(from_format(xf, data_format)), data_format)


@pytest.mark.parametrize("data_format, rank", LAYOUTS, ids=lambda v: str(v))
@pytest.mark.parametrize("name, training", MODES, ids=lambda v: str(v))
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_input_gradient(front_end, name, training, data_format, rank):
    """dL/dx for random cotangents against the float64 reference, every layout."""
    layer, weights, x, groups = _smooth_case(front_end, name, training, data_format, rank)
    rng = case_rng("input-cotangents", front_end, name, training, data_format, rank)
    x_layer = to_format(x, data_format)
    cotangents = rng.normal(size=(COTANGENTS,) + x_layer.shape)

    x_tensor = tf.constant(x_layer)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x_tensor)
        y = layer(x_tensor, training=training)
    analytic = np.stack([tape.gradient(y, x_tensor, output_gradients=tf.constant(u, tf.float32))
                         for u in cotangents])
    jacobian = _reference_jacobian(
        _in_format(_reference_function(name, weights, training, groups), data_format), x_layer)
    expected = cotangents.reshape(COTANGENTS, -1) @ jacobian
    scale = np.max(np.abs(expected))
    error = np.max(np.abs(analytic.reshape(COTANGENTS, -1) - expected)) / scale
    assert error <= REFERENCE_TOLERANCE, f"analytic vs float64 reference: {error:.3g}"

    # Power: holding the statistics fixed changes these gradients far beyond the tolerance.
    if name in reference.BATCH_NORMS and not training:
        return  # inference BN is elementwise: no statistic depends on x
    frozen = _reference_function(name, weights, training, groups,
                                 statistics_of=x.astype(np.float64))
    frozen_expected = cotangents.reshape(COTANGENTS, -1) @ _reference_jacobian(
        _in_format(frozen, data_format), x_layer)
    statistics_part = np.max(np.abs(frozen_expected - expected)) / scale
    assert statistics_part > POWER_FACTOR * REFERENCE_TOLERANCE, statistics_part


@pytest.mark.parametrize("name, training", MODES, ids=lambda v: str(v))
def test_input_jacobian_compute_gradient(name, training):
    """`tf.test.compute_gradient` on the layer: the full analytic Jacobian w.r.t. x
    against the float32 numeric one and against the float64 reference.

    Keras 3 layers only: the tf_keras ones run the same core and formulas, and
    `test_input_gradient` checks them against the float64 reference.
    """
    layer, weights, x, groups = _smooth_case("keras3", name, training, "channels_last", 0)
    forward = tf.function(lambda x: layer(x, training=training), autograph=False)
    (analytic,), (numeric32,) = tf.test.compute_gradient(
        forward, [tf.constant(x)], delta=FLOAT32_DELTA)
    numeric64 = _reference_jacobian(_reference_function(name, weights, training, groups), x)
    scale = np.max(np.abs(numeric64))
    error64 = np.max(np.abs(analytic - numeric64)) / scale
    error32 = np.max(np.abs(analytic - numeric32)) / scale
    assert error64 <= REFERENCE_TOLERANCE, f"analytic vs float64 reference: {error64:.3g}"
    assert error32 <= FLOAT32_TOLERANCE, f"analytic vs float32 numeric: {error32:.3g}"


@pytest.mark.parametrize("data_format", ("channels_last", "channels_first"))
@pytest.mark.parametrize("name, training", MODES, ids=lambda v: str(v))
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_parameter_gradients(front_end, name, training, data_format):
    """dL/dγ, dL/dβ, dL/dv, dL/dτ for a random cotangent, against the float64 reference."""
    rank = 4
    layer, weights, x, groups = _smooth_case(front_end, name, training, data_format, rank)
    rng = case_rng("cotangent", front_end, name, training, data_format)
    cotangent = rng.normal(size=x.shape)  # channels_last
    x_layer = tf.constant(to_format(x, data_format))
    with tf.GradientTape() as tape:
        output = layer(x_layer, training=training)
        loss = tf.reduce_sum(output * to_format(cotangent.astype(np.float32), data_format))
    variables = layer.trainable_weights
    analytic = dict(zip([weight_name(v) for v in variables], tape.gradient(loss, variables)))
    expected_names = {"gamma", "beta"}
    expected_names |= {"v"} if name in ("evonorm_b0", "evonorm_s0") else set()
    expected_names |= {"tau"} if name == "frn_tlu" else set()
    assert set(analytic) == expected_names

    x64 = x.astype(np.float64)
    for parameter, gradient in analytic.items():
        def loss_of(value, parameter=parameter):
            changed = {**weights, parameter: value}
            return np.sum(cotangent * reference.norm_act(
                name, x64, changed, training=training, epsilon=EPSILON, groups=groups))
        numeric = _reference_jacobian(
            lambda value: np.array([loss_of(value)]), weights[parameter])[0]
        scale = np.max(np.abs(numeric))
        assert scale > 1e-2, f"d/d{parameter} too small to test: {scale:.3g}"
        error = np.max(np.abs(gradient.numpy() - numeric)) / scale
        assert error <= REFERENCE_TOLERANCE, f"d/d{parameter}: {error:.3g}"


# -- tf.test.compute_gradient on the formulas, w.r.t. x and every parameter ------------

def _formula_cases():
    """formula → (function of (x, *parameters), parameter names).

    Each key is also the factory name of a layer with those parameters, used to
    draw weights and an input away from kinks.
    """
    eps = EPSILON
    return {
        "evonorm_b0": (lambda x, g, b, v, s: formulas.evonorm_b0(x, g, b, v, s, eps),
                       ("gamma", "beta", "v", "moving_variance")),
        "evonorm_b1": (lambda x, g, b, s: formulas.evonorm_b1(x, g, b, s, eps),
                       ("gamma", "beta", "moving_variance")),
        "evonorm_b2": (lambda x, g, b, s: formulas.evonorm_b2(x, g, b, s, eps),
                       ("gamma", "beta", "moving_variance")),
        "evonorm_s0": (lambda x, g, b, v: formulas.evonorm_s0(x, g, b, v, 2, eps),
                       ("gamma", "beta", "v")),
        "evonorm_s1": (lambda x, g, b: formulas.evonorm_s1(x, g, b, 2, eps), ("gamma", "beta")),
        "evonorm_s2": (lambda x, g, b: formulas.evonorm_s2(x, g, b, 2, eps), ("gamma", "beta")),
        "gn_silu": (lambda x, g, b: tf.nn.silu(formulas.group_norm(x, g, b, 2, eps)),
                    ("gamma", "beta")),
        "frn_tlu": (lambda x, g, b, t: formulas.thresholded_linear_unit(
            formulas.filter_response_norm(x, g, b, eps), t), ("gamma", "beta", "tau")),
    }


@pytest.mark.parametrize("name", sorted(_formula_cases()))
def test_formula_compute_gradient(name):
    """Analytic vs float32 numeric Jacobians of `formulas.*` w.r.t. x and each parameter.

    For the B-series the batch variance is an argument (inference form, where
    the moving variance gets a Jacobian too); the training form, with the
    variance computed from x, is covered through the layers above.
    """
    function, parameters = _formula_cases()[name]
    layer, weights, x, groups = _smooth_case("keras3", name, False, "channels_last", 0)
    arguments = [tf.constant(x)] + [tf.constant(weights[p].astype(np.float32)) for p in parameters]
    analytic, numeric = tf.test.compute_gradient(
        tf.function(function, autograph=False), arguments, delta=FLOAT32_DELTA)
    for label, a, n in zip(("x",) + parameters, analytic, numeric):
        scale = max(np.max(np.abs(a)), 1e-3)
        error = np.max(np.abs(a - n)) / scale
        assert error <= FLOAT32_TOLERANCE, f"d/d{label}: {error:.3g}"
        assert np.any(a != 0), f"d/d{label} is identically zero"

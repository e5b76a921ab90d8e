"""EvoNorm-B0 with a hand-derived gradient on JAX (`evonorm_tf.backend_gradients`).

Run under `KERAS_BACKEND=jax` by `tests/core/test_keras_backends.py` (skipped
on the other backends). The hand-derived gradients must equal JAX's
differentiation of `backend_formulas` and central differences of the
float64 reference (`tests/reference.py`) to 1e-5 of the gradient's largest
value in float32, be finite on the adversarial sweep's inputs, and be what a
layer built with `set_gradients("custom")` uses.
"""

import os

import numpy as np
import pytest

import evonorm_tf
import hard_inputs
import reference
from backend_cases import BACKEND, output_and_gradients
from layer_cases import case_rng, from_format, random_input, random_shape, to_format

pytestmark = pytest.mark.skipif(BACKEND != "jax", reason="the hand-derived gradients are JAX's")

if BACKEND == "jax":
    import jax
    import jax.numpy as jnp

    from evonorm_tf import backend_formulas, backend_gradients

RELATIVE = 1e-5


def _functions(name, data_format, epsilon):
    """(autodiff, custom) functions of (x, γ, β, v) for one layer."""
    assert name == "evonorm_b0"
    return (lambda *a: backend_formulas.evonorm_b_training("b0", *a, epsilon, data_format)[0],
            lambda *a: backend_gradients.evonorm_b_training("b0", *a, epsilon, data_format)[0])


def _weights(rng, channels):
    return {"gamma": rng.uniform(0.5, 1.5, channels) * rng.choice([-1.0, 1.0], channels),
            "beta": rng.normal(0.0, 0.5, channels), "v": rng.uniform(-1.5, 1.5, channels)}


def _value_and_gradients(function, x, weights, cotangent):
    def loss(x, gamma, beta, v):
        return jnp.sum(function(x, gamma, beta, v) * cotangent)

    arguments = [jnp.asarray(x, jnp.float32)] + [jnp.asarray(weights[k], jnp.float32) for k in ("gamma", "beta", "v")]
    value, gradients = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)))(*arguments)
    return float(value), [np.asarray(g, np.float64) for g in gradients]


def _assert_close(actual, expected, label):
    for which, a, e in zip(("x", "gamma", "beta", "v"), actual, expected):
        error = np.max(np.abs(a - e)) / max(np.max(np.abs(e)), 1e-30)
        assert error <= RELATIVE, f"{label} d/d{which}: relative error {error:.2e}"


@pytest.mark.parametrize("rank", (3, 4, 5))
@pytest.mark.parametrize("data_format", ("channels_last", "channels_first"))
@pytest.mark.parametrize("name", ("evonorm_b0",))
def test_custom_gradients_equal_autodiff(name, data_format, rank):
    rng = case_rng("custom-gradients-autodiff", name, data_format, rank)
    x = random_input(rng, random_shape(rng, rank, channels=4))
    weights = _weights(rng, x.shape[-1])
    inputs = to_format(x, data_format)
    cotangent = jnp.asarray(rng.normal(size=inputs.shape), jnp.float32)
    epsilon = float(rng.choice([1e-5, 1e-3]))
    autodiff, custom = (_value_and_gradients(f, inputs, weights, cotangent)
                        for f in _functions(name, data_format, epsilon))
    assert abs(custom[0] - autodiff[0]) <= 1e-5 * max(1.0, abs(autodiff[0]))
    _assert_close(custom[1], autodiff[1], f"{name} {data_format} rank {rank}")


@pytest.mark.parametrize("name", ("evonorm_b0",))
def test_custom_gradients_match_float64_central_differences(name):
    rng = case_rng("custom-gradients-reference", name)
    x = rng.normal(0.3, 1.0, (3, 3, 3, 4))
    weights = _weights(rng, 4)
    weights["moving_variance"] = np.ones(4)
    cotangent = rng.normal(size=x.shape)
    # Away from B0's max() kink, so that central differences are those of one smooth branch.
    assert reference.nonsmooth_margin(name, x, weights, training=True) > 1e-3

    def loss(values):
        inputs = {"x": x, **weights, **values}
        y = reference.norm_act(name, inputs.pop("x"), inputs, training=True)
        return np.sum(y * cotangent)

    expected, step = [], 1e-6
    for which in ("x", "gamma", "beta", "v"):
        value = x if which == "x" else weights[which]
        gradient = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            delta = np.zeros_like(value)
            delta[index] = step
            gradient[index] = (loss({which: value + delta}) - loss({which: value - delta})) / (2 * step)
        expected.append(gradient)
    custom = _value_and_gradients(_functions(name, "channels_last", 1e-5)[1], x.astype(np.float32),
                                  {k: w.astype(np.float32) for k, w in weights.items()},
                                  jnp.asarray(cotangent, jnp.float32))
    _assert_close(custom[1], expected, name)


@pytest.mark.parametrize("case", hard_inputs.SCALE_CASES + ("batch_1", "spatial_1x1"))
@pytest.mark.parametrize("name", ("evonorm_b0",))
def test_custom_gradients_finite_on_adversarial_inputs(name, case):
    rng = case_rng("custom-gradients-adversarial", name, case)
    x, _ = hard_inputs.sweep_input(case, rng)
    x = x.astype(np.float32)
    backend_gradients.set_gradients("custom")
    try:
        layer = evonorm_tf.get_norm_act(name)
        layer.build(x.shape)
    finally:
        backend_gradients.set_gradients(None)
    assert layer._kernels.path == "keras.ops+custom-gradients"
    y, gradients = output_and_gradients(layer, x, True, rng.normal(size=x.shape))
    assert np.all(np.isfinite(y))
    for label, gradient in zip(["x", "gamma", "beta", "v"], gradients):
        assert np.all(np.isfinite(gradient)), f"non-finite d/d{label}"


def test_custom_gradients_at_scale_1e30_are_the_rescaled_unit_scale_ones():
    """B0 is scale-equivariant: ∂L/∂x at c·x is ∂L/∂x at x over c (ε scaled by 1/c²), weights equal."""
    rng = case_rng("custom-gradients-equivariant")
    x = rng.normal(0.0, 1.0, (3, 4, 4, 8))
    weights = _weights(rng, 8)
    cotangent = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    custom = backend_gradients.evonorm_b_training
    large = _value_and_gradients(lambda *a: custom("b0", *a, 1e-5)[0], x * 1e30, weights, cotangent)[1]
    unit = _value_and_gradients(lambda *a: custom("b0", *a, 1e-30)[0], x, weights, cotangent)[1]
    np.testing.assert_allclose(large[0] * 1e30, unit[0], rtol=1e-3, atol=1e-3)
    for a, b in zip(large[1:], unit[1:]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


def test_layers_choose_their_gradients_when_built(monkeypatch):
    def built(name):
        layer = evonorm_tf.get_norm_act(name, groups=2) if name == "evonorm_s0" else evonorm_tf.get_norm_act(name)
        layer.build((2, 3, 3, 4))
        return layer._kernels

    monkeypatch.setenv(backend_gradients.ENVIRONMENT_VARIABLE, "custom")
    assert built("evonorm_b0").evonorm_b_training is backend_gradients.evonorm_b_training
    assert built("evonorm_s0").evonorm_s0 is backend_formulas.evonorm_s0  # JAX's gradient
    backend_gradients.set_gradients("autodiff")
    try:
        assert built("evonorm_b0").evonorm_b_training is backend_formulas.evonorm_b_training
    finally:
        backend_gradients.set_gradients(None)
    monkeypatch.setenv(backend_gradients.ENVIRONMENT_VARIABLE, "fast")
    with pytest.raises(ValueError, match="EVONORM_TF_JAX_GRADIENTS.*'fast'"):
        built("evonorm_b0")
    with pytest.raises(ValueError, match="'fast'"):
        backend_gradients.set_gradients("fast")

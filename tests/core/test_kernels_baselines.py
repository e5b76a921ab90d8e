"""GroupNorm, FRN and TLU on the `cpu` and `portable` kernel paths against NumPy float64.

Values and every gradient (x, γ, β, τ) at ranks 3 to 5 in both data formats,
spatial sizes above the cpu kernels' block, a batch of one and 1×1 maps,
|mean| >> std, and bfloat16 / float16 inputs. Gradients are directional
derivatives of `L = Σ y·dy`, by central differences of the float64 reference.
"""

import numpy as np
import pytest
import tensorflow as tf

from evonorm_tf import kernels

EPS = 1e-5
GROUPS = 4
PATHS = ["cpu", "portable"]
NAMES = ["group_norm", "filter_response_norm", "frn_tlu"]
SHAPES = {
    "channels_last": [(3, 7, 8), (3, 4, 5, 8), (2, 3, 2, 3, 8), (2, 6, 8, 8), (1, 1, 1, 8)],
    "channels_first": [(3, 8, 7), (3, 8, 4, 5), (2, 8, 3, 2, 3), (2, 8, 37)],
}
CASES = [(f, s) for f, shapes in SHAPES.items() for s in shapes]


def reference(name, x, gamma, beta, tau, data_format):
    """float64 GN (4 groups), FRN, or FRN + TLU."""
    if data_format == "channels_first":
        x = np.moveaxis(x, 1, -1)
    spatial = tuple(range(1, x.ndim - 1))
    if name == "group_norm":
        grouped = x.reshape(x.shape[:-1] + (GROUPS, -1))
        axes = spatial + (x.ndim,)
        mean = grouped.mean(axis=axes, keepdims=True)
        variance = grouped.var(axis=axes, keepdims=True)
        y = ((grouped - mean) / np.sqrt(variance + EPS)).reshape(x.shape) * gamma + beta
    else:
        y = x / np.sqrt((x ** 2).mean(axis=spatial, keepdims=True) + EPS) * gamma + beta
        if name == "frn_tlu":
            y = np.maximum(y, tau)
    return np.moveaxis(y, -1, 1) if data_format == "channels_first" else y


def _function(selection, name, data_format):
    if name == "group_norm":
        return lambda x, g, b, t: selection.group_norm(x, g, b, GROUPS, EPS, data_format)
    if name == "filter_response_norm":
        return lambda x, g, b, t: selection.filter_response_norm(x, g, b, EPS, data_format)
    return lambda x, g, b, t: selection.thresholded_linear_unit(
        selection.filter_response_norm(x, g, b, EPS, data_format), t, data_format)


def _inputs(shape, data_format, seed, mean=0.3, std=1.5):
    rng = np.random.default_rng(seed)
    channels = shape[-1] if data_format == "channels_last" else shape[1]
    x = rng.normal(mean, std, size=shape).astype(np.float32).astype(np.float64)
    return x, rng.uniform(0.5, 1.5, channels), rng.normal(0, 0.5, channels), rng.normal(0, 0.5, channels)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("data_format,shape", CASES)
def test_values_and_gradients_match_float64(path, name, data_format, shape):
    x, gamma, beta, tau = _inputs(shape, data_format, seed=len(shape) + shape[-1])
    function = _function(kernels.Selection(path), name, data_format)
    tensors = [tf.constant(t, tf.float32) for t in (x, gamma, beta, tau)]
    rng = np.random.default_rng(1)
    dy = rng.normal(size=shape)
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        y = function(*tensors)
    grads = tape.gradient(y, tensors, output_gradients=tf.constant(dy, tf.float32))
    expected = reference(name, x, gamma, beta, tau, data_format)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-5)

    params = [x, gamma, beta, tau]
    for index, (param, grad) in enumerate(zip(params, grads)):
        if index == 3 and name != "frn_tlu":
            assert grad is None
            continue
        grad = grad.numpy().astype(np.float64)
        direction = rng.normal(size=param.shape)
        step = 1e-6 * max(1.0, float(np.abs(param).max()))
        moved = [[p + sign * step * direction if i == index else p for i, p in enumerate(params)]
                 for sign in (1, -1)]
        numeric = sum(sign * float((reference(name, *m, data_format) * dy).sum())
                      for sign, m in zip((1, -1), moved)) / (2 * step)
        analytic = float((grad * direction).sum())
        scale = np.abs(grad).sum() * np.abs(direction).max() / max(1, grad.size) ** 0.5 + 1e-3
        assert abs(analytic - numeric) <= 2e-4 * max(abs(numeric), scale), (
            f"{path} {name} param {index}: analytic {analytic} vs numeric {numeric}")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", ["group_norm", "filter_response_norm"])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_large_mean(path, name, data_format):
    """|mean| >> std (channel means -300 … 500, std 0.01): statistics do not cancel."""
    shape = SHAPES[data_format][1]
    x, gamma, beta, tau = _inputs(shape, data_format, seed=3, mean=0.0, std=0.01)
    offset = np.linspace(-300.0, 500.0, gamma.size)
    x = (x + (offset if data_format == "channels_last" else offset[:, None, None])).astype(np.float32).astype(np.float64)
    y = _function(kernels.Selection(path), name, data_format)(*[tf.constant(t, tf.float32) for t in (x, gamma, beta, tau)])
    expected = reference(name, x, gamma, beta, tau, data_format)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_half_precision_inputs(path, name, dtype):
    """float32 statistics of the rounded inputs; y within one rounding of the output dtype, dx close."""
    shape = (2, 6, 8, 8)
    x, gamma, beta, tau = _inputs(shape, "channels_last", seed=5, mean=4.0, std=0.5)
    x_half = tf.cast(tf.constant(x, tf.float32), dtype)
    x_rounded = tf.cast(x_half, tf.float64).numpy()
    function = _function(kernels.Selection(path), name, "channels_last")
    weights = [tf.constant(t, tf.float32) for t in (gamma, beta, tau)]
    dy = tf.constant(np.random.default_rng(6).normal(size=shape), tf.float32)
    results = []
    for xt in (tf.constant(x_rounded, tf.float32), x_half):
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = function(xt, *weights)
        results.append((y, tape.gradient(y, xt, output_gradients=tf.cast(dy, y.dtype))))
    (_, dx32), (y, dx) = results
    # cpu: y in x's dtype, widened inside the kernels; portable: float32, as the definitions.
    assert y.dtype == (dtype if path == "cpu" else tf.float32) and dx.dtype == dtype
    expected = reference(name, x_rounded, gamma, beta, tau, "channels_last")
    got = tf.cast(y, tf.float64).numpy()
    significand = {tf.bfloat16: 8, tf.float16: 11}[dtype] if y.dtype != tf.float32 else 23
    assert np.all(np.abs(got - expected) <= 2.0 ** -significand * np.abs(expected) + 1e-5), np.abs(got - expected).max()
    dx32 = dx32.numpy()
    np.testing.assert_allclose(tf.cast(dx, tf.float32).numpy(), dx32, rtol=1e-2, atol=1e-2 * np.abs(dx32).max())

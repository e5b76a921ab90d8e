"""The EvoNorm kernels of the `cpu` and `portable` paths (`evonorm_tf.kernels`).

Every test runs on both paths, the cpu path twice: as it runs by default (at static
channels_last shapes its passes over x are the native ops), and with its XLA-compiled
kernels there (`cpu_launch.NATIVE = False`, as where no C++ compiler is found); details of the cpu kernels alone (block
sizes, sums, compiled vs plain launches, where mixed-precision inputs are
widened) are in `test_cpu_kernel_internals.py`.

Forward values and every gradient (x, γ, β, v, and the batch variance when it
is an input) are checked against an independent NumPy float64 reference
written from the paper's formulas: gradients as directional derivatives of
`L = Σ y·dy` by central differences in float64.
"""

import numpy as np
import pytest
import tensorflow as tf

from evonorm_tf import formulas, kernels
from evonorm_tf.kernels import cpu_launch

EPS = 1e-5

# Every test of this module runs on each kernel path (`kernels.Selection`).
_PATH = {"kernels": kernels.Selection("cpu")}


@pytest.fixture(autouse=True, params=["cpu", "cpu-xla", "portable"])
def kernel_path(request, monkeypatch):
    """The kernel path's name; "cpu-xla": the cpu path compiling its kernels at static shapes."""
    path = request.param.split("-")[0]
    if request.param == "cpu-xla":
        monkeypatch.setattr(cpu_launch, "NATIVE", False)
    _PATH["kernels"] = kernels.Selection(path)
    yield path
    _PATH["kernels"] = kernels.Selection("cpu")


def _impl(name):
    return getattr(_PATH["kernels"], name)


# -- NumPy float64 reference -------------------------------------------------------------


def _axes(rank, data_format):
    spatial = tuple(range(1, rank - 1)) if data_format == "channels_last" else tuple(range(2, rank))
    return spatial


def _vec(v, rank, data_format):
    return v if data_format == "channels_last" else v.reshape([-1] + [1] * (rank - 2))


def _group_stat(x, groups, data_format, centered):
    if data_format == "channels_first":
        x = np.moveaxis(x, 1, -1)
    shape = x.shape
    xg = x.reshape(shape[:-1] + (groups, shape[-1] // groups))
    axes = tuple(range(1, len(shape) - 1)) + (len(shape),)
    stat = xg.var(axis=axes, keepdims=True) if centered else (xg ** 2).mean(axis=axes, keepdims=True)
    stat = np.broadcast_to(stat, xg.shape).reshape(shape)
    stat = stat.mean(axis=tuple(range(1, len(shape) - 1)), keepdims=True)
    return np.moveaxis(stat, -1, 1) if data_format == "channels_first" else stat


def reference(kind, x, gamma, beta, v, data_format, groups=4, batch_variance=None):
    """float64 EvoNorm output; B-series use x's batch variance unless one is given."""
    rank = x.ndim
    spatial = _axes(rank, data_format)
    g, b, vv = (_vec(t, rank, data_format) for t in (gamma, beta, v))
    sig = lambda t: 1.0 / (1.0 + np.exp(-t))  # noqa: E731
    if kind.startswith("b"):
        if batch_variance is None:
            bvar = x.var(axis=(0,) + spatial, keepdims=True)
        else:
            bvar = _vec(batch_variance, rank, data_format)
        left = np.sqrt(bvar + EPS)
        if kind == "b0":
            right = vv * x + np.sqrt(x.var(axis=spatial, keepdims=True) + EPS)
        elif kind == "b1":
            right = (x + 1.0) * np.sqrt((x ** 2).mean(axis=spatial, keepdims=True) + EPS)
        else:
            right = np.sqrt((x ** 2).mean(axis=spatial, keepdims=True) + EPS) - x
        return x / np.maximum(left, right) * g + b
    numerator = x * sig((vv if kind == "s0" else 1.0) * x)
    stat = _group_stat(x, groups, data_format, centered=kind != "s2")
    return numerator / np.sqrt(stat + EPS) * g + b


# -- helpers ------------------------------------------------------------------------


def _inputs(shape, data_format, seed=0, mean=0.3, std=1.5):
    rng = np.random.default_rng(seed)
    channels = shape[-1] if data_format == "channels_last" else shape[1]
    x = rng.normal(mean, std, size=shape)
    gamma = rng.uniform(0.5, 1.5, channels)
    beta = rng.normal(0, 0.5, channels)
    v = rng.uniform(0.5, 1.5, channels)
    return x, gamma, beta, v


def _call(kind, x, gamma, beta, v, data_format, groups, batch_variance=None, dtype=tf.float32):
    x = tf.cast(x if isinstance(x, tf.Tensor) else tf.constant(x, tf.float32), dtype)
    args = [tf.constant(t, tf.float32) for t in (gamma, beta, v)]
    if kind.startswith("b"):
        extra = [args[2]] if kind == "b0" else []
        if batch_variance is None:
            y, _ = _impl("evonorm_b_training")(kind, x, args[0], args[1], args[2] if kind == "b0" else None,
                                               EPS, data_format)
            return y
        function = {"b0": _impl("evonorm_b0"), "b1": _impl("evonorm_b1"), "b2": _impl("evonorm_b2")}[kind]
        return function(x, args[0], args[1], *extra, batch_variance, EPS, data_format)
    function = {"s0": _impl("evonorm_s0"), "s1": _impl("evonorm_s1"), "s2": _impl("evonorm_s2")}[kind]
    extra = [args[2]] if kind == "s0" else []
    return function(x, args[0], args[1], *extra, groups, EPS, data_format)


def _gradients(kind, x, gamma, beta, v, dy, data_format, groups, moving=None, jit=False):
    """TF gradients of Σ y·dy w.r.t. (x, γ, β, v, moving variance)."""
    tensors = [tf.constant(t, tf.float32) for t in (x, gamma, beta, v)]
    if moving is not None:
        tensors.append(tf.constant(moving, tf.float32))

    def run(*tensors):
        with tf.GradientTape() as tape:
            tape.watch(list(tensors))
            bvar = tensors[4] if moving is not None else None
            y = _call_tensor(kind, tensors, data_format, groups, bvar)
        return tape.gradient(y, list(tensors), output_gradients=tf.constant(dy, tf.float32))

    function = tf.function(run, jit_compile=True) if jit else run
    return [g.numpy().astype(np.float64) if g is not None else None for g in function(*tensors)]


def _call_tensor(kind, tensors, data_format, groups, bvar):
    x, gamma, beta, v = tensors[:4]
    if kind.startswith("b"):
        if bvar is None:
            return _impl("evonorm_b_training")(kind, x, gamma, beta, v if kind == "b0" else None,
                                               EPS, data_format)[0]
        function = {"b0": _impl("evonorm_b0"), "b1": _impl("evonorm_b1"), "b2": _impl("evonorm_b2")}[kind]
        extra = [v] if kind == "b0" else []
        return function(x, gamma, beta, *extra, bvar, EPS, data_format)
    function = {"s0": _impl("evonorm_s0"), "s1": _impl("evonorm_s1"), "s2": _impl("evonorm_s2")}[kind]
    extra = [v] if kind == "s0" else []
    return function(x, gamma, beta, *extra, groups, EPS, data_format)


def _directional_check(kind, x, gamma, beta, v, data_format, groups, moving=None, jit=False, seed=1):
    rng = np.random.default_rng(seed)
    dy = rng.normal(size=x.shape)
    grads = _gradients(kind, x, gamma, beta, v, dy, data_format, groups, moving, jit)
    params = [x, gamma, beta, v] + ([moving] if moving is not None else [])

    def loss(values):
        y = reference(kind, values[0], values[1], values[2], values[3], data_format, groups,
                      batch_variance=values[4] if moving is not None else None)
        return float((y * dy).sum())

    uses_v = kind in ("b0", "s0")
    for index, (param, grad) in enumerate(zip(params, grads)):
        if index == 3 and not uses_v:
            assert grad is None or np.allclose(grad, 0.0), "v must get no gradient"
            continue
        direction = rng.normal(size=param.shape)
        step = 1e-6 * max(1.0, float(np.abs(param).max()))
        plus = [p.copy() for p in params]
        minus = [p.copy() for p in params]
        plus[index] = param + step * direction
        minus[index] = param - step * direction
        numeric = (loss(plus) - loss(minus)) / (2 * step)
        analytic = float((grad * direction).sum())
        scale = np.abs(grad).sum() * np.abs(direction).max() / max(1, grad.size) ** 0.5 + 1e-3
        assert abs(analytic - numeric) <= 2e-4 * max(abs(numeric), scale), (
            f"{kind} {data_format} param {index}: analytic {analytic} vs numeric {numeric}"
        )


SHAPES = {
    ("channels_last", 3): (3, 7, 8),
    ("channels_last", 4): (3, 4, 5, 8),
    ("channels_last", 5): (2, 3, 2, 3, 8),
    ("channels_first", 3): (3, 8, 7),
    ("channels_first", 4): (3, 8, 4, 5),
    ("channels_first", 5): (2, 8, 3, 2, 3),
}
KINDS = ["b0", "b1", "b2", "s0", "s1", "s2"]


# -- forward -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("data_format,rank", list(SHAPES))
def test_forward_matches_float64_reference(kind, data_format, rank):
    x, gamma, beta, v = _inputs(SHAPES[(data_format, rank)], data_format)
    x = x.astype(np.float32).astype(np.float64)
    y = _call(kind, x, gamma, beta, v, data_format, groups=4).numpy()
    expected = reference(kind, x, gamma, beta, v, data_format, groups=4)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


# B2's `sqrt(mu2_hw + ε) − x` itself cancels in float32 when |mean| >> std (for
# any implementation), so it is left out of the large-mean check.
@pytest.mark.parametrize("kind", ["b0", "b1", "s0", "s1", "s2"])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_forward_large_mean(kind, data_format):
    """|mean| >> std: the shifted one-pass statistics must not cancel."""
    shape = SHAPES[(data_format, 4)]
    x, gamma, beta, v = _inputs(shape, data_format, mean=0.0, std=0.01)
    channels = shape[-1] if data_format == "channels_last" else shape[1]
    offset = np.linspace(-300.0, 500.0, channels)
    x = (x + _vec(offset, 4, data_format)).astype(np.float32).astype(np.float64)
    y = _call(kind, x, gamma, beta, v, data_format, groups=4).numpy()
    expected = reference(kind, x, gamma, beta, v, data_format, groups=4)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("kind", ["b0", "b1", "b2"])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_b_series_inference_with_moving_variance(kind, data_format):
    x, gamma, beta, v = _inputs(SHAPES[(data_format, 4)], data_format, seed=3)
    x = x.astype(np.float32).astype(np.float64)
    moving = np.random.default_rng(4).uniform(0.5, 3.0, gamma.shape)
    y = _call(kind, x, gamma, beta, v, data_format, 4, batch_variance=tf.constant(moving, tf.float32))
    expected = reference(kind, x, gamma, beta, v, data_format, batch_variance=moving)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_training_returns_batch_variance_and_matches_plain_graph():
    x, gamma, beta, v = _inputs((4, 5, 6, 8), "channels_last", seed=5)
    y, variance = _impl("evonorm_b_training")("b0", tf.constant(x, tf.float32), gamma, beta, v)
    np.testing.assert_allclose(variance.numpy(), x.var(axis=(0, 1, 2)), rtol=1e-5)
    y_plain, variance_plain = formulas.evonorm_b_training("b0", tf.constant(x, tf.float32), gamma, beta, v)
    np.testing.assert_allclose(y.numpy(), y_plain.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(variance.numpy(), variance_plain.numpy(), rtol=1e-5)


# The dtype of y for bfloat16 x: the cpu kernels write it in x's dtype (widened inside the
# kernel, see evonorm_tf.kernels.cpu), the portable path returns float32 as the definitions.
OUTPUT_DTYPE = {"cpu": tf.bfloat16, "portable": tf.float32}


@pytest.mark.parametrize("kind", KINDS)
def test_bfloat16_input_uses_float32_statistics(kind, kernel_path):
    x, gamma, beta, v = _inputs((3, 4, 4, 8), "channels_last", seed=6, mean=4.0, std=0.5)
    x_bf16 = tf.cast(tf.constant(x, tf.float32), tf.bfloat16)
    x_rounded = tf.cast(x_bf16, tf.float64).numpy()
    y = _call(kind, x_rounded, gamma, beta, v, "channels_last", 4, dtype=tf.bfloat16)
    assert y.dtype == OUTPUT_DTYPE[kernel_path]
    expected = reference(kind, x_rounded, gamma, beta, v, "channels_last", groups=4)
    got = tf.cast(y, tf.float64).numpy()
    if y.dtype == tf.bfloat16:
        # float32 statistics, then one rounding of y to bfloat16 (8 significant bits): within 2^-8 of
        # each value. Statistics in bfloat16 would be off by several times that.
        assert np.all(np.abs(got - expected) <= 2.0 ** -8 * np.abs(expected) + 1e-5), np.abs(got - expected).max()
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


# -- gradients --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("data_format,rank", list(SHAPES))
def test_gradients_training(kind, data_format, rank):
    x, gamma, beta, v = _inputs(SHAPES[(data_format, rank)], data_format, seed=rank)
    _directional_check(kind, x, gamma, beta, v, data_format, groups=4)


@pytest.mark.parametrize("kind", ["b0", "b1", "b2"])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_gradients_inference_include_moving_variance(kind, data_format):
    x, gamma, beta, v = _inputs(SHAPES[(data_format, 4)], data_format, seed=7)
    moving = np.random.default_rng(8).uniform(0.5, 3.0, gamma.shape)
    _directional_check(kind, x, gamma, beta, v, data_format, groups=4, moving=moving)


@pytest.mark.parametrize("kind", ["b0", "b1", "b2"])
def test_b_series_branches_both_taken(kind):
    """Inputs where max() picks the batch term for some elements and the instance term for others."""
    x, gamma, beta, v = _inputs((4, 5, 5, 8), "channels_last", seed=9, mean=0.0, std=1.0)
    x[:2] *= 4.0  # the first samples have a larger spread: their instance term wins more often
    instance = {"b0": np.sqrt(x.var(axis=(1, 2), keepdims=True) + EPS),
                "b1": np.sqrt((x ** 2).mean(axis=(1, 2), keepdims=True) + EPS),
                "b2": np.sqrt((x ** 2).mean(axis=(1, 2), keepdims=True) + EPS)}[kind]
    right = {"b0": v * x + instance, "b1": (x + 1) * instance, "b2": instance - x}[kind]
    batch_std = np.sqrt(x.var(axis=(0, 1, 2)) + EPS)
    on_right = right > batch_std
    assert 0.1 < on_right.mean() < 0.9, on_right.mean()
    _directional_check(kind, x, gamma, beta, v, "channels_last", groups=4)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_under_xla(kind):
    x, gamma, beta, v = _inputs((3, 4, 5, 8), "channels_last", seed=10)
    _directional_check(kind, x, gamma, beta, v, "channels_last", groups=4, jit=True)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(1, 4, 5, 8), (3, 1, 1, 8), (1, 1, 1, 8)])
def test_gradients_batch_one_and_one_by_one(kind, shape):
    x, gamma, beta, v = _inputs(shape, "channels_last", seed=11)
    y = _call(kind, x, gamma, beta, v, "channels_last", 4).numpy()
    np.testing.assert_allclose(y, reference(kind, x, gamma, beta, v, "channels_last", 4), rtol=1e-5, atol=1e-5)
    _directional_check(kind, x, gamma, beta, v, "channels_last", groups=4)


@pytest.mark.parametrize("kind", ["b0", "s0"])
def test_gradients_large_mean(kind):
    x, gamma, beta, v = _inputs((3, 4, 5, 8), "channels_last", seed=12, mean=0.0, std=0.05)
    x = x + np.linspace(20.0, 60.0, 8)
    v = v * 0.05  # keeps v·x where σ' is not ~0, so dv is a meaningful check
    _directional_check(kind, x, gamma, beta, v, "channels_last", groups=4)


@pytest.mark.parametrize("kind", KINDS)
def test_bfloat16_gradient_close_to_float32(kind):
    x, gamma, beta, v = _inputs((3, 4, 4, 8), "channels_last", seed=13)
    dy = tf.constant(np.random.default_rng(14).normal(size=x.shape), tf.float32)
    results = []
    for dtype in (tf.float32, tf.bfloat16):
        xt = tf.cast(tf.cast(tf.constant(x, tf.float32), tf.bfloat16), dtype)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = _call(kind, xt, gamma, beta, v, "channels_last", 4, dtype=dtype)
        results.append(tf.cast(tape.gradient(y, xt, output_gradients=dy), tf.float32).numpy())
    scale = np.abs(results[0]).max()
    np.testing.assert_allclose(results[1], results[0], atol=1e-2 * scale)


def test_reference_path_gives_same_values():
    x, gamma, beta, v = _inputs((2, 3, 4, 8), "channels_last", seed=15)
    xt = tf.constant(x, tf.float32)
    fast = _impl("evonorm_s0")(xt, gamma, beta, v, 4)
    plain = formulas.evonorm_s0(xt, gamma, beta, v, 4)
    np.testing.assert_allclose(fast.numpy(), plain.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["evonorm_b0", "evonorm_b1", "evonorm_b2"])
def test_layer_training_step_and_moving_variance(name, kernel_path):
    """The layers reach the training op of their path: output, gradients and moving variance."""
    from evonorm_tf import tf_keras as evonorm_tf_keras

    x, _, _, _ = _inputs((4, 5, 6, 8), "channels_last", seed=16)
    layer = evonorm_tf_keras.get_norm_act(name, momentum=0.9)
    xt = tf.constant(x, tf.float32)
    with kernels.use(kernel_path):
        layer.build(xt.shape)
    assert layer._kernels.path == kernel_path
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt, training=True)
    dx = tape.gradient(y, xt)
    ones = np.ones(8)
    np.testing.assert_allclose(y.numpy(), reference(name[-2:], x, ones, 0 * ones, ones, "channels_last"),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.9 + 0.1 * x.var(axis=(0, 1, 2)), rtol=1e-5)
    assert np.all(np.isfinite(dx.numpy())) and np.abs(dx.numpy()).max() > 0


# -- blocked spatial sums (spatial size above the kernels' block) -----------------------
# The kernels sum more spatial positions than cpu_sums.B_BLOCK (8) or S_BLOCK (16)
# in blocks: 48 → 6 blocks of 8 or 3 of 16, 64 → 8 of 8 or 4 of 16, 49 → 7 of 7,
# 37 (prime) → 37 of 1, the addition tree of cpu_sums._finish sums the elements themselves.

LARGE_SPATIAL = {
    "48_channels_last": ((2, 6, 8, 8), "channels_last"),
    "64_channels_last": ((2, 8, 8, 8), "channels_last"),
    "49_channels_last": ((2, 7, 7, 8), "channels_last"),
    "37_channels_last": ((2, 37, 8), "channels_last"),
    "48_channels_first": ((2, 8, 6, 8), "channels_first"),
    "37_channels_first": ((2, 8, 37), "channels_first"),
}


BLOCKED_CASES = [(kind, case) for kind in KINDS for case in ("48_channels_last", "37_channels_first")] + [
    (kind, case) for kind in ("b0", "s0")
    for case in ("64_channels_last", "49_channels_last", "37_channels_last", "48_channels_first")]


@pytest.mark.parametrize("kind,case", BLOCKED_CASES)
def test_blocked_sums_forward_and_gradients(kind, case):
    shape, data_format = LARGE_SPATIAL[case]
    x, gamma, beta, v = _inputs(shape, data_format, seed=17)
    x32 = x.astype(np.float32).astype(np.float64)
    y = _call(kind, x32, gamma, beta, v, data_format, groups=4).numpy()
    np.testing.assert_allclose(y, reference(kind, x32, gamma, beta, v, data_format, groups=4), rtol=1e-5, atol=1e-5)
    _directional_check(kind, x, gamma, beta, v, data_format, groups=4)


@pytest.mark.parametrize("kind", ["b0", "b1", "b2"])
def test_blocked_sums_inference_gradients(kind):
    x, gamma, beta, v = _inputs((2, 6, 8, 8), "channels_last", seed=18)
    moving = np.random.default_rng(19).uniform(0.5, 3.0, gamma.shape)
    _directional_check(kind, x, gamma, beta, v, "channels_last", groups=4, moving=moving)


@pytest.mark.parametrize("kind", ["b0", "s0"])
def test_blocked_sums_large_mean(kind):
    """|mean| >> std with blocked sums: forward and gradients stay accurate."""
    x, gamma, beta, v = _inputs((2, 6, 8, 8), "channels_last", seed=20, mean=0.0, std=0.05)
    x = x + np.linspace(20.0, 60.0, 8)
    v = v * 0.05
    x32 = x.astype(np.float32).astype(np.float64)
    y = _call(kind, x32, gamma, beta, v, "channels_last", 4).numpy()
    expected = reference(kind, x32, gamma, beta, v, "channels_last", groups=4)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    _directional_check(kind, x, gamma, beta, v, "channels_last", groups=4)


@pytest.mark.parametrize("kind", KINDS)
def test_bfloat16_blocked_gradients_close_to_float32(kind):
    """bfloat16 inputs take the same float32 kernels: gradients match float32 ones at bfloat16 precision."""
    x, gamma, beta, v = _inputs((2, 6, 8, 8), "channels_last", seed=21)
    dy = tf.constant(np.random.default_rng(22).normal(size=x.shape), tf.float32)
    x_bf16 = tf.cast(tf.constant(x, tf.float32), tf.bfloat16)
    x_rounded = tf.cast(x_bf16, tf.float64).numpy()
    results = []
    for xt in (tf.constant(x_rounded, tf.float32), x_bf16):
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = _call(kind, xt, gamma, beta, v, "channels_last", 4, dtype=xt.dtype)
        results.append(tf.cast(tape.gradient(y, xt, output_gradients=dy), tf.float32).numpy())
    # The float32 gradient at the bfloat16-rounded point is itself checked against float64 above;
    # the bfloat16 one differs only by rounding the gradient to bfloat16.
    np.testing.assert_allclose(results[1], results[0], rtol=1e-2, atol=1e-2 * np.abs(results[0]).max())


def test_many_shapes_trace_each_kernel_once_without_retracing_warnings(caplog):
    """One compiled function per kernel configuration and shape: no tf.function retracing warnings."""
    gamma, beta, v = (tf.ones([8]), tf.zeros([8]), tf.ones([8]))
    with caplog.at_level("WARNING"):
        for size in range(3, 10):
            x = tf.random.normal([2, size, size + 1, 8])
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = _impl("evonorm_b_training")("b0", x, gamma, beta, v)[0] + _impl("evonorm_s0")(x, gamma, beta, v, 4)
            tape.gradient(y, x)
    assert not [r for r in caplog.records if "retracing" in r.getMessage()], caplog.text

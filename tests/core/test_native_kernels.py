"""The cpu path's native ops (`evonorm_tf.kernels.native`): each pass against NumPy float64, the layers
that run them at shapes XLA does not compile, and what happens where they cannot be built.

* Each op (statistics, y, the backward sums, dx; B0, B1, B2, the S-series,
  GroupNorm and FRN)
  against its formula in NumPy float64 on the same inputs: float32 within
  float32 rounding, bfloat16 and float16 within one rounding of the output
  dtype; odd channel counts, one sample, sizes that do not fill a block.
* The layers in a `tf.function` with `None` dimensions (traced once) run the
  native ops, not x-sized TensorFlow arithmetic, and match the float64
  reference (`tests/reference.py`) at mean 100 and at scales 1e30 and 1e-30;
  their gradients match the plain-op path's.
* An unknown `EVONORM_TF_NATIVE` is a ValueError naming it; a failed build
  logs one warning and the plain ops run (or, with `EVONORM_TF_NATIVE=1`,
  raises); ops given mismatched shapes refuse them naming the shape received.
* Traced for a SavedModel the layers keep plain TensorFlow ops: the model
  loads and runs in a process that never imports evonorm_tf.
"""

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import evonorm_tf
import reference
from evonorm_tf import kernels
from evonorm_tf.kernels import native

DOWNSCALE = 2.0**-80
SHAPES = [(1, 7, 3), (3, 50, 17), (2, 1030, 64)]
DTYPES = {"float32": tf.float32, "bfloat16": tf.bfloat16, "float16": tf.float16}
# Allowed error relative to the largest |expected| (float32), or per element (one rounding of the output dtype).
ROUNDING = {"float32": 2e-6, "bfloat16": 2.0**-8, "float16": 2.0**-11}


@pytest.fixture(scope="module")
def ops():
    native._state.clear()
    assert native.available(True), "the native ops build on the test machine (a C++ compiler is installed)"
    return native._ops()


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _inputs(shape, dtype, seed, mean=0.0):
    rng = np.random.default_rng(seed)
    n, s, c = shape
    x = tf.cast(tf.constant(mean + rng.normal(0, 1.5, shape) + rng.normal(0, 1, c), tf.float32), DTYPES[dtype])
    dy = tf.cast(tf.constant(rng.normal(size=shape), tf.float32), DTYPES[dtype])
    return x, dy, rng


def _f64(t):
    return tf.cast(t, tf.float64).numpy()


def _vector(rng, c, low=0.5, high=1.5):
    return rng.uniform(low, high, c).astype(np.float32)


def _assert_close(got, expected, dtype, label):
    got = _f64(got) if isinstance(got, tf.Tensor) else np.asarray(got, np.float64)
    if dtype == "float32":
        error = np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-30)
        assert error <= ROUNDING[dtype], f"{label} ({dtype}): relative error {error:.2e}"
    else:  # one rounding of the output dtype, per element (plus float32's own for values near 0)
        bound = ROUNDING[dtype] * np.abs(expected) + 1e-6 * np.abs(expected).max()
        worst = (np.abs(got - expected) / bound).max()
        assert worst <= 1.0, f"{label} ({dtype}): error {worst:.2f}× one rounding"


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_channel_moments_and_mean_square_match_float64(ops, shape):
    x, _, _ = _inputs(shape, "float32", 1, mean=100.0)
    xs = _f64(x)
    shift, delta, m2, m2_small = (t.numpy() for t in ops.evonorm_channel_moments(x))
    np.testing.assert_array_equal(shift, x.numpy()[:, 0, :])
    mean = xs.mean(axis=1)
    np.testing.assert_allclose(shift + delta.astype(np.float64), mean, rtol=0, atol=1e-6 * np.abs(mean).max())
    expected_m2 = ((xs - mean[:, None, :]) ** 2).sum(axis=1)
    np.testing.assert_allclose(m2, expected_m2, rtol=1e-6)
    # The twins are used only where float32 overflows; below float32's range they are 0.
    np.testing.assert_allclose(m2_small, expected_m2 * DOWNSCALE**2, rtol=1e-6, atol=1e-44)
    mean_square, mean_square_small = (t.numpy() for t in ops.evonorm_mean_square(x))
    np.testing.assert_allclose(mean_square, (xs**2).mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(mean_square_small, (xs**2).mean(axis=1) * DOWNSCALE**2, rtol=1e-6, atol=1e-44)


def test_moments_beyond_float32_are_inf_with_a_finite_twin(ops):
    x = tf.constant(np.random.default_rng(2).normal(0, 1e30, (2, 40, 5)), tf.float32)
    _, _, m2, m2_small = ops.evonorm_channel_moments(x)
    assert np.isinf(m2.numpy()).all()
    xs = _f64(x)
    expected = ((xs - xs.mean(axis=1, keepdims=True)) ** 2).sum(axis=1) * DOWNSCALE**2
    np.testing.assert_allclose(m2_small.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_s_series_passes_match_float64(ops, shape, dtype):
    x, dy, rng = _inputs(shape, dtype, 3)
    n, _, c = shape
    v, beta = _vector(rng, c), _vector(rng, c, -0.5, 0.5)
    scale, coefficient, origin, offset = (rng.uniform(-1, 1, (n, c)).astype(np.float32) for _ in range(4))
    unit = np.where(rng.uniform(size=(n, c)) < 0.5, 1.0, 0.25).astype(np.float32)
    xs, dys = _f64(x), _f64(dy)
    z = v * xs
    s = _sigmoid(z)
    _assert_close(ops.evonorm_s_output(x, v, scale, beta), xs * s * scale[:, None] + beta, dtype, "y")
    f = dys * xs * s
    expected_sums = [dys.sum(1), f.sum(1), (f * xs * (1 - s)).sum(1)]
    for label, got, expected in zip(["Σdy", "Σdy·f", "Σdy·f·x·σ'"], ops.evonorm_s_backward_sums(x, dy, v),
                                    expected_sums):
        _assert_close(got, expected, "float32", label)
    expected_dx = (dys * scale[:, None] * s * (1 + z * (1 - s))
                   + coefficient[:, None] * ((xs * unit[:, None] - origin[:, None] * unit[:, None])
                                             - offset[:, None] * unit[:, None]))
    dx = ops.evonorm_s_backward_dx(x, dy, v, scale, coefficient, unit, origin, offset)
    assert dx.dtype == x.dtype
    _assert_close(dx, expected_dx, dtype, "dx")


# z over σ's whole range: its tails, where σ underflows or rounds to 1, and values that are not numbers.
SIGMOID_Z = np.concatenate([np.linspace(-120, 120, 4001), [0.0, -0.0, 1e-30, -1e-30, 1e30, -1e30, np.inf, -np.inf, np.nan]])


def _sigmoid_sweep_error(y, z):
    """Worst error of y = z·σ(z) in float32 ulps of the float64 value, where that is a normal float32."""
    with np.errstate(over="ignore", invalid="ignore"):  # e⁻ᶻ overflows to inf, and ±inf·0 is NaN: as intended
        expected = z * _sigmoid(z)
    y = np.asarray(y, np.float64)
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    np.testing.assert_array_equal(y[~finite & ~np.isnan(expected)], expected[~finite & ~np.isnan(expected)])
    # Below 1e-30 (σ under 1e-32: FTZ, and clamped e⁻ᶻ) an absolute error of at most 1e-30.
    tiny = finite & (np.abs(expected) < 1e-30)
    assert (np.abs(y[tiny] - expected[tiny]) <= 1e-30).all()
    normal = finite & ~tiny
    return (np.abs(y[normal] - expected[normal]) / (np.abs(expected[normal]) * 2.0**-24)).max()


def test_sigmoid_is_within_three_ulps_over_its_whole_range(ops):
    """σ(z) as the S-series ops compute it (vectorised, no division) against float64, all lanes and the tail of a block."""
    for channels in (16, 17):  # whole vectors, and a masked tail
        z = np.resize(SIGMOID_Z, (1, -(-SIGMOID_Z.size // channels), channels)).astype(np.float32)
        y = ops.evonorm_s_output(tf.constant(z), tf.ones([channels]), tf.ones([1, channels]), tf.zeros([channels]))
        assert _sigmoid_sweep_error(y.numpy(), z.astype(np.float64)) <= 3.0


def test_sigmoid_without_avx512_is_within_three_ulps(tmp_path):
    """The same ops built without AVX-512 (the scalar σ other CPUs compile) in a process of their own."""
    z = np.resize(SIGMOID_Z, (1, -(-SIGMOID_Z.size // 17), 17)).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    script = f"""
import numpy as np, tensorflow as tf
from evonorm_tf.kernels import native
flags = native._flags
native._flags = lambda: flags() + ["-mno-avx512f"]
ops = tf.load_op_library(native.build())
z = np.load({str(tmp_path / "z.npy")!r})
y = ops.evonorm_s_output(tf.constant(z), tf.ones([17]), tf.ones([1, 17]), tf.zeros([17])).numpy()
np.save({str(tmp_path / "y.npy")!r}, y)
"""
    env = dict(os.environ, **{native.CACHE_ENV: str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3"})
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert _sigmoid_sweep_error(np.load(tmp_path / "y.npy"), z.astype(np.float64)) <= 3.0


def _b_branches(kind, xs, v, instance, batch_std):
    right = {"b0": lambda: v * xs + instance[:, None], "b1": lambda: (xs + 1) * instance[:, None],
             "b2": lambda: instance[:, None] - xs}[kind]()
    return np.maximum(batch_std, right), right > batch_std


@pytest.mark.parametrize("kind", ["b0", "b1", "b2"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_b_series_passes_match_float64(ops, shape, dtype, kind):
    x, dy, rng = _inputs(shape, dtype, 4)
    n, _, c = shape
    v, gamma, beta = _vector(rng, c), _vector(rng, c), _vector(rng, c, -0.5, 0.5)
    instance = rng.uniform(0.5, 3.0, (n, c)).astype(np.float32)  # both branches of the max taken
    batch_std = rng.uniform(1.0, 2.0, c).astype(np.float32)
    xs, dys = _f64(x), _f64(dy)
    den, on_right = _b_branches(kind, xs, v, instance, batch_std)
    assert 0.05 < on_right.mean() < 0.95
    y = ops.evonorm_b_output(x, v, instance, batch_std, gamma, beta, kind=kind)
    _assert_close(y, xs / den * gamma + beta, dtype, f"{kind} y")
    p = dys * xs / den
    right = {"b0": [on_right * p / den * xs, on_right * p / den], "b1": [on_right * p, 0 * p],
             "b2": [on_right * p, on_right * p / den]}[kind]
    for index, (got, expected) in enumerate(zip(ops.evonorm_b_backward_sums(x, dy, v, instance, batch_std,
                                                                             kind=kind), [dys, p] + right)):
        _assert_close(got, expected.sum(1), "float32", f"{kind} sum {index}")
    stats = [rng.uniform(-1, 1, (n, c)).astype(np.float32) for _ in range(6)]
    stats[2] = np.where(rng.uniform(size=(n, c)) < 0.5, 1.0, 0.25).astype(np.float32)  # the units
    stats[3] = np.ones((n, c), np.float32)
    s_i, s_b, u_i, u_b, origin, offset = (t[:, None] for t in stats)
    expected_dx = (gamma * dys / den * np.where(on_right, instance[:, None] / den, 1.0)
                   + s_i * (xs * u_i - origin * u_i) + s_b * (xs * u_b - origin * u_b) - offset)
    dx = ops.evonorm_b_backward_dx(x, dy, v, instance, batch_std, gamma, *stats, kind=kind)
    _assert_close(dx, expected_dx, dtype, f"{kind} dx")


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_group_norm_and_frn_passes_match_float64(ops, shape, dtype):
    x, dy, rng = _inputs(shape, dtype, 9, mean=3.0)
    n, _, c = shape
    beta = _vector(rng, c, -0.5, 0.5)
    origin, offset, scale, coefficient, shift = (rng.uniform(-1, 1, (n, c)).astype(np.float32) for _ in range(5))
    unit = np.where(rng.uniform(size=(n, c)) < 0.5, 1.0, 0.25).astype(np.float32)
    xs, dys = _f64(x), _f64(dy)
    o, d, sc, k, u, sh = (t[:, None] for t in (origin, offset, scale, coefficient, unit, shift))
    _assert_close(ops.evonorm_affine(x, origin, offset, scale, beta), ((xs - o) - d) * sc + beta, dtype, "y")
    for label, got, expected in zip(["Σdy", "Σdy·(x − origin)"], ops.evonorm_affine_backward_sums(x, dy, origin),
                                    [dys.sum(1), (dys * (xs - o)).sum(1)]):
        _assert_close(got, expected, "float32", label)
    dx = ops.evonorm_affine_backward_dx(x, dy, scale, coefficient, unit, origin, offset, shift)
    assert dx.dtype == x.dtype
    _assert_close(dx, dys * sc + k * ((xs * u - o * u) - d * u) - sh, dtype, "dx")


# -- the layers at shapes XLA does not compile --------------------------------------------------

LAYERS = ["evonorm_b0", "evonorm_b1", "evonorm_b2", "evonorm_s0", "evonorm_s1", "evonorm_s2", "gn_relu",
          "gn_silu", "frn_tlu"]
C, GROUPS = 16, 4


def _layer(name):
    kwargs = {"groups": GROUPS} if name.startswith(("evonorm_s", "gn_")) else {}
    with kernels.use("cpu"):
        layer = evonorm_tf.get_norm_act(name, **kwargs)
        layer.build((None, None, None, C))
    rng = np.random.default_rng(5)
    for weight in layer.trainable_weights:
        weight.assign(rng.uniform(0.5, 1.5, weight.shape) * (0.02 if weight.name.startswith("v") else 1.0))
    return layer


def _generic(layer):
    def forward_backward(x, dy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
        return [y] + tape.gradient(y, [x] + layer.trainable_weights, output_gradients=dy)

    spec = tf.TensorSpec([None, None, None, C])
    return tf.function(forward_backward, input_signature=[spec, spec])


def _reference_output(name, layer, x):
    weights = {w.name.split("/")[-1].split(":")[0]: w.numpy().astype(np.float64) for w in layer.trainable_weights}
    return reference.norm_act(name, x.astype(np.float64), weights, training=True, epsilon=layer.epsilon,
                              groups=GROUPS if name.startswith(("evonorm_s", "gn_")) else None)


@pytest.mark.parametrize("name", LAYERS)
def test_shape_generic_layers_run_the_native_ops_and_match_float64(name, monkeypatch):
    layer = _layer(name)
    function = _generic(layer)
    rng = np.random.default_rng(6)
    results = {}
    for scale, mean in ((1.0, 100.0), (1e30, 0.0), (1e-30, 0.0)):
        for h, w in ((5, 7), (9, 4)):
            x = (mean + scale * rng.normal(0, 1, (2, h, w, C))).astype(np.float32)
            dy = rng.normal(size=x.shape).astype(np.float32)
            got = [t.numpy() for t in function(tf.constant(x), tf.constant(dy))]
            assert all(np.isfinite(t).all() for t in got), f"{name} at scale {scale}: non-finite values"
            expected = _reference_output(name, layer, x.astype(np.float64))
            error = np.abs(got[0] - expected).max() / np.abs(expected).max()
            assert error <= 1e-4, f"{name} y at mean {mean}, scale {scale}: relative error {error:.2e}"
            results[(scale, h)] = (x, dy, got)
    assert function.experimental_get_tracing_count() == 1
    graph = function.get_concrete_function().graph
    op_types = {op.type for f in [graph] + [f.graph for f in graph._functions.values()] for op in f.get_operations()}
    assert {"EvonormChannelMoments", "EvonormMeanSquare"} & op_types, f"{name}: no native statistics op in the graph"
    assert {"EvonormSOutput", "EvonormBOutput", "EvonormAffine"} & op_types, f"{name}: no native output op"
    assert {"EvonormSBackwardDx", "EvonormBBackwardDx", "EvonormAffineBackwardDx"} & op_types, f"{name}: no native dx"
    # The gradients as the plain TensorFlow ops give them (that path is checked against float64 elsewhere).
    monkeypatch.setenv(native.ENV, "0")
    plain = _generic(layer)
    for (scale, _), (x, dy, got) in results.items():
        for label, a, b in zip(["y", "dx"] + [w.name for w in layer.trainable_weights], got,
                               plain(tf.constant(x), tf.constant(dy))):
            error = np.abs(a - b.numpy()).max() / max(np.abs(b.numpy()).max(), 1e-38)
            assert error <= 1e-4, f"{name} {label} at scale {scale}: native against plain ops {error:.2e}"


# -- choice and failure ----------------------------------------------------------------------


def test_unknown_setting_is_refused_naming_it(monkeypatch):
    monkeypatch.setenv(native.ENV, "sometimes")
    with pytest.raises(ValueError, match="'sometimes'"):
        native.available(True)


def test_a_failed_build_warns_once_and_the_plain_ops_run(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with caplog.at_level(logging.WARNING, logger="evonorm_tf"):
        assert not native.available(True)
        assert not native.available(True)
    warnings = [r.getMessage() for r in caplog.records if "native kernels unavailable" in r.getMessage()]
    assert len(warnings) == 1 and "no-such-compiler" in warnings[0]
    layer = _layer("evonorm_b0")
    x = np.random.default_rng(7).normal(0, 1, (2, 5, 6, C)).astype(np.float32)
    y = _generic(layer)(tf.constant(x), tf.constant(x))[0].numpy()
    np.testing.assert_allclose(y, _reference_output("evonorm_b0", layer, x), rtol=0, atol=1e-4)
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv(native.ENV, "1")
    with pytest.raises(RuntimeError, match="no-such-compiler"):
        native.available(True)


def test_channels_first_keeps_the_plain_ops():
    assert not native.available(False)


def test_ops_refuse_mismatched_shapes_naming_them(ops):
    x = tf.zeros([2, 5, 4])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"dy must have x's shape .*\[2,6,4\]"):
        ops.evonorm_s_backward_sums(x, tf.zeros([2, 6, 4]), tf.ones([4]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"scale must be \[2, 4\], received shape \[1,4\]"):
        ops.evonorm_s_output(x, tf.ones([4]), tf.ones([1, 4]), tf.ones([4]))
    for statistics in (ops.evonorm_channel_moments, ops.evonorm_mean_square):
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"x must have spatial positions.*\[2,0,4\]"):
            statistics(tf.zeros([2, 0, 4]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"x must be \[N, S, C\], received shape \[2,5\]"):
        ops.evonorm_affine(tf.zeros([2, 5]), *[tf.zeros([2, 4])] * 3, tf.zeros([4]))


def test_a_saved_model_holds_no_native_op_and_loads_without_the_library(tmp_path):
    """Traced for a SavedModel, the layers keep plain TensorFlow ops: it loads and runs where evonorm_tf is not."""
    layer = _layer("evonorm_s0")
    module = tf.Module()
    module.layer = layer
    module.serve = tf.function(lambda x: layer(x, training=False),
                               input_signature=[tf.TensorSpec([None, None, None, C])])
    x = np.random.default_rng(8).normal(0, 1, (2, 6, 5, C)).astype(np.float32)
    expected = module.serve(tf.constant(x)).numpy()
    tf.saved_model.save(module, str(tmp_path / "model"))
    with open(tmp_path / "model" / "saved_model.pb", "rb") as saved:
        assert b"Evonorm" not in saved.read()
    np.save(tmp_path / "x.npy", x)
    script = ("import numpy as np, sys, tensorflow as tf\n"
              f"model = tf.saved_model.load({str(tmp_path / 'model')!r})\n"
              f"y = model.serve(tf.constant(np.load({str(tmp_path / 'x.npy')!r}))).numpy()\n"
              "assert 'evonorm_tf' not in sys.modules\n"
              f"np.save({str(tmp_path / 'y.npy')!r}, y)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-5)

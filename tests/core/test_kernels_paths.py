"""Kernel paths (`evonorm_tf.kernels`): the choice, and what each path computes.

* The choice: environment variable, `set_path`, `use`, `auto` by device and
  strategy, an unknown value refused, made once when a layer is built.
* Every path against an independent float64 TensorFlow reference at inputs of
  mean 100: outputs and every gradient within 1e-4 (relative to the largest).
* The portable path's XLA HLO (forward and backward of every layer): no
  integer dot, no complex type, no float dot below HIGHEST precision. That is
  what keeps it exact on TPU (default-precision float32 dots run as bfloat16
  passes) and on TF32 GPUs.
"""

import re
import zlib

import numpy as np
import pytest
import tensorflow as tf

import evonorm_tf
from evonorm_tf import kernels
from evonorm_tf.kernels import cpu, portable

EVONORMS = ["evonorm_b0", "evonorm_b1", "evonorm_b2", "evonorm_s0", "evonorm_s1", "evonorm_s2"]
BASELINES = ["gn_relu", "gn_silu", "frn_tlu", "bn_relu", "bn_silu"]
PATHS = ["cpu", "portable", "reference"]


# -- the choice ------------------------------------------------------------------------------


def test_environment_variable_sets_the_path(monkeypatch):
    monkeypatch.setenv(kernels.ENVIRONMENT_VARIABLE, "portable")
    assert kernels.get_path() == "portable"
    assert kernels.resolve() == "portable"
    monkeypatch.setenv(kernels.ENVIRONMENT_VARIABLE, "Reference")
    assert kernels.resolve() == "reference"
    monkeypatch.delenv(kernels.ENVIRONMENT_VARIABLE)
    assert kernels.get_path() == "auto"


def test_unknown_path_is_refused_listing_the_valid_ones(monkeypatch):
    for bad in ("gpu", "", None):
        with pytest.raises(ValueError, match="auto, cpu, portable, reference; received"):
            kernels.use(bad).__enter__()
    with pytest.raises(ValueError, match="received 'fast'"):
        kernels.set_path("fast")
    monkeypatch.setenv(kernels.ENVIRONMENT_VARIABLE, "tpu")
    with pytest.raises(ValueError, match="EVONORM_TF_KERNELS must be one of auto, cpu, portable, reference; received 'tpu'"):
        kernels.get_path()


def test_use_nests_and_overrides_set_path(monkeypatch):
    monkeypatch.setenv(kernels.ENVIRONMENT_VARIABLE, "cpu")
    try:
        kernels.set_path("reference")
        assert kernels.get_path() == "reference"
        with kernels.use("portable"):
            assert kernels.get_path() == "portable"
            with kernels.use("cpu"):
                assert kernels.get_path() == "cpu"
            assert kernels.get_path() == "portable"
        assert kernels.get_path() == "reference"
    finally:
        kernels.set_path(None)
    assert kernels.get_path() == "cpu"


def test_auto_follows_the_device_scope():
    assert kernels.resolve("auto") == "cpu"  # this machine has no accelerator
    with tf.device("/CPU:0"):
        assert kernels.resolve("auto") == "cpu"
    with tf.device("/device:GPU:0"):
        assert kernels.resolve("auto") == "portable"

    @tf.function
    def traced():
        with tf.device("/device:TPU:0"):
            inner = kernels.resolve("auto")
        return kernels.resolve("auto"), inner

    outer, inner = traced.python_function()
    assert (outer, inner) == ("cpu", "portable")


def test_auto_follows_the_strategy(mirrored_strategy, monkeypatch):
    with mirrored_strategy.scope():
        assert kernels.resolve("auto") == "cpu"  # two CPU replicas

    class TPUStrategy:  # stands for tf.distribute.TPUStrategy, which needs a TPU to exist
        extended = None

    monkeypatch.setattr(tf.distribute, "has_strategy", lambda: True)
    monkeypatch.setattr(tf.distribute, "get_strategy", lambda: TPUStrategy())
    assert kernels.resolve("auto") == "portable"


def test_formulas_without_an_implementation_fall_back_to_the_definition():
    assert kernels.implementation("evonorm_s0", "reference") is evonorm_tf.formulas.evonorm_s0
    assert kernels.implementation("evonorm_s0", "cpu") is cpu.evonorm_s0
    assert kernels.implementation("evonorm_s0", "portable") is portable.evonorm_s0
    assert kernels.implementation("thresholded_linear_unit", "portable") is evonorm_tf.formulas.thresholded_linear_unit
    with pytest.raises(ValueError, match="received 'evonorm_s9'"):
        kernels.implementation("evonorm_s9", "cpu")


def test_a_layer_chooses_its_path_once_when_built():
    x = tf.random.normal([2, 4, 4, 8])
    layer = evonorm_tf.EvoNormS0(groups=2)
    with kernels.use("portable"):
        layer(x)
    assert layer._kernels.path == "portable"
    assert layer._kernels.evonorm_s0 is portable.evonorm_s0
    with kernels.use("reference"):
        y = layer(x)  # built: the path stays
    assert layer._kernels.path == "portable"
    with kernels.use("reference"):
        expected = evonorm_tf.EvoNormS0(groups=2)(x)
    np.testing.assert_allclose(y.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


# -- float64 reference at mean 100 ---------------------------------------------------------------


def _reference64(name, x, gamma, beta, extra, groups, eps):
    """The layer's formula in float64 TensorFlow, written from the papers (channels_last)."""
    spatial = list(range(1, x.shape.rank - 1))

    def group_stat(t, centered):
        shape = tf.shape(t)
        tg = tf.reshape(t, tf.concat([shape[:-1], [groups, t.shape[-1] // groups]], 0))
        axes = spatial + [t.shape.rank]
        if centered:
            stat = tf.reduce_mean(tf.square(tg - tf.reduce_mean(tg, axes, keepdims=True)), axes, keepdims=True)
        else:
            stat = tf.reduce_mean(tf.square(tg), axes, keepdims=True)
        return tf.reshape(tf.broadcast_to(stat, tf.shape(tg)), shape)

    if name.startswith("evonorm_b"):
        batch_var = tf.math.reduce_variance(x, [0] + spatial)
        instance_var = tf.math.reduce_variance(x, spatial, keepdims=True)
        rms = tf.sqrt(tf.reduce_mean(tf.square(x), spatial, keepdims=True) + eps)
        right = {"evonorm_b0": lambda: extra[0] * x + tf.sqrt(instance_var + eps),
                 "evonorm_b1": lambda: (x + 1.0) * rms, "evonorm_b2": lambda: rms - x}[name]()
        return x / tf.maximum(tf.sqrt(batch_var + eps), right) * gamma + beta
    if name.startswith("evonorm_s"):
        numerator = x * tf.sigmoid((extra[0] if name == "evonorm_s0" else 1.0) * x)
        return numerator / tf.sqrt(group_stat(x, name != "evonorm_s2") + eps) * gamma + beta
    if name.startswith("gn_"):
        shape = tf.shape(x)
        xg = tf.reshape(x, tf.concat([shape[:-1], [groups, x.shape[-1] // groups]], 0))
        mean = tf.reshape(tf.broadcast_to(tf.reduce_mean(xg, spatial + [x.shape.rank], keepdims=True),
                                          tf.shape(xg)), shape)
        y = (x - mean) / tf.sqrt(group_stat(x, True) + eps) * gamma + beta
        return tf.nn.relu(y) if name == "gn_relu" else tf.nn.silu(y)
    if name == "frn_tlu":
        y = x / tf.sqrt(tf.reduce_mean(tf.square(x), spatial, keepdims=True) + eps) * gamma + beta
        return tf.maximum(y, extra[0])
    mean, var = tf.nn.moments(x, [0] + spatial)
    y = (x - mean) / tf.sqrt(var + eps) * gamma + beta
    return tf.nn.relu(y) if name == "bn_relu" else tf.nn.silu(y)


def _weights(layer):
    names = ("gamma", "beta", "v", "tau")
    return [w for n in names for w in layer.trainable_weights if w.name.split("/")[-1].startswith(n)]


def _gradients64(name, x, weights, dy, groups, eps):
    tensors = [tf.constant(t, tf.float64) for t in [x] + [w.numpy() for w in weights]]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        y = _reference64(name, tensors[0], tensors[1], tensors[2], tensors[3:], groups, eps)
    return [y.numpy()] + [g.numpy() for g in tape.gradient(y, tensors, output_gradients=tf.constant(dy, tf.float64))]


def _layer_gradients(layer, x, dy, jit):
    xt = tf.constant(x, tf.float32)

    def run(xt):
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = layer(xt, training=True)
        return [y] + tape.gradient(y, [xt] + _weights(layer), output_gradients=tf.constant(dy, tf.float32))

    return [t.numpy() for t in (tf.function(run, jit_compile=True) if jit else run)(xt)]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "xla"])
@pytest.mark.parametrize("name", EVONORMS + BASELINES[:3])
@pytest.mark.parametrize("path", PATHS)
def test_mean_100_outputs_and_gradients_match_float64(path, name, jit, seed=0):
    rng = np.random.default_rng(zlib.crc32(f"{name} {path} {seed}".encode()))
    shape, groups, eps = (3, 5, 6, 16), 4, 1e-5
    x = (100.0 + rng.normal(0, 1.0, shape) + rng.normal(0, 2.0, shape[-1])).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    kwargs = {"groups": groups} if name.startswith(("evonorm_s", "gn_")) else {}
    with kernels.use(path):
        layer = evonorm_tf.get_norm_act(name, epsilon=eps, **kwargs)
        layer.build(shape)
    for weight in _weights(layer):
        if "tau" in weight.name:  # a threshold inside the outputs' range: both TLU branches taken
            weight.assign(rng.uniform(1.0, 3.0, weight.shape))
        elif name == "evonorm_s0" and weight.name.startswith("v"):  # σ(v·x) not saturated at x ≈ 100
            weight.assign(rng.uniform(0.005, 0.02, weight.shape))
        else:
            weight.assign(rng.uniform(0.5, 1.5, weight.shape))
    got = _layer_gradients(layer, x, dy, jit)
    expected = _gradients64(name, x.astype(np.float64), _weights(layer), dy.astype(np.float64), groups, eps)
    labels = ["y", "dx"] + [w.name for w in _weights(layer)]
    for label, g, e in zip(labels, got, expected):
        error = np.abs(g - e).max() / np.abs(e).max()
        assert error <= 1e-4, f"{path} {name} {label}: relative error {error:.2e}"


# -- the portable path's HLO ---------------------------------------------------------------------


def _hlo_problems(hlo):
    problems = []
    for line in hlo.splitlines():
        if re.search(r"\bc(64|128)\[", line):
            problems.append("complex: " + line.strip())
        if " dot(" not in line and " convolution(" not in line:
            continue
        result_type = line.split("=", 1)[1].strip().split("[", 1)[0]
        if not result_type.startswith(("f", "bf")):
            problems.append("integer dot: " + line.strip())
        elif "operand_precision={highest,highest}" not in line:
            problems.append("float dot below HIGHEST: " + line.strip())
    return problems


def test_hlo_checker_catches_what_the_cpu_kernels_use():
    """The checker itself: the cpu kernels' integer matmuls, one-hot dots and complex pairs are found."""
    x = tf.random.normal([2, 4, 4, 8])
    layer = evonorm_tf.EvoNormS0(groups=2)
    with kernels.use("cpu"):
        layer.build(x.shape)

    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
        return y, tape.gradient(y, x)

    hlo = tf.function(forward_backward, jit_compile=True).experimental_get_compiler_ir(x)(stage="hlo")
    kinds = {problem.split(":")[0] for problem in _hlo_problems(hlo)}
    assert kinds == {"complex", "integer dot", "float dot below HIGHEST"}


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("name", EVONORMS + BASELINES)
def test_portable_hlo_has_no_integer_complex_or_low_precision_dot(name, data_format):
    shape = (2, 5, 3, 8) if data_format == "channels_last" else (2, 8, 5, 3)
    kwargs = {"groups": 2} if name.startswith(("evonorm_s", "gn_")) else {}
    with kernels.use("portable"):
        layer = evonorm_tf.get_norm_act(name, data_format=data_format, **kwargs)
        layer.build(shape)
    x = tf.random.normal(shape)

    def forward_backward(x, training):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
        return y, tape.gradient(y, [x] + layer.trainable_weights)

    for training in (True, False):
        hlo = tf.function(forward_backward, jit_compile=True).experimental_get_compiler_ir(
            x, training)(stage="hlo")
        assert " reduce(" in hlo  # the statistics are there
        assert not _hlo_problems(hlo), "\n".join(_hlo_problems(hlo)[:5])

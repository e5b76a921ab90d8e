"""The cpu kernels at any input shape: no compile per passing shape, bounded caches.

A `tf.function` with `None` spatial dimensions traces once and compiles
nothing per shape; eager calls with a new spatial size at every call run one
shape-generic graph; a shape that recurs is compiled, into a bounded cache.
Values are the same either way. These are the routes of the XLA-compiled
kernels, taken at static shapes where the native ops do not serve
(channels_first, no C++ compiler; here `cpu_launch.NATIVE = False`); where they
do, static shapes compile nothing either (the last test).
"""

import numpy as np
import pytest
import tensorflow as tf

from evonorm_tf.kernels import cpu, cpu_launch

C = 16
GAMMA, BETA, V = tf.ones([C]), tf.zeros([C]), tf.fill([C], 0.7)
CALLS = {
    "b0": lambda x: cpu.evonorm_b_training("b0", x, GAMMA, BETA, V)[0],
    "b1_inference": lambda x: cpu.evonorm_b1(x, GAMMA, BETA, tf.fill([C], 2.0)),
    "s0": lambda x: cpu.evonorm_s0(x, GAMMA, BETA, V, 4),
    "s2": lambda x: cpu.evonorm_s2(x, GAMMA, BETA, 4),
}
KERNELS = (cpu._b_forward, cpu._b_backward, cpu._s_forward, cpu._s_backward)


def _forward_backward(call, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = call(x)
    return y, tape.gradient(y, x, output_gradients=tf.sin(x))


def _compiled_count():
    return sum(len(kernel.compiled) for kernel in KERNELS)


@pytest.fixture(autouse=True)
def empty_caches(monkeypatch):
    monkeypatch.setattr(cpu_launch, "NATIVE", False)
    for kernel in KERNELS:
        kernel.compiled.clear()
    yield


def _input(h, w, data_format="channels_last", batch=2):
    shape = [batch, h, w, C] if data_format == "channels_last" else [batch, C, h, w]
    return tf.random.stateless_normal(shape, seed=[h, w], mean=3.0)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_graph_with_none_dims_traces_once_and_compiles_nothing(name):
    function = tf.function(lambda x: _forward_backward(CALLS[name], x),
                           input_signature=[tf.TensorSpec([None, None, None, C])])
    for size in range(3, 9):
        x = _input(size, size + 2, batch=size % 3 + 1)
        y, dx = function(x)
        y_eager, dx_eager = _forward_backward(CALLS[name], x)
        np.testing.assert_allclose(y.numpy(), y_eager.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(dx.numpy(), dx_eager.numpy(), rtol=1e-4, atol=1e-4)
    assert function.experimental_get_tracing_count() == 1
    assert _compiled_count() == 0  # the eager calls above each met a new shape too


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_eager_new_shapes_compile_nothing_and_recurring_shapes_compile_once(data_format):
    gamma, beta, v = GAMMA, BETA, V
    s0 = lambda x: cpu.evonorm_s0(x, gamma, beta, v, 4, data_format=data_format)  # noqa: E731
    results = {}
    for size in range(3, 3 + 2 * cpu_launch.SIZES_PER_CONFIGURATION):
        results[size] = _forward_backward(s0, _input(size, 5, data_format))
    assert _compiled_count() == 0
    # A shape met again and again in a fresh configuration (batch 3) is compiled once, on its COMPILE_AFTER-th call.
    x = _input(6, 7, data_format, batch=3)
    first = _forward_backward(s0, x)
    for _ in range(cpu_launch.COMPILE_AFTER + 2):
        again = _forward_backward(s0, x)
    assert len(cpu._s_forward.compiled) == 1 and len(cpu._s_backward.compiled) == 1
    for a, b in zip(first, again):  # shape-generic graph and compiled kernel agree
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)


def test_a_configuration_meeting_many_sizes_stops_compiling():
    """Sizes in rotation (multi-scale evaluation) stay on the shape-generic graph, even when they recur."""
    sizes = range(3, 3 + cpu_launch.SIZES_PER_CONFIGURATION + 2)
    for _ in range(cpu_launch.COMPILE_AFTER + 1):
        for size in sizes:
            _forward_backward(CALLS["b0"], _input(size, 4))
    assert _compiled_count() <= 2 * cpu_launch.SIZES_PER_CONFIGURATION


def test_compiled_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(cpu_launch, "MAX_COMPILED", 3)
    for batch in range(1, 7):  # six configurations, one size each: each compiles
        x = _input(4, 5, batch=batch)
        for _ in range(cpu_launch.COMPILE_AFTER):
            y = CALLS["s2"](x)
    assert len(cpu._s_forward.compiled) == 3
    np.testing.assert_allclose(y.numpy(), CALLS["s2"](x).numpy())


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_generic_graphs_are_per_channel_count(data_format):
    """Two channel counts in the same layout each get their own shape-generic graph."""
    for channels in (4, 8):
        shape = [2, 3, 5, channels] if data_format == "channels_last" else [2, channels, 3, 5]
        x = tf.random.stateless_normal(shape, seed=[channels, 0])
        ones = tf.ones([channels])
        y = cpu.evonorm_b_training("b0", x, ones, 0 * ones, ones, data_format=data_format)[0]
        expected = cpu.evonorm_b_training("b0", x, ones, 0 * ones, ones, data_format=data_format)[0]
        np.testing.assert_allclose(y.numpy(), expected.numpy(), rtol=1e-6)
        assert y.shape == x.shape


def test_a_recurring_shape_compiles_both_b_series_directions_on_the_same_call():
    """The B-series forward pass keeps x-sized tensors for the backward one only as plain ops:
    they must not make the backward pass's compiled kernel wait for calls of its own."""
    x = _input(5, 6, batch=3)
    for _ in range(cpu_launch.COMPILE_AFTER):
        _forward_backward(CALLS["b0"], x)
    assert len(cpu._b_forward.compiled) == 1 and len(cpu._b_backward.compiled) == 1


@pytest.mark.parametrize("name", sorted(CALLS))
def test_with_native_ops_static_shapes_compile_nothing(name, monkeypatch):
    """Where the native ops serve (channels_last), a recurring static shape runs them, eagerly and in a
    graph, and compiles no kernel; channels_first still compiles its recurring shape."""
    monkeypatch.undo()  # cpu_launch.NATIVE as it is by default
    x = _input(6, 7, batch=3)
    function = tf.function(lambda x: _forward_backward(CALLS[name], x))
    for _ in range(cpu_launch.COMPILE_AFTER + 2):
        eager = _forward_backward(CALLS[name], x)
        graph = function(x)
    assert _compiled_count() == 0
    ops = {op.type for op in function.get_concrete_function(x).graph.get_operations()}
    assert any(op.startswith("Evonorm") for op in ops) and "PartitionedCall" not in ops, sorted(ops)
    monkeypatch.setattr(cpu_launch, "NATIVE", False)
    compiled = _forward_backward(CALLS[name], x)
    for a, b, c in zip(eager, graph, compiled):
        np.testing.assert_allclose(a.numpy(), c.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(b.numpy(), c.numpy(), rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(cpu_launch, "NATIVE", True)
    for kernel in KERNELS:
        kernel.compiled.clear()
    s0_first = lambda x: cpu.evonorm_s0(x, GAMMA, BETA, V, 4, data_format="channels_first")  # noqa: E731
    for _ in range(cpu_launch.COMPILE_AFTER):
        _forward_backward(s0_first, _input(6, 7, "channels_first", batch=3))
    assert len(cpu._s_forward.compiled) == 1

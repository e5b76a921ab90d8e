"""Compiled graphs: NumPy float64 reference per op, and the six EvoNorms as graphs."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import evonorm_tf
from evonorm_tf import tf_keras as evonorm_tf_keras
from evonorm_tf.search import compiler, space

EPSILON = 1e-5
GROUPS = 2


# -- an independent float64 interpreter, written from the definitions in space.py ----------


def _reference_aggregate(u, statistic, axes, groups):
    n, h, w, c = u.shape
    if axes == "whg":
        grouped = u.reshape(n, h, w, groups, c // groups)
        reduce_axes = (1, 2, 4)
    else:
        grouped = u
        reduce_axes = {"bwh": (0, 1, 2), "whc": (1, 2, 3), "wh": (1, 2)}[axes]
    mean = grouped.mean(axis=reduce_axes, keepdims=True)
    if statistic == "mean":
        value = mean
    elif statistic == "mean_sq":
        value = (grouped ** 2).mean(axis=reduce_axes, keepdims=True) + EPSILON
    else:
        value = np.sqrt(((grouped - mean) ** 2).mean(axis=reduce_axes, keepdims=True) + EPSILON)
    if axes == "whg":
        value = np.repeat(value, c // groups, axis=4).reshape(value.shape[0], 1, 1, c)
    return np.broadcast_to(value, u.shape)


_REFERENCE_ELEMENTWISE = {
    "add": np.add, "mul": np.multiply, "div": np.divide, "max": np.maximum, "neg": np.negative,
    "sigmoid": lambda a: 1.0 / (1.0 + np.exp(-a)), "tanh": np.tanh, "exp": np.exp,
    "log": lambda a: np.where(a == 0, 0.0, np.sign(a) * np.log(np.abs(np.where(a == 0, 1, a)))),
    "abs": np.abs, "square": np.square, "sqrt": lambda a: np.sign(a) * np.sqrt(np.abs(a)),
}


def reference_forward(text, x, v0, v1, groups=GROUPS):
    values = [x, np.zeros_like(x), np.broadcast_to(v0, x.shape), np.broadcast_to(v1, x.shape)]
    for part in text.split(";"):
        name, args = part[:-1].split("(")
        inputs = [values[int(i)] for i in args.split(",")]
        op = space.OPS[name]
        if op.is_aggregation:
            values.append(_reference_aggregate(inputs[0], op.statistic, op.axes, groups))
        else:
            values.append(_REFERENCE_ELEMENTWISE[name](*inputs))
    return values[-1]


# Graphs that together use every op, each on inputs where it is finite.
OP_GRAPHS = [
    "add(0,3);mul(4,0);max(5,2);div(6,3)",
    "neg(0);sigmoid(4);tanh(0);exp(6);add(5,7);log(8);abs(0);sqrt(0);mul(10,11);add(9,12)",
    "square(0);mean_bwh(0);mean_whc(0);mean_wh(0);mean_whg(0);add(5,6);add(9,7);add(10,8);add(4,11)",
    "mean_sq_bwh(0);mean_sq_whc(0);mean_sq_wh(0);mean_sq_whg(0);add(4,5);add(8,6);add(9,7)",
    "std_bwh(0);std_whc(0);std_wh(0);std_whg(0);add(4,5);add(8,6);add(9,7);div(0,10)",
    "log(1);sqrt(1);add(4,5)",  # slog(0) = ssqrt(0) = 0
]


@pytest.mark.parametrize("text", OP_GRAPHS)
def test_compiled_ops_match_a_float64_reference(text):
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, size=(3, 4, 5, 4))
    v0 = rng.normal(size=4)
    v1 = rng.uniform(0.5, 2.0, size=4)
    graph = space.Graph.from_string(text)
    output, _ = compiler.graph_forward(graph, x.astype(np.float32), v0, v1, training=True,
                                       epsilon=EPSILON, groups=GROUPS)
    np.testing.assert_allclose(output.numpy(), reference_forward(graph.canonical, x, v0, v1),
                               rtol=2e-4, atol=2e-5)


def test_every_op_is_covered_by_the_reference_test():
    used = {part.split("(")[0] for text in OP_GRAPHS for part in text.split(";")}
    assert used == set(space.OPS)


def test_signed_log_and_sqrt_have_finite_gradients_at_zero():
    x = tf.constant([-4.0, 0.0, 4.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(compiler.signed_log(x) + compiler.signed_sqrt(x))
    gradient = tape.gradient(y, x).numpy()
    assert np.all(np.isfinite(gradient))
    np.testing.assert_allclose(gradient[[0, 2]], [0.25 + 0.25, 0.25 + 0.25], rtol=1e-6)


def test_batch_aggregation_reads_moving_statistic_at_inference():
    graph = space.Graph.from_string("mean_bwh(0);mean_sq_bwh(0);std_bwh(0);add(4,5);add(7,6)")
    x = np.random.default_rng(1).normal(size=(2, 3, 3, 2)).astype(np.float32)
    moving = {4: [1.0, 2.0], 5: [3.0, 4.0], 6: [5.0, 6.0]}
    output, collected = compiler.graph_forward(graph, x, training=False, moving=moving,
                                               epsilon=EPSILON)
    expected = np.array([1.0, 2.0]) + np.array([3.0, 4.0]) + EPSILON + np.sqrt(
        np.array([5.0, 6.0]) + EPSILON)
    np.testing.assert_allclose(output.numpy()[0, 0, 0], expected, rtol=1e-6)
    assert collected == {}
    _, collected = compiler.graph_forward(graph, x, training=True, epsilon=EPSILON)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(collected[4].numpy(), x64.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(collected[5].numpy(), (x64 ** 2).mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(collected[6].numpy(), x64.var(axis=(0, 1, 2)), rtol=1e-5)
    with pytest.raises(ValueError, match="moving statistic"):
        compiler.graph_forward(graph, x, training=False)


# -- the six EvoNorms, compiled from graphs, against the hand-written layers ---------------

HAND_WRITTEN = {
    "evonorm_b0": "EvoNormB0", "evonorm_b1": "EvoNormB1", "evonorm_b2": "EvoNormB2",
    "evonorm_s0": "EvoNormS0", "evonorm_s1": "EvoNormS1", "evonorm_s2": "EvoNormS2",
}
FRONT_ENDS = {
    "keras3": (keras, evonorm_tf, evonorm_tf.get_norm_act),
    "tf_keras": (tf_keras, evonorm_tf_keras, evonorm_tf_keras.get_norm_act),
}


def _pair(name, front_end):
    _, module, get_norm_act = FRONT_ENDS[front_end]
    kwargs = {"groups": GROUPS} if name.startswith("evonorm_s") else {"momentum": 0.9}
    hand = getattr(module, HAND_WRITTEN[name])(**kwargs)
    searched = get_norm_act("graph:" + space.EVONORM_GRAPHS[name], groups=GROUPS)
    x = tf.constant(np.random.default_rng(2).normal(0.5, 1.5, size=(4, 5, 5, 4)), tf.float32)
    hand(x), searched(x)  # build
    rng = np.random.default_rng(3)
    gamma, beta, v = rng.uniform(0.5, 1.5, 4), rng.normal(size=4), rng.uniform(0.5, 1.5, 4)
    for layer in (hand, searched):
        layer.gamma.assign(gamma)
        layer.beta.assign(beta)
    if hasattr(hand, "v"):
        hand.v.assign(v)
        searched.v1.assign(v)
    return hand, searched, x


def _trainable(layer, name):
    weights = [layer.gamma, layer.beta]
    if hasattr(layer, "v") or getattr(layer, "v1", None) is not None:
        weights.append(layer.v if hasattr(layer, "v") else layer.v1)
    return weights


@pytest.mark.parametrize("front_end", sorted(FRONT_ENDS))
@pytest.mark.parametrize("name", sorted(HAND_WRITTEN))
def test_evonorm_graph_matches_the_hand_written_layer(name, front_end):
    hand, searched, x = _pair(name, front_end)
    results = []
    for layer in (hand, searched):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * tf.sin(y))
        weights = _trainable(layer, name)
        gradients = tape.gradient(loss, [x] + weights)
        results.append((y.numpy(), [g.numpy() for g in gradients]))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5, atol=1e-6)
    for hand_gradient, graph_gradient in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(graph_gradient, hand_gradient, rtol=1e-4, atol=1e-5)
    if name.startswith("evonorm_b"):
        (moving,) = searched.moving_statistics
        np.testing.assert_allclose(moving.numpy(), hand.moving_variance.numpy(), rtol=1e-6)
        assert not np.allclose(moving.numpy(), 1.0)  # it was updated
    x_test = x[:1] * 2.0 + 0.3
    np.testing.assert_allclose(searched(x_test, training=False).numpy(),
                               hand(x_test, training=False).numpy(), rtol=1e-5, atol=1e-6)


def test_graph_layer_compiles_with_xla_and_serializes():
    layer = evonorm_tf.get_norm_act("graph:" + space.EVONORM_GRAPHS["evonorm_b0"])
    x = tf.random.normal((2, 4, 4, 8))
    eager = layer(x, training=True)
    layer.moving_statistics[0].assign(tf.ones(8))
    xla = tf.function(lambda t: layer(t, training=False), jit_compile=True)(x)
    np.testing.assert_allclose(xla.numpy(), layer(x, training=False).numpy(), rtol=1e-5, atol=1e-6)
    assert eager.shape == x.shape
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.graph == layer.graph and config["graph"] == space.EVONORM_GRAPHS["evonorm_b0"]


def test_graph_layer_channels_first_is_transposed_channels_last():
    text = "graph:" + space.EVONORM_GRAPHS["evonorm_s0"]
    last = evonorm_tf.get_norm_act(text, groups=2)
    first = evonorm_tf.get_norm_act(text, groups=2, data_format="channels_first")
    x = tf.random.normal((2, 3, 3, 4))
    expected = last(x).numpy()
    got = first(tf.transpose(x, [0, 3, 1, 2])).numpy()
    np.testing.assert_allclose(np.transpose(got, [0, 2, 3, 1]), expected, rtol=1e-5, atol=1e-6)


def test_graph_layer_in_a_tf_keras_model_trains_its_weights():
    layer = evonorm_tf_keras.get_norm_act("graph:mul(0,2);add(4,0);std_wh(0);div(5,6)")
    model = tf_keras.Sequential([tf_keras.Input((4, 4, 3)), tf_keras.layers.Conv2D(4, 1), layer])
    assert {w.name.split("/")[-1].split(":")[0] for w in model.trainable_weights} >= {"v0", "gamma"}


def test_bad_graph_names_raise():
    with pytest.raises(ValueError, match="unknown op 'nope'"):
        evonorm_tf.get_norm_act("graph:nope(0)")
    with pytest.raises(ValueError, match="groups=3 does not divide channels=4"):
        evonorm_tf.get_norm_act("graph:std_whg(0)", groups=3)(tf.zeros((1, 2, 2, 4)))

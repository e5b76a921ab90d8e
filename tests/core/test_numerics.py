"""Every norm-act layer against the NumPy float64 reference (tests/reference.py).

Random seeded shapes of rank 3, 4 and 5, both data formats, both front-ends,
training and inference, random weights (γ, β, v, τ and moving statistics),
inputs with a non-zero mean. Tolerance: max |error| <= 1e-5 in float32.
"""

import numpy as np
import pytest
import tensorflow as tf

import reference
from layer_cases import (
    FRONT_ENDS,
    NAMES,
    built_layer,
    call,
    case_rng,
    from_format,
    groups_for,
    random_input,
    random_shape,
    to_format,
)

TOLERANCE = 1e-5
DATA_FORMATS = ("channels_last", "channels_first")


def _check_against_reference(front_end, name, training, data_format, rank, nonlinearity,
                              seed_parts):
    rng = case_rng(*seed_parts)
    shape = random_shape(rng, rank)
    x = random_input(rng, shape)
    groups = groups_for(name, shape[-1], rng)
    epsilon = float(rng.choice([1e-5, 1e-3]))
    layer, weights = built_layer(
        front_end, name, x, rng, data_format=data_format, groups=groups,
        nonlinearity=nonlinearity, epsilon=epsilon,
    )
    output = call(layer, to_format(x, data_format), training)
    assert output.dtype == tf.float32
    assert tuple(output.shape) == tuple(to_format(x, data_format).shape)
    expected = reference.norm_act(
        name, x.astype(np.float64), weights, training=training, nonlinearity=nonlinearity,
        epsilon=epsilon, groups=groups,
    )
    error = np.max(np.abs(from_format(output.numpy(), data_format) - expected))
    assert error <= TOLERANCE, f"max |error| {error:.3g} (shape {shape}, groups {groups})"


@pytest.mark.parametrize("rank", (3, 4, 5))
@pytest.mark.parametrize("data_format", DATA_FORMATS)
@pytest.mark.parametrize("training", (True, False), ids=("training", "inference"))
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_matches_reference(front_end, name, training, data_format, rank):
    _check_against_reference(
        front_end, name, training, data_format, rank, True,
        ("numerics", name, training, data_format, rank),
    )


@pytest.mark.parametrize("data_format", DATA_FORMATS)
@pytest.mark.parametrize("training", (True, False), ids=("training", "inference"))
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_without_nonlinearity_matches_reference(front_end, name, training, data_format):
    """EvoNorms become `x·γ + β`; baselines drop their activation."""
    rank = int(case_rng("rank", name, data_format).integers(3, 6))
    _check_against_reference(
        front_end, name, training, data_format, rank, False,
        ("affine", name, training, data_format),
    )


@pytest.mark.parametrize("data_format", DATA_FORMATS)
@pytest.mark.parametrize("training", (True, False), ids=("training", "inference"))
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_mean_much_larger_than_std(front_end, name, training, data_format):
    """Inputs ~ 1000 ± 1: statistics must not lose the variance to cancellation.

    float32 itself limits the accuracy here (the formulas subtract numbers
    near 1000, e.g. B2's `sqrt(mu2_hw + ε) − x`, GN's `x − mean`), to ~1e-4 of
    the output scale; a one-pass `E[x²] − E[x]²` variance in float32 is off by
    tens of percent at this ratio and fails by orders of magnitude.
    """
    rng = case_rng("large-mean", name, training, data_format)
    shape = [3, 5, 5, 8]
    x = (rng.normal(size=shape) + 1000.0).astype(np.float32)
    groups = groups_for(name, shape[-1], rng)
    layer, weights = built_layer(front_end, name, x, rng, data_format=data_format, groups=groups)
    output = from_format(call(layer, to_format(x, data_format), training).numpy(), data_format)
    expected = reference.norm_act(name, x.astype(np.float64), weights, training=training,
                                  groups=groups)
    error = np.max(np.abs(output - expected)) / np.max(np.abs(expected))
    assert error <= 5e-4, f"max |error| / max |output| = {error:.3g}"


@pytest.mark.parametrize("name", reference.B_SERIES + reference.S_SERIES)
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_evonorm_without_nonlinearity_has_no_v_or_moving_variance(front_end, name):
    rng = case_rng("affine-weights", name)
    x = random_input(rng, [2, 3, 3, 4])
    layer, weights = built_layer(front_end, name, x, rng, groups=groups_for(name, 4, rng),
                                 nonlinearity=False)
    assert sorted(weights) == ["beta", "gamma"]


@pytest.mark.parametrize("compiled", (False, True), ids=("eager", "tf_function"))
@pytest.mark.parametrize("data_format", DATA_FORMATS)
@pytest.mark.parametrize("name", reference.B_SERIES)
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_moving_variance_follows_reference_update(front_end, name, data_format, compiled):
    """`mv ← m·mv + (1 − m)·s2_bhw` (biased, from 1) over batches; inference then uses mv."""
    rng = case_rng("moving", name, data_format, compiled)
    rank = int(rng.integers(3, 6))
    shape = random_shape(rng, rank)
    momentum = float(rng.choice([0.9, 0.6]))
    layer = FRONT_ENDS[front_end].get_norm_act(name, momentum=momentum, data_format=data_format)
    layer.build(tuple(to_format(np.zeros(shape), data_format).shape))
    np.testing.assert_array_equal(layer.moving_variance.numpy(), np.ones(shape[-1]))

    step = tf.function(lambda x: layer(x, training=True)) if compiled else (
        lambda x: layer(x, training=True))
    expected = np.ones(shape[-1])
    for batch in range(4):
        # Different batches, different batch sizes and scales.
        x = random_input(rng, [batch + 1] + shape[1:]) * (1.0 + batch)
        step(tf.constant(to_format(x, data_format)))
        expected = reference.moving_variance_update(expected, x.astype(np.float64), momentum)
        np.testing.assert_allclose(layer.moving_variance.numpy(), expected, rtol=1e-5, atol=1e-6)

    # Inference reads the moving variance and leaves it alone.
    x = random_input(rng, shape)
    weights = {"gamma": 1.0, "beta": 0.0, "v": 1.0,
               "moving_variance": layer.moving_variance.numpy()}
    output = from_format(call(layer, to_format(x, data_format), False).numpy(), data_format)
    reference_output = reference.norm_act(name, x.astype(np.float64), weights, training=False)
    assert np.max(np.abs(output - reference_output)) <= TOLERANCE
    np.testing.assert_array_equal(layer.moving_variance.numpy(), weights["moving_variance"])
    # ...and differs from what the initial moving variance (ones) would give.
    initial = reference.norm_act(name, x.astype(np.float64), {**weights, "moving_variance": 1.0},
                                 training=False)
    assert np.max(np.abs(initial - reference_output)) > 100 * TOLERANCE


@pytest.mark.parametrize("name", reference.B_SERIES)
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_training_flag_as_tensor(front_end, name):
    """A boolean tensor `training` (Keras learning phase) selects the same branches as a bool."""
    rng = case_rng("tensor-flag", name)
    x = random_input(rng, [3, 4, 4, 4])
    layer, weights = built_layer(front_end, name, x, rng)
    moving_variance = weights["moving_variance"]
    run = tf.function(lambda x, training: layer(x, training=training))
    for training in (True, False):
        output = run(tf.constant(x), tf.constant(training)).numpy()
        expected = reference.norm_act(name, x.astype(np.float64),
                                      {**weights, "moving_variance": moving_variance},
                                      training=training)
        assert np.max(np.abs(output - expected)) <= TOLERANCE, training
        updated = reference.moving_variance_update(moving_variance, x.astype(np.float64), 0.9)
        moving_variance = updated if training else moving_variance
        np.testing.assert_allclose(layer.moving_variance.numpy(), moving_variance, rtol=1e-5)


def test_reference_agrees_with_hand_computation():
    """The reference itself on tiny examples worked out by hand (guards the oracle)."""
    # One sample, two spatial positions, one channel: x = [1, 3]; s2_bhw = s2_hw = 1,
    # mu2_hw = mu2_hwg = 5, mean = 2.
    x = np.array([[[1.0], [3.0]]])
    weights = {"gamma": np.ones(1), "beta": np.zeros(1), "v": np.ones(1), "tau": np.zeros(1),
               "moving_mean": np.zeros(1), "moving_variance": np.full(1, 4.0)}

    def output(name, training=True, **kwargs):
        return reference.norm_act(name, x, weights, training=training, epsilon=1e-12,
                                  groups=1, **kwargs).ravel()

    np.testing.assert_allclose(reference.batch_variance(x), [1.0])
    np.testing.assert_allclose(reference.instance_second_moment(x).ravel(), [5.0])
    sigmoid = 1 / (1 + np.exp(-np.array([1.0, 3.0])))
    root5 = np.sqrt(5)
    expected = {
        # B0 (v=1): max(1, x + 1) = x + 1.
        "evonorm_b0": [1 / 2, 3 / 4],
        # B1: max(1, (x + 1)·sqrt5).
        "evonorm_b1": [1 / (2 * root5), 3 / (4 * root5)],
        # B2: max(1, sqrt5 − x) → [sqrt5 − 1, 1].
        "evonorm_b2": [1 / (root5 - 1), 3.0],
        # S-series: σ(x)·x over sqrt(s2 = 1) or sqrt(mu2 = 5).
        "evonorm_s0": [1, 3] * sigmoid,
        "evonorm_s1": [1, 3] * sigmoid,
        "evonorm_s2": [1, 3] * sigmoid / root5,
        "gn_relu": [0.0, 1.0],
        "gn_silu": [-1 / (1 + np.e), 1 / (1 + np.exp(-1))],
        "frn_tlu": [1 / root5, 3 / root5],
        "bn_relu": [0.0, 1.0],
    }
    for name, values in expected.items():
        np.testing.assert_allclose(output(name), values, err_msg=name)
    # Inference with moving variance 4: B0 → max(2, x + 1) = [2, 4];
    # B2 → max(2, sqrt5 − x) = 2.
    np.testing.assert_allclose(output("evonorm_b0", training=False), [1 / 2, 3 / 4])
    np.testing.assert_allclose(output("evonorm_b2", training=False), [1 / 2, 3 / 2])
    # BN inference with moving mean 0, variance 4: silu(x / 2).
    np.testing.assert_allclose(output("bn_silu", training=False),
                               [0.5 / (1 + np.exp(-0.5)), 1.5 / (1 + np.exp(-1.5))])
    np.testing.assert_allclose(output("evonorm_s1", nonlinearity=False), [1.0, 3.0])
    # Groups: channels [0, 1 | 2, 3] with 2 groups never mix one group with another.
    x4 = np.arange(8.0).reshape(1, 2, 4)
    np.testing.assert_allclose(reference.group_variance(x4, 2).ravel(), [4.25] * 4)
    np.testing.assert_allclose(reference.group_mean(x4, 2).ravel(), [2.5, 2.5, 4.5, 4.5])
    np.testing.assert_allclose(reference.group_second_moment(x4, 2).ravel(),
                               [10.5, 10.5, 24.5, 24.5])

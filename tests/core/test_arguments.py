"""Bad arguments fail early with a ValueError (TypeError for a wrong type) quoting the value."""

import numpy as np
import pytest
import tensorflow as tf

import reference
from layer_cases import FRONT_ENDS, GROUPED, NAMES, make_layer

BATCH_LAYERS = reference.B_SERIES + reference.BATCH_NORMS


def _grouping(name):
    """Arguments that make `name` valid on 8 channels."""
    return {"groups": 4} if name in GROUPED else {}


def _assert_quotes(error, *values):
    message = str(error.value)
    for value in values:
        assert str(value) in message, f"{value!r} not in {message!r}"


@pytest.mark.parametrize("name", GROUPED)
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_groups_must_divide_channels(front_end, name):
    layer = make_layer(front_end, name, groups=3)
    with pytest.raises(ValueError) as error:
        layer(tf.zeros([2, 4, 4, 8]))
    _assert_quotes(error, "groups=3", "8")
    layer = make_layer(front_end, name, groups=None, group_size=3)
    with pytest.raises(ValueError) as error:
        layer(tf.zeros([2, 8, 4, 4]))  # channels_last: 4 channels
    _assert_quotes(error, "group_size=3", "4")


@pytest.mark.parametrize("name", GROUPED)
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_group_size_is_an_alternative_to_groups(front_end, name):
    by_size = make_layer(front_end, name, groups=None, group_size=2)
    by_count = make_layer(front_end, name, groups=4)
    x = tf.constant(np.random.default_rng(0).normal(1.0, 1.0, [2, 3, 3, 8]).astype(np.float32))
    np.testing.assert_allclose(by_size(x).numpy(), by_count(x).numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", GROUPED)
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_groups_and_group_size_are_exclusive(front_end, name):
    with pytest.raises(ValueError) as error:
        make_layer(front_end, name, groups=4, group_size=2)
    _assert_quotes(error, "groups=4", "group_size=2")
    with pytest.raises(ValueError) as error:
        make_layer(front_end, name, groups=0)
    _assert_quotes(error, "groups=0")
    with pytest.raises(TypeError) as error:
        make_layer(front_end, name, groups=2.0)
    _assert_quotes(error, "groups=2.0")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_unknown_data_format(front_end, name):
    for data_format in ("NHWC", "channels_middle"):
        with pytest.raises(ValueError) as error:
            make_layer(front_end, name, data_format=data_format, **_grouping(name))
        _assert_quotes(error, repr(data_format))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_unsupported_rank(front_end, name):
    for shape in ((2, 8), (2, 2, 2, 2, 2, 8)):
        layer = make_layer(front_end, name, **_grouping(name))
        with pytest.raises(ValueError) as error:
            layer(tf.zeros(shape))
        _assert_quotes(error, f"rank {len(shape)}")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_epsilon_must_be_positive(front_end, name):
    for epsilon in (0.0, -1e-5, 0):
        with pytest.raises(ValueError) as error:
            make_layer(front_end, name, epsilon=epsilon, **_grouping(name))
        _assert_quotes(error, f"epsilon={epsilon!r}")
    with pytest.raises(TypeError) as error:
        make_layer(front_end, name, epsilon="1e-5", **_grouping(name))
    _assert_quotes(error, "'1e-5'")


@pytest.mark.parametrize("name", BATCH_LAYERS)
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_momentum_must_be_in_unit_interval(front_end, name):
    for momentum in (1.0, 1.5, -0.1, 1):
        with pytest.raises(ValueError) as error:
            make_layer(front_end, name, momentum=momentum)
        _assert_quotes(error, f"momentum={momentum!r}")
    for momentum in (0.0, 0.99):  # the interval's ends: 0 is allowed, 1 is not
        assert make_layer(front_end, name, momentum=momentum).momentum == momentum


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_flags_must_be_booleans(front_end, name):
    with pytest.raises(TypeError) as error:
        make_layer(front_end, name, nonlinearity="yes", **_grouping(name))
    _assert_quotes(error, "nonlinearity='yes'")
    if name in BATCH_LAYERS:
        with pytest.raises(TypeError) as error:
            make_layer(front_end, name, synchronized=1)
        _assert_quotes(error, "synchronized=1")


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_valid_arguments_are_kept(front_end):
    """The checks do not reject or alter good values (guards the tests above)."""
    layer = make_layer(front_end, "evonorm_b0", epsilon=1e-3, momentum=0.5,
                       data_format="channels_first", nonlinearity=False)
    assert (layer.epsilon, layer.momentum, layer.data_format, layer.nonlinearity) == (
        1e-3, 0.5, "channels_first", False)
    layer = make_layer(front_end, "evonorm_s0", groups=None, group_size=4)
    assert (layer.groups, layer.group_size) == (None, 4)
    assert layer(tf.zeros([1, 2, 2, 8])).shape == (1, 2, 2, 8)

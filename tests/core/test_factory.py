"""`get_norm_act`: every name builds in both front-ends, case-insensitively."""

import keras
import pytest
import tensorflow as tf
import tf_keras

import evonorm_tf
import evonorm_tf.tf_keras
from evonorm_tf import factory
from layer_cases import FRONT_ENDS, GROUPED

# The names of the issue, with the class each must build.
EXPECTED_CLASSES = {
    "bn_relu": "BatchNormReLU",
    "bn_silu": "BatchNormSiLU",
    "gn_relu": "GroupNormReLU",
    "gn_silu": "GroupNormSiLU",
    "frn_tlu": "FilterResponseNormTLU",
    "evonorm_b0": "EvoNormB0",
    "evonorm_b1": "EvoNormB1",
    "evonorm_b2": "EvoNormB2",
    "evonorm_s0": "EvoNormS0",
    "evonorm_s1": "EvoNormS1",
    "evonorm_s2": "EvoNormS2",
}
LAYER_BASES = {"keras3": keras.layers.Layer, "tf_keras": tf_keras.layers.Layer}


def test_names():
    assert set(evonorm_tf.NORM_ACT_NAMES) == set(EXPECTED_CLASSES)
    assert len(evonorm_tf.NORM_ACT_NAMES) == len(EXPECTED_CLASSES)
    assert tuple(evonorm_tf.tf_keras.NORM_ACT_NAMES) == tuple(evonorm_tf.NORM_ACT_NAMES)


@pytest.mark.parametrize("name", sorted(EXPECTED_CLASSES))
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_every_name_builds(front_end, name):
    module = FRONT_ENDS[front_end]
    layer = module.get_norm_act(name)
    assert type(layer) is getattr(module, EXPECTED_CLASSES[name])
    assert isinstance(layer, LAYER_BASES[front_end])
    # The other front-end's base class is not mixed in (a Keras 3 layer is not
    # tracked by a tf_keras model and vice versa).
    other = LAYER_BASES["tf_keras" if front_end == "keras3" else "keras3"]
    assert not isinstance(layer, other)
    # Defaults (32 groups) work on 32 channels.
    assert layer(tf.zeros([2, 3, 3, 32]), training=True).shape == (2, 3, 3, 32)


SPELLINGS = ["EvoNorm_S0", "EVONORM_B1", "Bn_ReLU", "gn_SiLU", "FRN_TLU", " evonorm_b2 "]


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_names_are_case_insensitive(front_end, spelling):
    module = FRONT_ENDS[front_end]
    canonical = spelling.strip().lower()
    assert type(module.get_norm_act(spelling)) is getattr(module, EXPECTED_CLASSES[canonical])


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_unknown_name_lists_valid_names(front_end):
    for unknown in ("evonorm_s3", "batchnorm", ""):
        with pytest.raises(ValueError) as error:
            FRONT_ENDS[front_end].get_norm_act(unknown)
        message = str(error.value)
        assert repr(unknown) in message
        for name in EXPECTED_CLASSES:
            assert name in message
    with pytest.raises(TypeError):
        FRONT_ENDS[front_end].get_norm_act(None)


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_arguments_are_forwarded(front_end):
    module = FRONT_ENDS[front_end]
    layer = module.get_norm_act("evonorm_s0", groups=4, epsilon=1e-3, data_format="channels_first")
    assert (layer.groups, layer.epsilon, layer.data_format) == (4, 1e-3, "channels_first")
    layer = module.get_norm_act("evonorm_b0", momentum=0.5, nonlinearity=False)
    assert (layer.momentum, layer.nonlinearity) == (0.5, False)
    layer = module.get_norm_act("bn_silu", momentum=0.5, epsilon=1e-3)
    assert (layer.momentum, layer.epsilon) == (0.5, 1e-3)
    # An argument the layer does not take is rejected, naming it.
    with pytest.raises((TypeError, ValueError)) as error:
        module.get_norm_act("evonorm_s0", momentum=0.9)
    assert "momentum" in str(error.value)


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_accepted_arguments(front_end):
    shared = {"nonlinearity", "epsilon", "data_format", "gamma_initializer", "beta_initializer"}
    for name in EXPECTED_CLASSES:
        accepted = evonorm_tf.registry.accepted_arguments(name, "keras" if front_end == "keras3" else "tf_keras")
        assert shared <= accepted, name
        assert ({"groups", "group_size"} <= accepted) == (name in GROUPED), name
        is_batch = name.startswith(("evonorm_b", "bn_"))
        assert ({"momentum", "synchronized"} <= accepted) == is_batch, name

"""The registry: one spec per name, everything derived from it; extensions plug in."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import evonorm_tf
import evonorm_tf.tf_keras
from evonorm_tf import norm_act_core, registry
from evonorm_tf.registry import NormActSpec


def test_every_builtin_name_has_one_spec_and_a_class_in_each_front_end():
    assert evonorm_tf.NORM_ACT_NAMES == registry.names()
    for spec in registry.specs():
        keras3 = registry.layer_class(spec.name, "keras")
        tf_keras2 = registry.layer_class(spec.name, "tf_keras")
        assert keras3.__name__ == tf_keras2.__name__ == spec.class_name
        assert issubclass(keras3, spec.core) and issubclass(tf_keras2, spec.core)
        assert issubclass(keras3, keras.layers.Layer) and not issubclass(keras3, tf_keras.layers.Layer)
        assert issubclass(tf_keras2, tf_keras.layers.Layer) and not issubclass(tf_keras2, keras.layers.Layer)
        assert getattr(evonorm_tf, spec.class_name) is keras3
        assert getattr(evonorm_tf.tf_keras, spec.class_name) is tf_keras2
        assert evonorm_tf.tf_keras.TF_KERAS_TABLE[spec.name] is tf_keras2


def test_spec_facts_match_the_layers():
    for spec in registry.specs():
        layer = evonorm_tf.get_norm_act(spec.name)
        layer(tf.zeros([2, 3, 3, 32]), training=True)
        has_moving_statistics = any("moving" in w.name for w in layer.weights)
        assert has_moving_statistics == spec.batch_dependent, spec.name
        if "groups" in spec.defaults:
            assert layer.groups == spec.defaults["groups"]
        assert layer.epsilon == pytest.approx(spec.defaults["epsilon"])


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown norm-act name 'evonorm_x9'.*evonorm_b0.*evonorm_s2"):
        registry.spec("evonorm_x9")
    with pytest.raises(TypeError, match="must be a string, received 3"):
        evonorm_tf.get_norm_act(3)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.spec("evonorm_b0"))


class _ScaledIdentityCore(norm_act_core.NormActCore):
    """A toy norm-act, `x·γ + β` written through the shared core, to show what adding one takes."""

    def _normalize(self, x, training):
        return x * self.gamma + self.beta


def test_adding_a_norm_act_is_one_spec():
    spec = NormActSpec("toy_affine", "ToyAffine", _ScaledIdentityCore, "evonorm_s",
                       "x", batch_dependent=False, defaults={"epsilon": 1e-5})
    registry.register(spec)
    try:
        x = np.arange(24, dtype=np.float32).reshape([1, 2, 3, 4])
        for front_end, module in (("keras", evonorm_tf), ("tf_keras", evonorm_tf.tf_keras)):
            layer = module.get_norm_act("TOY_affine", gamma_initializer="zeros", beta_initializer="ones")
            assert type(layer).__name__ == "ToyAffine"
            np.testing.assert_array_equal(layer(x).numpy(), np.ones_like(x))
            assert "gamma_initializer" in registry.accepted_arguments("toy_affine", front_end)
            clone = type(layer).from_config(layer.get_config())
            assert clone.get_config() == layer.get_config()
    finally:
        registry._SPECS.pop("toy_affine")
        registry._CLASSES.pop(("keras", "toy_affine"), None)
        registry._CLASSES.pop(("tf_keras", "toy_affine"), None)


def test_an_extension_registers_a_prefix():
    class Named(keras.layers.Layer):
        def __init__(self, recipe, scale=1.0, **kwargs):
            super().__init__(**kwargs)
            self.recipe, self.scale = recipe, scale

    registry.register_prefix("recipe:", {"keras": Named}, describe="recipe:<text>", name_argument="recipe")
    try:
        layer = evonorm_tf.get_norm_act("Recipe:x*2", scale=3.0)
        assert isinstance(layer, Named) and layer.recipe == "Recipe:x*2" and layer.scale == 3.0
        assert registry.accepted_arguments("recipe:x", "keras") >= {"scale"}
        assert "recipe" not in registry.accepted_arguments("recipe:x", "keras")
        with pytest.raises(ValueError, match="recipe:<text> has no tf_keras layer"):
            evonorm_tf.tf_keras.get_norm_act("recipe:x")
        with pytest.raises(ValueError, match="or recipe:<text>"):
            registry.spec("nothing")
    finally:
        registry._PREFIXES.pop("recipe:")


def test_spec_validation():
    with pytest.raises(ValueError, match="family must be one of"):
        NormActSpec("x", "X", _ScaledIdentityCore, "mystery", "x", batch_dependent=False)
    with pytest.raises(ValueError, match="lower case"):
        NormActSpec("Bad Name", "X", _ScaledIdentityCore, "evonorm_s", "x", batch_dependent=False)

"""Every weight built from one configured initializer starts from its own draw."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from evonorm_tf.gan import blocks, conditional_norm, deep_blocks
from evonorm_tf.gan.generator import Generator
from evonorm_tf.gan.initializers import fresh_initializer


def _kernels(norm):
    return (norm.gain_projection.layer.kernel.numpy(), norm.bias_projection.layer.kernel.numpy())


@pytest.mark.parametrize("initializer", [
    "orthogonal", tf_keras.initializers.Orthogonal(), tf_keras.initializers.GlorotNormal(),
    {"class_name": "Orthogonal", "config": {"gain": 1.0}},
])
def test_gain_and_bias_projections_start_different(initializer):
    # An unseeded instance shared by both projections returned the same matrix twice.
    layer = conditional_norm.ConditionalNormAct("bn_relu", projection_initializer=initializer)
    layer(tf.zeros((2, 4, 4, 8)), tf.zeros((2, 6)))
    gain, bias = _kernels(layer)
    assert gain.shape == bias.shape == (6, 8)
    assert np.abs(gain - bias).max() > 1e-2


def test_seeded_initializer_is_reproducible_and_still_distinct():
    def build():
        layer = conditional_norm.ConditionalNormAct(
            "evonorm_b0", projection_initializer=tf_keras.initializers.Orthogonal(seed=3))
        layer(tf.zeros((2, 4, 4, 8)), tf.zeros((2, 6)))
        return _kernels(layer)

    first, second = build(), build()
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert np.abs(first[0] - first[1]).max() > 1e-2
    # The gain takes the seed, the bias seed + 1.
    np.testing.assert_allclose(first[0], tf_keras.initializers.Orthogonal(seed=3)((6, 8)))
    np.testing.assert_allclose(first[1], tf_keras.initializers.Orthogonal(seed=4)((6, 8)))


@pytest.mark.parametrize("architecture", ["biggan", "biggan_deep"])
def test_no_two_projections_of_a_generator_start_equal(architecture):
    G = Generator(resolution=32, ch=8, z_dim=32, shared_dim=8, num_classes=10,
                  norm_act="evonorm_b0", architecture=architecture)
    G((tf.zeros((2, 32)), tf.zeros((2,), tf.int32)))
    norms = [layer for layer in G.submodules
             if isinstance(layer, conditional_norm.ConditionalNormAct)]
    kernels = [k for norm in norms for k in _kernels(norm)]
    assert len(kernels) == 2 * len(norms) >= 12
    for i, a in enumerate(kernels):
        for b in kernels[i + 1:]:
            if a.shape == b.shape:
                assert np.abs(a - b).max() > 1e-2


def test_two_blocks_projections_differ():
    first = blocks.GeneratorBlock(16, "bn_relu")
    second = blocks.GeneratorBlock(16, "bn_relu")
    for block in (first, second):
        block(tf.zeros((2, 4, 4, 16)), tf.zeros((2, 6)))
    assert np.abs(_kernels(first.norm1)[0] - _kernels(second.norm1)[0]).max() > 1e-2
    deep = deep_blocks.DeepGeneratorBlock(16, False, "bn_relu")
    deep(tf.zeros((2, 4, 4, 16)), tf.zeros((2, 6)))
    deep_kernels = [k for norm in deep.norms for k in _kernels(norm)]
    assert np.abs(deep_kernels[0] - deep_kernels[1]).max() > 1e-2


def test_fresh_initializer_returns_new_instances_and_rejects_bad_input():
    shared = tf_keras.initializers.Orthogonal()
    first, second = fresh_initializer(shared, 0), fresh_initializer(shared, 1)
    assert first is not shared and second is not first
    assert np.abs(first((5, 5)).numpy() - second((5, 5)).numpy()).max() > 1e-2
    with pytest.raises(ValueError, match="received -1"):
        fresh_initializer("orthogonal", -1)
    with pytest.raises(ValueError, match="received None"):
        fresh_initializer(None)

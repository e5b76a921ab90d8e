"""Keras 3 NF-ResNet and MixPath layers: the same numbers as the tf_keras versions (which
are checked against NumPy float64 in test_nf_resnet.py and test_multipath_sampling.py), a
NumPy check of their own, and `.keras` save/load round trips."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from evonorm_tf import neighbours
from evonorm_tf.modeling import build_nf_resnet as build_tf_keras_nf_resnet
from evonorm_tf.modeling.layers import MultiPathBlock as TfKerasMultiPathBlock
from evonorm_tf.modeling.layers import ScaledWSConv2D as TfKerasScaledWSConv2D


def _round_trip(model, tmp_path, name):
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    return keras.models.load_model(path)


def test_scaled_ws_conv_matches_numpy_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    layer = neighbours.ScaledWSConv2D(4, 1, activation_gain="relu")
    layer.build((None, 3, 3, 3))
    kernel, gain = rng.normal(0.5, 2.0, (1, 1, 3, 4)), rng.uniform(0.5, 1.5, 4)
    layer.kernel.assign(kernel.astype(np.float32))
    layer.gain.assign(gain.astype(np.float32))
    x = rng.normal(size=(2, 3, 3, 3))
    flat = kernel.reshape(3, 4)
    # ReLU's exact gain sqrt(2 / (1 − 1/π)).
    standardized = gain * math.sqrt(2.0 / (1.0 - 1.0 / math.pi)) * (flat - flat.mean(0)) / np.sqrt(
        flat.var(0) * 3 + 1e-4)
    np.testing.assert_allclose(layer(x.astype(np.float32)).numpy(), x @ standardized, rtol=1e-4, atol=1e-5)

    inputs = keras.Input((3, 3, 3))
    model = keras.Model(inputs, layer(inputs))
    restored = _round_trip(model, tmp_path, "ws_conv")
    assert isinstance(restored.layers[-1], neighbours.ScaledWSConv2D)
    assert restored.layers[-1].get_config() == layer.get_config()
    np.testing.assert_array_equal(restored.layers[-1].gain.numpy(), layer.gain.numpy())
    np.testing.assert_allclose(restored(x).numpy(), model(x).numpy(), rtol=1e-6)


def test_scaled_ws_conv_equals_the_tf_keras_layer():
    rng = np.random.default_rng(1)
    ours, theirs = (cls(5, 3, padding="same", activation_gain="silu") for cls in
                    (neighbours.ScaledWSConv2D, TfKerasScaledWSConv2D))
    ours.build((None, 6, 6, 2))
    theirs.build((None, 6, 6, 2))
    weights = [rng.normal(size=w.shape).astype(np.float32) for w in theirs.weights]
    theirs.set_weights(weights)
    ours.set_weights(weights)  # kernel, bias, gain in both
    x = rng.normal(size=(2, 6, 6, 2)).astype(np.float32)
    np.testing.assert_allclose(ours(x).numpy(), theirs(x).numpy(), rtol=1e-5, atol=1e-6)


def test_residual_add_formula_and_round_trip(tmp_path):
    merge = neighbours.ScaledResidualAdd(alpha=0.3, skip_gain_init=0.5, drop_rate=0.1)
    branch, shortcut = keras.Input((2, 2, 1)), keras.Input((2, 2, 1))
    model = keras.Model([branch, shortcut], merge([branch, shortcut]))
    values = [np.full((1, 2, 2, 1), 2.0, np.float32), np.ones((1, 2, 2, 1), np.float32)]
    np.testing.assert_allclose(model(values).numpy(), 1.0 + 0.3 * 0.5 * 2.0)
    restored = _round_trip(model, tmp_path, "merge")
    assert restored.layers[-1].get_config() == merge.get_config()
    np.testing.assert_allclose(restored(values).numpy(), model(values).numpy())


def _copy_block_weights(source, target):
    pairs = [(source.shadow_norm, target.shadow_norm)] + list(zip(source.paths, target.paths))
    if source.path_form == "mixpath":
        pairs += [(source.expand, target.expand), (source.expand_norm, target.expand_norm),
                  (source.project, target.project)] + list(zip(source.path_norms, target.path_norms))
    for a, b in pairs:
        b.set_weights(a.get_weights())


@pytest.mark.parametrize("path_form", ["conv", "mixpath"])
def test_multipath_block_equals_tf_keras_and_round_trips(path_form, tmp_path):
    keras.utils.set_random_seed(2)  # the tf_keras block's kernels, copied to ours: one fixed draw
    rng = np.random.default_rng(2)
    options = dict(filters=4, kernel_sizes=(1, 3, 5, 7), max_active=2, path_form=path_form, activation=None)
    ours, theirs = neighbours.MultiPathBlock(**options), TfKerasMultiPathBlock(**options)
    x = rng.normal(size=(3, 6, 6, 4)).astype(np.float32)
    mask = tf.constant([0.0, 1.0, 0.0, 1.0])
    theirs(x, mask, training=True)
    ours.build(x.shape)
    theirs.shadow_norm.gamma.assign(rng.uniform(0.5, 1.5, (2, 4)).astype(np.float32))
    _copy_block_weights(theirs, ours)
    np.testing.assert_allclose(ours(x, mask, training=True).numpy(), theirs(x, mask, training=True).numpy(),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours.shadow_norm.moving_mean.numpy(), theirs.shadow_norm.moving_mean.numpy(),
                               rtol=1e-5, atol=1e-6)
    # tf_keras's fused BatchNorm moves its moving variance by the unbiased batch
    # variance, Keras 3's by the biased one: compare inference on equal statistics.
    _copy_block_weights(theirs, ours)
    np.testing.assert_allclose(ours(x, mask).numpy(), theirs(x, mask).numpy(), rtol=1e-4, atol=1e-5)

    inputs = keras.Input((6, 6, 4))
    model = keras.Model(inputs, ours(inputs, active_paths_mask=mask))
    restored = _round_trip(model, tmp_path, f"multipath_{path_form}")
    block = restored.layers[-1]
    assert isinstance(block, neighbours.MultiPathBlock) and block.get_config() == ours.get_config()
    np.testing.assert_array_equal(block.shadow_norm.moving_variance.numpy(),
                                  ours.shadow_norm.moving_variance.numpy())
    np.testing.assert_allclose(restored(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["relu", "silu"])
def test_nf_resnet_equals_tf_keras_and_round_trips(activation, tmp_path):
    keras.utils.set_random_seed(3)  # the tf_keras weights, copied to ours: one fixed draw
    options = dict(activation=activation, skip_gain_init=1.0, width_multiplier=0.5)
    ours = neighbours.build_nf_resnet(20, (8, 8, 1), num_classes=10, **options)
    theirs = build_tf_keras_nf_resnet(20, input_shape=(8, 8, 1), num_classes=10, **options)
    backbone = theirs.layers[1]
    copied = 0
    for layer in ours.layers:
        if layer.weights:
            source = theirs.get_layer(layer.name) if layer.name == "logits" else backbone.get_layer(layer.name)
            layer.set_weights(source.get_weights())
            copied += 1
    assert copied == 1 + 18 + 3 + 9 + 1  # stem, 2 convs × 9 blocks, 3 projections, 9 merges, logits
    x = np.random.default_rng(3).normal(size=(2, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(ours(x).numpy(), theirs(x).numpy(), rtol=1e-4, atol=1e-6)
    restored = _round_trip(ours, tmp_path, f"nf_resnet_{activation}")
    np.testing.assert_allclose(restored(x).numpy(), ours(x).numpy(), rtol=1e-6, atol=1e-7)
    assert restored.get_layer("stage3_block3_add").drop_rate == pytest.approx(0.1 * 8 / 9)
    assert isinstance(restored.get_layer("stage1_block1_conv1"), neighbours.ScaledWSConv2D)

"""NormActEfficientNet: parity with Keras's EfficientNet, norm-act placement, group rule, training."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from evonorm_tf.modeling import NormActEfficientNet, build_efficientnet, divisor_groups
from evonorm_tf.modeling.backbones.efficientnet import EFFICIENTNET_B0_BLOCKS, round_repeats

import norm_act_model_checks as checks

NORM_ACTS = ("bn_silu", "evonorm_b0", "evonorm_s0")
NARROW = dict(width_scale=0.25, depth_scale=0.1)  # one block per stage, 8…80 channels


def _images(batch=4, size=32, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=(batch, size, size, 3)), tf.float32)


def _spec(size=32):
    return tf_keras.layers.InputSpec(shape=[None, size, size, 3])


def _trainable_parameters(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _assert_parameters_match_keras(model_id, keras_builder):
    ours = build_efficientnet(model_id, "bn_silu", input_shape=(32, 32, 3), num_classes=1000)
    reference = keras_builder(weights=None, input_shape=(32, 32, 3), classes=1000)
    assert _trainable_parameters(ours) == _trainable_parameters(reference)


def test_b0_bn_silu_has_the_parameters_of_keras_efficientnet_b0():
    _assert_parameters_match_keras("b0", tf_keras.applications.EfficientNetB0)


@pytest.mark.slow
def test_b5_bn_silu_has_the_parameters_of_keras_efficientnet_b5():
    _assert_parameters_match_keras("b5", tf_keras.applications.EfficientNetB5)


def test_every_bn_activation_pair_is_the_norm_act():
    model = NormActEfficientNet("b0", input_specs=_spec(), norm_act="evonorm_b0", **NARROW)
    norms = checks.norm_act_layers(model)
    blocks = sum(round_repeats(spec.repeats, NARROW["depth_scale"]) for spec in EFFICIENTNET_B0_BLOCKS)
    expanding = blocks - round_repeats(EFFICIENTNET_B0_BLOCKS[0].repeats, NARROW["depth_scale"])
    # stem + head, per block depthwise + projection, per expanding block the expansion
    assert len(norms) == 2 + 2 * blocks + expanding
    projections = [layer for layer in norms if not layer.nonlinearity]
    assert len(projections) == blocks
    for layer in projections:
        assert layer.name.endswith("_project_norm")
        assert model.get_layer(layer.name.replace("_norm", "_conv")).output is layer.input
        assert not hasattr(layer, "v") and not hasattr(layer, "moving_variance")
    assert all(layer.nonlinearity for layer in norms if not layer.name.endswith("_project_norm"))
    assert not any(isinstance(layer, tf_keras.layers.BatchNormalization) and not isinstance(layer, checks.NORM_ACT_CLASSES)
                   for layer in model.layers)
    # endpoints as Model Garden's EfficientNet: stage outputs "2"…"5" plus the head at "6"
    assert sorted(model.output_specs) == ["2", "3", "4", "5"]
    assert model.output_specs["5"].as_list()[1:3] == [1, 1]
    assert model.get_layer("head_norm_act").output is model.output["6"]


def test_stochastic_depth_grows_linearly_with_block_index():
    model = NormActEfficientNet("b0", input_specs=_spec(), stochastic_depth_drop_rate=0.2,
                                width_scale=0.25, depth_scale=0.5)
    total = sum(round_repeats(spec.repeats, 0.5) for spec in EFFICIENTNET_B0_BLOCKS)
    names = [layer.name for layer in model.layers if layer.name.endswith("_depthwise_conv")]
    assert len(names) == total
    checked = 0
    for index, name in enumerate(names):
        drop = [layer for layer in model.layers if layer.name == name.replace("_depthwise_conv", "_drop")]
        if drop:
            assert drop[0].get_config()["stochastic_depth_drop_rate"] == pytest.approx(0.2 * index / total)
            checked += 1
    assert checked == 3  # the second blocks of stages 4, 5 and 6 at depth 0.5


def test_divisor_groups_is_the_largest_divisor_not_above_the_request():
    for channels in range(1, 200):
        for groups in (1, 3, 8, 16, 32):
            result = divisor_groups(groups, channels)
            divisors = [g for g in range(1, groups + 1) if channels % g == 0]
            assert result == max(divisors), (groups, channels)
    with pytest.raises(ValueError, match="groups=0"):
        divisor_groups(0, 16)


def test_s_series_channel_counts_follow_the_group_rule():
    model = NormActEfficientNet("b0", input_specs=_spec(), norm_act="evonorm_s0")
    seen = {}
    for layer in checks.norm_act_layers(model):
        if layer.nonlinearity:
            assert layer.channels % layer.resolved_groups == 0
            assert layer.resolved_groups == divisor_groups(32, layer.channels)
            seen[layer.channels] = layer.resolved_groups
    # B0's activated channel counts; 144 and 240 are not multiples of 32
    assert seen == {32: 32, 96: 32, 144: 24, 240: 30, 480: 32, 672: 32, 1152: 32, 1280: 32}


@pytest.mark.parametrize("norm_act", NORM_ACTS)
def test_forward_backward_and_checkpoint(norm_act, tmp_path):
    def make():
        return NormActEfficientNet("b0", input_specs=_spec(), norm_act=norm_act, **NARROW)

    images = _images()
    outputs = checks.check_forward_backward(make(), images)
    assert sorted(outputs) == ["2", "3", "4", "5", "6"]
    checks.check_checkpoint_round_trip(make, tmp_path, images)


@pytest.mark.parametrize("norm_act", NORM_ACTS)
def test_jit_compiled_train_step(norm_act):
    model = build_efficientnet("b0", norm_act, input_shape=(32, 32, 3), num_classes=5,
                               kernel_regularizer=tf_keras.regularizers.l2(1e-5), **NARROW)
    checks.check_jit_train_step(model, _images(), tf.constant([0, 1, 2, 3]))


def test_weight_decay_only_on_convolution_kernels():
    l2 = 1e-3
    model = build_efficientnet("b0", "evonorm_s0", input_shape=(32, 32, 3), num_classes=5,
                               kernel_regularizer=tf_keras.regularizers.l2(l2), **NARROW)
    checks.check_weight_decay_only_on_kernels(model, _images(), l2)
    # the squeeze-and-excitation biases carry no decay either
    assert any("_se/" in w.name and "bias" in w.name for w in model.weights)


def test_channels_first_matches_channels_last():
    def make(data_format):
        shape = [None, 32, 32, 3] if data_format == "channels_last" else [None, 3, 32, 32]
        return NormActEfficientNet("b0", input_specs=tf_keras.layers.InputSpec(shape=shape),
                                   norm_act="evonorm_s0", data_format=data_format,
                                   stochastic_depth_drop_rate=0.0, **NARROW)

    checks.check_channels_first_matches(make, _images())


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="model_id=.*b9"):
        NormActEfficientNet("b9")
    with pytest.raises(ValueError, match="se_ratio=1.5"):
        NormActEfficientNet("b0", se_ratio=1.5)
    with pytest.raises(ValueError, match="unknown norm-act name"):
        NormActEfficientNet("b0", norm_act="batchnorm")


def test_from_config_rebuilds_the_same_input_shape():
    backbone = NormActEfficientNet(
        "b0", input_specs=tf_keras.layers.InputSpec(shape=[None, 32, 32, 1]), norm_act="bn_silu")
    rebuilt = NormActEfficientNet.from_config(backbone.get_config())
    assert rebuilt.input_shape == backbone.input_shape == (None, 32, 32, 1)

"""NormActResNet: layout of both forms, Model Garden parity, training, checkpoints, XLA, weight decay."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from official.vision.modeling.backbones import ResNet as ModelGardenResNet

from evonorm_tf.modeling import NormActFactory, NormActResNet, build_resnet
from evonorm_tf.modeling.backbones.resnet import RESNET_SPECS

import norm_act_model_checks as checks

NORM_ACTS = ("bn_relu", "evonorm_b0", "evonorm_s0")
SMALL = dict(width_multiplier=0.25)  # 16…128 filters
SMALL_ID = 10  # one block per stage: the quickest ImageNet-form model to compile


def _images(batch=4, size=32, channels=3, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=(batch, size, size, channels)), tf.float32)


def _spec(size=32, channels=3):
    return tf_keras.layers.InputSpec(shape=[None, size, size, channels])


# -- Model Garden parity ---------------------------------------------------------------


def _assert_same_parameters_as_model_garden(model_id):
    ours = NormActResNet(model_id, input_specs=_spec(64), norm_act="bn_relu", preactivation=False)
    theirs = ModelGardenResNet(model_id, input_specs=_spec(64))
    assert ours.count_params() == theirs.count_params()
    assert sorted(w.shape.as_list() for w in ours.trainable_weights) == sorted(
        w.shape.as_list() for w in theirs.trainable_weights
    )
    assert ours.output_specs == theirs.output_specs


@pytest.mark.parametrize("model_id", [10, 50])
def test_v15_bn_relu_has_model_garden_parameters(model_id):
    _assert_same_parameters_as_model_garden(model_id)


@pytest.mark.slow
@pytest.mark.parametrize("model_id", [18, 34, 101, 152, 200])
def test_v15_bn_relu_has_model_garden_parameters_deep(model_id):
    _assert_same_parameters_as_model_garden(model_id)


# -- layout of the two forms -----------------------------------------------------------


def test_preactivation_layout_basic_blocks():
    model = NormActResNet(18, input_specs=_spec(), norm_act="evonorm_b0", **SMALL)
    norms = checks.norm_act_layers(model)
    # per block: one at the input, one after the first conv; one after the last stage
    assert len(norms) == 2 * 8 + 1
    assert all(layer.nonlinearity for layer in norms)
    assert not any("stem" in layer.name for layer in norms), "v2 has no norm in the stem"
    assert model.get_layer("stem_pool").input is model.get_layer("stem_conv").output
    # the projection shortcut is fed by the block-input norm-act, an identity shortcut by the raw input
    for stage in (1, 2, 3, 4):
        preact = model.get_layer(f"stage{stage}_block1_preact")
        assert model.get_layer(f"stage{stage}_block1_shortcut_conv").input is preact.output
        conv1_input = f"stage{stage}_block1_conv1" + ("_pad" if stage > 1 else "")  # strided convs pad first
        assert model.get_layer(conv1_input).input is preact.output
    add = model.get_layer("stage2_block2_add")
    assert add.input[1] is model.get_layer("stage2_block1_add").output
    # the last level is taken after the final norm-act
    final = model.get_layer("final_norm_act")
    assert model.output["5"] is final.output
    assert final.input is model.get_layer("stage4_block2_add").output


def test_preactivation_layout_bottleneck_blocks():
    model = NormActResNet(50, input_specs=_spec(), norm_act="evonorm_s0", **SMALL)
    norms = checks.norm_act_layers(model)
    assert len(norms) == 3 * 16 + 1
    assert all(layer.nonlinearity for layer in norms)
    assert model.get_layer("stage1_block1_conv3").filters == 4 * 16


def test_v15_layout_nonlinearity_and_zero_init():
    model = NormActResNet(18, input_specs=_spec(), norm_act="evonorm_b0", preactivation=False, **SMALL)
    norms = checks.norm_act_layers(model)
    # stem + two per block + four projection shortcuts
    assert len(norms) == 1 + 2 * 8 + 4
    affine = [layer for layer in norms if not layer.nonlinearity]
    assert sorted(layer.name for layer in affine) == sorted(
        [f"stage{s}_block{b}_norm_last" for s in (1, 2, 3, 4) for b in (1, 2)]
        + [f"stage{s}_block1_shortcut_norm" for s in (1, 2, 3, 4)]
    )
    for layer in affine:
        expected_gamma = 0.0 if layer.name.endswith("norm_last") else 1.0
        np.testing.assert_array_equal(layer.gamma.numpy(), expected_gamma)
        assert not hasattr(layer, "v"), "nonlinearity=False is the affine map only"
    assert model.get_layer("stage1_block1_out").activation is tf_keras.activations.relu
    plain = NormActResNet(18, input_specs=_spec(), norm_act="bn_relu", preactivation=False,
                          zero_init_residual=False, **SMALL)
    np.testing.assert_array_equal(plain.get_layer("stage1_block1_norm_last").gamma.numpy(), 1.0)


def test_cifar_resnet_for_small_inputs():
    model = build_resnet(20, "evonorm_s0", input_shape=(32, 32, 1), num_classes=10)
    logits = model(_images(channels=1), training=True)
    assert logits.shape == (4, 10)
    backbone = build_resnet(20, "evonorm_s0", input_shape=(8, 8, 1))
    assert {key: spec.as_list() for key, spec in backbone.output_specs.items()} == {
        "0": [None, 8, 8, 16], "1": [None, 4, 4, 32], "2": [None, 2, 2, 64],
    }
    # 16-channel layers with groups=32 use 16 groups (the group rule)
    assert {layer.resolved_groups for layer in checks.norm_act_layers(backbone)} == {16, 32}
    assert len(checks.norm_act_layers(backbone)) == 2 * 9 + 1
    assert RESNET_SPECS[20].stages == ((16, 3), (32, 3), (64, 3))


# -- every norm-act: train, checkpoint, XLA -------------------------------------------


def _make(norm_act, data_format="channels_last", **kwargs):
    size_spec = _spec() if data_format == "channels_last" else tf_keras.layers.InputSpec(shape=[None, 3, 32, 32])
    return NormActResNet(SMALL_ID, input_specs=size_spec, norm_act=norm_act, data_format=data_format, **SMALL, **kwargs)


@pytest.mark.parametrize("norm_act", NORM_ACTS)
def test_forward_backward_and_checkpoint(norm_act, tmp_path):
    preactivation = norm_act != "bn_relu"
    images = _images()
    outputs = checks.check_forward_backward(_make(norm_act, preactivation=preactivation), images)
    assert outputs["5"].shape == (4, 1, 1, 128)
    checks.check_checkpoint_round_trip(lambda: _make(norm_act, preactivation=preactivation), tmp_path, images)


@pytest.mark.parametrize("norm_act", NORM_ACTS)
def test_jit_compiled_train_step(norm_act):
    model = build_resnet(SMALL_ID, norm_act, input_shape=(32, 32, 3), num_classes=5,
                         preactivation=norm_act != "bn_relu",
                         kernel_regularizer=tf_keras.regularizers.l2(1e-4), **SMALL)
    labels = tf.constant([0, 1, 2, 3])
    checks.check_jit_train_step(model, _images(), labels)


def test_mixed_bfloat16_as_on_tpu():
    """Under Model Garden's TPU policy the features are bfloat16 and weights and gradients float32."""
    tf_keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_resnet(SMALL_ID, "evonorm_b0", input_shape=(32, 32, 3), num_classes=5, **SMALL)
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")
    features = model.layers[1](_images(), training=True)
    assert {tensor.dtype for tensor in features.values()} == {tf.bfloat16}
    assert {weight.dtype for weight in model.weights} == {tf.float32}
    outputs = checks.check_forward_backward(model, _images())
    assert outputs.dtype == tf.float32  # the logits layer computes in float32


def test_weight_decay_only_on_convolution_kernels():
    l2 = 5e-4
    model = build_resnet(SMALL_ID, "evonorm_b0", input_shape=(32, 32, 3), num_classes=5,
                         kernel_regularizer=tf_keras.regularizers.l2(l2), **SMALL)
    checks.check_weight_decay_only_on_kernels(model, _images(), l2)


def test_channels_first_matches_channels_last():
    checks.check_channels_first_matches(lambda fmt: _make("evonorm_s0", data_format=fmt), _images())


# -- arguments ------------------------------------------------------------------------


def test_norm_act_options_reach_only_layers_that_accept_them():
    model = _make("evonorm_s0", norm_act_options={"groups": 8, "momentum": 0.5, "epsilon": 1e-3})
    for layer in checks.norm_act_layers(model):
        assert layer.resolved_groups == 8 and layer.epsilon == 1e-3
    model = _make("evonorm_b0", norm_act_options={"groups": 8, "momentum": 0.5})
    assert {layer.momentum for layer in checks.norm_act_layers(model) if layer.nonlinearity} == {0.5}
    factory = NormActFactory("bn_relu", groups=8, momentum=0.5)
    assert factory.ignored_options == ["groups"]


def test_get_config_round_trip():
    model = _make("evonorm_s0", norm_act_options={"groups": 8})
    clone = NormActResNet.from_config(model.get_config())
    assert clone.count_params() == model.count_params()
    assert clone.get_config()["norm_act_options"] == {"groups": 8}


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="model_id=.*19"):
        NormActResNet(19)
    with pytest.raises(ValueError, match="unknown norm-act name 'evonorm_x'"):
        NormActResNet(18, norm_act="evonorm_x")
    with pytest.raises(ValueError, match="epsilon"):
        NormActResNet(18, norm_act="evonorm_b0", norm_act_options={"epsilon": -1.0})
    with pytest.raises(ValueError, match="input_specs or input_shape"):
        build_resnet(18, "bn_relu", input_shape=(32, 32, 3), input_specs=_spec())
    with pytest.raises(ValueError, match="nonlinearity=False"):
        NormActFactory("evonorm_b0", nonlinearity=False)
    with pytest.raises(TypeError, match="preactivation"):
        NormActResNet(18, preactivation="yes")


def test_searched_graph_layers_plug_into_the_backbone():
    import numpy as np

    from evonorm_tf.search.space import EVONORM_GRAPHS

    model = build_resnet(20, "graph:" + EVONORM_GRAPHS["evonorm_s0"], input_shape=(16, 16, 1),
                         num_classes=10, norm_act_options={"groups": 8, "momentum": 0.9})
    graph_layers = [layer for layer in model.submodules if type(layer).__name__ == "TfKerasGraphNormAct"]
    assert graph_layers and not any("EvoNorm" in type(layer).__name__ for layer in model.submodules)
    assert {layer.resolved_groups for layer in graph_layers if layer.resolved_groups} <= {8}
    outputs = model(np.random.default_rng(0).normal(size=(2, 16, 16, 1)).astype("float32"), training=True)
    assert outputs.shape == (2, 10) and np.all(np.isfinite(outputs.numpy()))


def test_from_config_rebuilds_the_same_input_shape():
    backbone = build_resnet(20, "evonorm_s0", input_shape=(16, 16, 1), norm_act_options={"groups": 8})
    rebuilt = NormActResNet.from_config(backbone.get_config())
    assert rebuilt.input_shape == backbone.input_shape == (None, 16, 16, 1)
    assert rebuilt.count_params() == backbone.count_params()

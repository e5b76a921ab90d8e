"""The norm-act FPN: Model Garden's FPN layout and shapes, forward/backward with three
norm-acts on our ResNet's features, checkpoints, and the registered decoder builder."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from official.vision.modeling.decoders import factory as decoder_factory
from official.vision.modeling.decoders.fpn import FPN

from evonorm_tf.configs import maskrcnn as maskrcnn_configs
from evonorm_tf.modeling import NormActResNet
from evonorm_tf.modeling.decoders import NormActFPN
from evonorm_tf.tf_keras import TF_KERAS_TABLE

NORM_ACTS = ("bn_relu", "evonorm_b0", "evonorm_s0")
IMAGE = 128  # divisible by 2**7
FILTERS = 16
OPTIONS = {"groups": 8}


@pytest.fixture(scope="module")
def backbone():
    return NormActResNet(
        10,
        input_specs=tf_keras.layers.InputSpec(shape=[None, IMAGE, IMAGE, 3]),
        norm_act="evonorm_s0",
        norm_act_options=OPTIONS,
        width_multiplier=0.125,
    )


@pytest.fixture(scope="module")
def features(backbone):
    images = tf.random.stateless_normal([2, IMAGE, IMAGE, 3], seed=(1, 2))
    return backbone(images, training=False)


def _fpn(backbone, norm_act, norm_act_options=OPTIONS, **kwargs):
    return NormActFPN(
        backbone.output_specs, min_level=3, max_level=7, num_filters=FILTERS,
        norm_act=norm_act, norm_act_options=norm_act_options, **kwargs,
    )


@pytest.mark.parametrize("norm_act", NORM_ACTS)
def test_levels_and_shapes_match_model_garden(backbone, norm_act):
    ours = _fpn(backbone, norm_act)
    theirs = FPN(backbone.output_specs, min_level=3, max_level=7, num_filters=FILTERS)
    assert {k: v.as_list() for k, v in ours.output_specs.items()} == {
        k: v.as_list() for k, v in theirs.output_specs.items()
    }
    assert sorted(ours.output_specs) == ["3", "4", "5", "6", "7"]
    assert ours.output_specs["7"].as_list() == [None, IMAGE // 128, IMAGE // 128, FILTERS]
    for level in range(3, 8):
        norm = ours.get_layer(f"norm_{level}")
        assert isinstance(norm, TF_KERAS_TABLE[norm_act]) and norm.nonlinearity is False


@pytest.mark.parametrize("norm_act", NORM_ACTS)
def test_forward_backward_finite(backbone, features, norm_act):
    fpn = _fpn(backbone, norm_act)
    with tf.GradientTape() as tape:
        outputs = fpn(features, training=True)
        loss = tf.add_n([tf.reduce_mean(tf.square(v)) for v in outputs.values()])
    gradients = tape.gradient(loss, fpn.trainable_variables)
    assert all(np.isfinite(v.numpy()).all() for v in outputs.values())
    assert all(g is not None and np.isfinite(g.numpy()).all() for g in gradients)
    # The norm-act weights (γ and β at least, per level) are trainable weights of the FPN,
    # so the gradients above reached them.
    trainable = {w.ref() for w in fpn.trainable_weights}
    norm_layers = [fpn.get_layer(f"norm_{level}") for level in range(3, 8)]
    norm_weights = [w for layer in norm_layers for w in layer.trainable_weights]
    assert len(norm_weights) >= 10 and all(w.ref() in trainable for w in norm_weights)


def test_bn_relu_is_model_gardens_fpn(backbone, features):
    """With the same weights, `bn_relu` computes exactly what Model Garden's FPN does."""
    ours = _fpn(backbone, "bn_relu", norm_act_options={"momentum": 0.99, "epsilon": 1e-3})
    theirs = FPN(backbone.output_specs, min_level=3, max_level=7, num_filters=FILTERS)
    for layer in theirs.layers:
        if layer.weights:
            mirror = ours.get_layer(layer.name)
            # Random moving statistics make the inference comparison meaningful.
            rng = np.random.default_rng(0)
            mirror.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in layer.get_weights()])
            layer.set_weights(mirror.get_weights())
    expected, actual = theirs(features, training=False), ours(features, training=False)
    for level in expected:
        np.testing.assert_allclose(actual[level].numpy(), expected[level].numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm_act", ("evonorm_b0", "evonorm_s0"))
def test_checkpoint_restores_norm_act_weights(backbone, features, norm_act, tmp_path):
    fpn = _fpn(backbone, norm_act)
    norm_weights = [w for level in range(3, 8) for w in fpn.get_layer(f"norm_{level}").weights]
    for weight in norm_weights:
        weight.assign(tf.random.stateless_uniform(weight.shape, seed=(3, 4), minval=0.5, maxval=1.5))
    path = tf.train.Checkpoint(model=fpn).write(str(tmp_path / "fpn"))
    restored = _fpn(backbone, norm_act)
    restored(features, training=False)
    tf.train.Checkpoint(model=restored).read(path).assert_existing_objects_matched()
    assert len(norm_weights) == 10  # nonlinearity=False: the affine map, γ and β per level
    for original, copy in zip(fpn.weights, restored.weights):
        np.testing.assert_array_equal(original.numpy(), copy.numpy())
    expected, actual = fpn(features, training=False), restored(features, training=False)
    for level in expected:
        np.testing.assert_allclose(actual[level].numpy(), expected[level].numpy(), rtol=1e-6)


def test_registered_builder_reads_the_config(backbone):
    model_config = maskrcnn_configs.MaskRCNN(min_level=3, max_level=6)
    model_config.override(
        {"decoder": {"evonorm_fpn": {"num_filters": FILTERS,
                                     "norm_activation": {"type": "evonorm_s0", "groups": 4}}}}
    )
    fpn = decoder_factory.build_decoder(backbone.output_specs, model_config)
    assert isinstance(fpn, NormActFPN)
    assert sorted(fpn.output_specs) == ["3", "4", "5", "6"]
    assert fpn.get_layer("norm_3").groups == 4
    rebuilt = NormActFPN.from_config(fpn.get_config())
    assert rebuilt.get_layer("norm_3").groups == 4


def test_bad_arguments_quote_the_value(backbone):
    with pytest.raises(ValueError, match="fusion_type='mean'"):
        _fpn(backbone, "bn_relu", fusion_type="mean")
    with pytest.raises(ValueError, match="min_level=1"):
        NormActFPN(backbone.output_specs, min_level=1, max_level=5)
    with pytest.raises(ValueError, match="evonorm_x9"):
        _fpn(backbone, "evonorm_x9")


def test_experiment_config_checks_every_norm_act_name():
    from official.core import exp_factory
    from official.modeling import hyperparams

    def override(text):
        return hyperparams.override_params_dict(
            exp_factory.get_exp_config("evonorm_maskrcnn_resnetfpn_coco"), text, is_strict=True
        )

    config = override("task.model.decoder.evonorm_fpn.norm_activation.type=evonorm_s0")
    config.validate()
    assert config.task.model.decoder.type == "evonorm_fpn"
    assert config.task.model.backbone.type == "evonorm_resnet"
    assert config.task.init_checkpoint is None
    with pytest.raises(ValueError, match=r"decoder.evonorm_fpn.norm_activation.type='evonorm_x'"):
        override("task.model.decoder.evonorm_fpn.norm_activation.type=evonorm_x").validate()
    with pytest.raises(ValueError, match=r"heads_norm_activation.type='bn_tanh'.*valid names"):
        override("task.model.heads_norm_activation.type=bn_tanh").validate()
    with pytest.raises(ValueError, match="backbone.evonorm_resnet.norm_activation.type='x'"):
        override("task.model.backbone.evonorm_resnet.norm_activation.type=x").validate()


def test_separable_bn_relu_is_model_gardens_separable_fpn(backbone, features):
    """`use_separable_conv`: Model Garden's separable FPN, variable for variable and output for
    output (after copying the weights across), with the same regularization losses."""
    regularizer = tf_keras.regularizers.l2(1e-4)
    ours = _fpn(backbone, "bn_relu", norm_act_options={"momentum": 0.99, "epsilon": 1e-3},
                use_separable_conv=True, kernel_regularizer=regularizer)
    theirs = FPN(backbone.output_specs, min_level=3, max_level=7, num_filters=FILTERS,
                 use_separable_conv=True, kernel_regularizer=regularizer)
    assert [w.shape.as_list() for w in ours.weights] == [w.shape.as_list() for w in theirs.weights]
    separable = [layer for layer in ours.layers if isinstance(layer, tf_keras.layers.SeparableConv2D)]
    assert len(separable) == 3 + 3 + 2  # lateral 3…5, post-hoc 3…5, coarser 6 and 7
    plain = _fpn(backbone, "bn_relu")
    assert ours.count_params() < plain.count_params()
    rng = np.random.default_rng(1)
    for layer in theirs.layers:
        if layer.weights:
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in layer.get_weights()])
            ours.get_layer(layer.name).set_weights(layer.get_weights())
    expected, actual = theirs(features, training=False), ours(features, training=False)
    for level in expected:
        np.testing.assert_allclose(actual[level].numpy(), expected[level].numpy(), rtol=1e-5, atol=1e-4)
    assert len(ours.losses) == len(theirs.losses)
    assert ours.get_config()["use_separable_conv"] is True
    assert NormActFPN.from_config(ours.get_config()).count_params() == ours.count_params()


def test_model_level_norm_activation_reaches_every_fpn_norm(backbone):
    """Model Garden's `task.model.norm_activation` reaches the 5 norm layers as it reaches Model
    Garden's FPN; a field set in the decoder's own block wins over it."""
    model_config = maskrcnn_configs.MaskRCNN(min_level=3, max_level=7)
    model_config.override({
        "norm_activation": {"use_sync_bn": True, "norm_momentum": 0.7, "norm_epsilon": 2e-3},
        "decoder": {"evonorm_fpn": {"num_filters": FILTERS, "use_separable_conv": True,
                                    "norm_activation": {"type": "bn_relu"}}},
    })
    fpn = decoder_factory.build_decoder(backbone.output_specs, model_config)
    theirs_config = maskrcnn_configs.MaskRCNN(min_level=3, max_level=7)
    theirs_config.override({"norm_activation": model_config.norm_activation.as_dict(),
                            "decoder": {"type": "fpn", "fpn": {"num_filters": FILTERS, "use_separable_conv": True}}})
    theirs = decoder_factory.build_decoder(backbone.output_specs, theirs_config)
    norms = [fpn.get_layer(f"norm_{level}") for level in range(3, 8)]
    options = [(norm.synchronized, norm.momentum, norm.epsilon) for norm in norms]
    assert options == [(True, 0.7, 2e-3)] * 5
    their_norms = [theirs.get_layer(f"norm_{level}") for level in range(3, 8)]
    assert options == [(bool(n.synchronized), n.momentum, n.epsilon) for n in their_norms]
    assert any(isinstance(layer, tf_keras.layers.SeparableConv2D) for layer in fpn.layers)
    # The decoder's own block: a set field wins, an unset one still comes from the model level.
    model_config.override({"decoder": {"evonorm_fpn": {"norm_activation": {"synchronized": False, "momentum": 0.8}}}})
    fpn = decoder_factory.build_decoder(backbone.output_specs, model_config)
    assert {(fpn.get_layer(f"norm_{level}").synchronized, fpn.get_layer(f"norm_{level}").momentum,
             fpn.get_layer(f"norm_{level}").epsilon) for level in range(3, 8)} == {(False, 0.8, 2e-3)}

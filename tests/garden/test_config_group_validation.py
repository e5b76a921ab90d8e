"""Norm-act config fields are checked where the config is read; group counts must divide in Model Garden.

`groups: 0` (or a negative epsilon, a momentum of 1) fails in the config's
`validate()`, naming the key. A group count that does not divide a layer's
channels fails when the Model Garden backbone is built, naming the layer,
the channels and the group count, unless the config sets `adjust_groups:
true` (EfficientNet's default), which uses the largest divisor below it.
"""

import pytest
import tf_keras
from official.core import exp_factory
from official.modeling import hyperparams
from official.vision.modeling.backbones import factory as backbone_factory

import evonorm_tf.configs as configs
from evonorm_tf.modeling import NormActFactory
from evonorm_tf.tf_keras import EvoNormS0

KEY = "task.model.backbone.evonorm_resnet.norm_activation"


def _experiment(**norm_activation):
    config = exp_factory.get_exp_config("evonorm_resnet_imagenet")
    overrides = {"task": {"model": {"backbone": {"evonorm_resnet": {"norm_activation": norm_activation}}}}}
    config.override(overrides, is_strict=True)
    return config


@pytest.mark.parametrize("field, value, message", [
    ("groups", 0, "groups must be a positive integer, received 0"),
    ("groups", -4, "received -4"),
    ("epsilon", -1e-5, "epsilon must be > 0, received epsilon=-1e-05"),
    ("momentum", 1.0, "momentum must be in [0, 1), received momentum=1.0"),
    ("type", "evonorm_s9", "unknown norm-act name 'evonorm_s9'"),
])
def test_bad_norm_act_fields_fail_validation_naming_the_key(field, value, message):
    config = _experiment(**{field: value})
    with pytest.raises(ValueError) as error:
        config.validate()
    assert f"{KEY}.{field}" in str(error.value)
    assert message in str(error.value)


def test_maskrcnn_heads_norm_act_fields_are_checked():
    config = exp_factory.get_exp_config("evonorm_maskrcnn_resnetfpn_coco")
    config.override({"task": {"model": {"heads_norm_activation": {"groups": 0}}}}, is_strict=True)
    with pytest.raises(ValueError, match=r"task\.model\.heads_norm_activation\.groups .*received 0"):
        config.validate()


def test_factory_without_adjustment_names_the_layer():
    strict = NormActFactory("evonorm_s0", groups=3, adjust_groups=False)
    with pytest.raises(ValueError) as error:
        strict(64, name="stage1_block0_norm")
    message = str(error.value)
    assert "'stage1_block0_norm'" in message and "64 channels" in message and "groups=3" in message
    assert strict(48).groups == 3  # 3 divides 48: accepted as is
    adjusted = NormActFactory("evonorm_s0", groups=3)(64)
    assert adjusted.groups == 2  # the documented group rule
    with pytest.raises(TypeError, match="adjust_groups must be a bool, received adjust_groups='yes'"):
        NormActFactory("evonorm_s0", adjust_groups="yes")


def _build(norm_activation, backbone_type="evonorm_resnet", **backbone_fields):
    backbone_config = configs.Backbone(type=backbone_type)
    sub = backbone_config.get()
    sub.override({"norm_activation": norm_activation, **backbone_fields}, is_strict=True)
    return backbone_factory.build_backbone(
        input_specs=tf_keras.layers.InputSpec(shape=[None, 32, 32, 3]),
        backbone_config=backbone_config, norm_activation_config=None)


def test_model_garden_backbone_rejects_groups_that_do_not_divide():
    # ResNet-10 at width 0.25: 16-, 32-, 64- and 128-channel layers; 3 divides none.
    with pytest.raises(ValueError, match=r"has 16 channels, which groups=3 does not divide"):
        _build({"type": "evonorm_s0", "groups": 3}, model_id=10, width_multiplier=0.25)
    # 8 divides them all.
    backbone = _build({"type": "evonorm_s0", "groups": 8}, model_id=10, width_multiplier=0.25)
    layers = [layer for layer in backbone.submodules if isinstance(layer, EvoNormS0)]
    assert layers and all(layer.groups == 8 for layer in layers)


def test_adjust_groups_is_recorded_and_applies_the_group_rule():
    backbone = _build({"type": "evonorm_s0", "groups": 3, "adjust_groups": True}, model_id=10,
                      width_multiplier=0.25)
    layers = [layer for layer in backbone.submodules if isinstance(layer, EvoNormS0)]
    assert {layer.groups for layer in layers} == {2}  # the largest divisor of 16..128 not above 3
    config = _experiment(type="evonorm_s0", groups=3, adjust_groups=True)
    assert hyperparams.Config.as_dict(config)["task"]["model"]["backbone"]["evonorm_resnet"][
        "norm_activation"]["adjust_groups"] is True
    # EfficientNet's layers (24, 40, 144 channels, ...) need the rule: it is on by default there.
    assert configs.NormActEfficientNet().norm_activation.adjust_groups is True
    assert configs.NormActResNet().norm_activation.adjust_groups is False

"""Model Garden's model-level `norm_activation` in the norm-act backbones.

`use_sync_bn`, `norm_momentum` and `norm_epsilon` of `task.model.norm_activation`
reach every norm-act layer of a backbone built by Model Garden's backbone
factory, as they reach every BN of Model Garden's own backbones; a field set in
the backbone's own `norm_activation` block wins; without either, the layer
default holds. The FPN and heads are checked in test_fpn.py and
test_maskrcnn_heads.py, SpineNet in test_spinenet.py.
"""

import dataclasses

import pytest
import tf_keras
from official.vision.configs import backbones as model_garden_backbones
from official.vision.configs import common
from official.vision.modeling.backbones import factory as backbone_factory

import evonorm_tf.configs as configs
from evonorm_tf.configs.backbones import check_backbone
from evonorm_tf.modeling import NFResNet, NormActEfficientNet, NormActResNet
from evonorm_tf.modeling.backbones import registration
from evonorm_tf.search.space import EVONORM_GRAPHS
from evonorm_tf.tf_keras import EvoNormB0, EvoNormS0

import norm_act_model_checks as checks

# Unlike every default (layer: 0.9, 1e-5, False; Model Garden: 0.99, 1e-3), so each value's origin shows.
MODEL_NORM = common.NormActivation(use_sync_bn=True, norm_momentum=0.7, norm_epsilon=2e-3)


def _build(backbone_type, sub_config, model_norm=MODEL_NORM, size=32):
    return backbone_factory.build_backbone(
        input_specs=tf_keras.layers.InputSpec(shape=[None, size, size, 3]),
        backbone_config=configs.Backbone(type=backbone_type, **{backbone_type: sub_config}),
        norm_activation_config=model_norm,
    )


def _options(layer):
    return getattr(layer, "synchronized", None), getattr(layer, "momentum", None), layer.epsilon


def test_use_sync_bn_reaches_all_49_layers_of_resnet50_evonorm_b0():
    backbone = _build("evonorm_resnet", configs.NormActResNet(model_id=50))
    layers = checks.norm_act_layers(backbone)
    # Pre-activation ResNet-50: 16 block inputs, 2 inner norm-acts per block, the final one.
    assert len(layers) == 49 and all(isinstance(layer, EvoNormB0) for layer in layers)
    assert [_options(layer) for layer in layers] == [(True, 0.7, 2e-3)] * 49


def test_v15_bn_relu_gets_the_options_model_gardens_resnet_gets():
    """The BN-ReLU ResNet and Model Garden's ResNet from the same model-level block: the
    same number of BN layers, every one with the same synchronized/momentum/epsilon."""
    ours = _build("evonorm_resnet", configs.NormActResNet(
        model_id=10, preactivation=False, width_multiplier=0.25,
        norm_activation=configs.NormActivation(type="bn_relu")))
    theirs = backbone_factory.build_backbone(
        input_specs=tf_keras.layers.InputSpec(shape=[None, 32, 32, 3]),
        backbone_config=model_garden_backbones.Backbone(
            type="resnet", resnet=model_garden_backbones.ResNet(model_id=10, depth_multiplier=0.25)),
        norm_activation_config=MODEL_NORM,
    )
    their_bns = [m for m in theirs.submodules if isinstance(m, tf_keras.layers.BatchNormalization)]
    our_layers = checks.norm_act_layers(ours)
    assert len(our_layers) == len(their_bns) == 13
    assert {_options(layer) for layer in our_layers} == {
        (bool(bn.synchronized), bn.momentum, bn.epsilon) for bn in their_bns} == {(True, 0.7, 2e-3)}


def test_options_reach_every_efficientnet_layer_b_and_s_series():
    narrow = dict(model_id="b0", width_scale=0.25, depth_scale=0.1)
    b0 = checks.norm_act_layers(_build("evonorm_efficientnet", configs.NormActEfficientNet(
        norm_activation=configs.NormActivation(type="evonorm_b0"), **narrow)))
    # stem + head, 7 blocks x (depthwise + projection), 6 expanding blocks x expansion
    assert len(b0) == 22
    # The projection norms have no batch statistics (affine only) but keep the options.
    assert [_options(layer) for layer in b0] == [(True, 0.7, 2e-3)] * 22
    # S-series: no batch statistics, so no momentum or synchronization; epsilon and groups reach.
    s0_config = configs.NormActEfficientNet(norm_activation=configs.NormActivation(type="evonorm_s0", groups=4), **narrow)
    s0 = registration.backbone_arguments(s0_config, NormActEfficientNet, MODEL_NORM)["norm_act"](24)
    assert isinstance(s0, EvoNormS0) and (s0.epsilon, s0.groups) == (2e-3, 4)
    assert not hasattr(s0, "synchronized") and not hasattr(s0, "momentum")


@pytest.mark.parametrize(
    "own, model_norm, expected",
    [
        # the backbone's own field wins; an explicit False is a set value
        (dict(momentum=0.8, epsilon=1e-4, synchronized=False), MODEL_NORM, (False, 0.8, 1e-4)),
        # unset: the model-level value
        ({}, MODEL_NORM, (True, 0.7, 2e-3)),
        # mixed, field by field
        (dict(momentum=0.8), MODEL_NORM, (True, 0.8, 2e-3)),
        # no model-level block (direct use of the builder): the layer default
        ({}, None, (False, 0.9, 1e-5)),
    ],
)
def test_one_precedence_backbone_then_model_level_then_layer_default(own, model_norm, expected):
    sub_config = configs.NormActResNet(model_id=20, norm_activation=configs.NormActivation(type="evonorm_b0", **own))
    # The factory the builder hands the backbone, and one layer from it.
    make_norm_act = registration.backbone_arguments(sub_config, NormActResNet, model_norm)["norm_act"]
    assert _options(make_norm_act(16)) == expected
    if own == dict(momentum=0.8):  # one whole backbone: every layer gets the mixed options
        layers = checks.norm_act_layers(_build("evonorm_resnet", sub_config, model_norm))
        assert len(layers) == 19  # CIFAR ResNet-20, pre-activation: 9 blocks x 2 + the final one
        assert {_options(layer) for layer in layers} == {expected}


def test_model_gardens_defaults_reach_the_layers_when_nothing_is_set():
    """A classification model config whose `norm_activation` is Model Garden's default."""
    model_norm = configs.ImageClassificationModel().norm_activation  # Model Garden: 0.99, 1e-3, no sync
    layers = checks.norm_act_layers(_build("evonorm_resnet", configs.NormActResNet(model_id=20), model_norm))
    assert {_options(layer) for layer in layers} == {(False, 0.99, 1e-3)}


def test_experiments_put_the_authors_values_in_the_model_level_block():
    from official.core import exp_factory

    for name in ("evonorm_resnet_imagenet", "evonorm_efficientnet_imagenet"):
        model = exp_factory.get_exp_config(name).task.model
        norm = model.norm_activation
        assert (norm.norm_momentum, norm.norm_epsilon, norm.use_sync_bn) == (0.9, 1e-5, False), name
        own = model.backbone.get().norm_activation
        assert (own.momentum, own.epsilon, own.synchronized) == (None, None, None), name


def test_searched_graph_names_are_valid_backbone_norm_acts():
    graph = "graph:" + EVONORM_GRAPHS["evonorm_b0"]
    backbone_config = configs.Backbone(type="evonorm_resnet", evonorm_resnet=configs.NormActResNet(
        model_id=20, norm_activation=configs.NormActivation(type=graph)))
    check_backbone(backbone_config, MODEL_NORM)  # accepted, as the factory accepts it
    backbone = backbone_factory.build_backbone(
        input_specs=tf_keras.layers.InputSpec(shape=[None, 16, 16, 3]),
        backbone_config=backbone_config, norm_activation_config=MODEL_NORM)
    graph_layers = [m for m in backbone.submodules if type(m).__name__ == "TfKerasGraphNormAct"]
    assert len(graph_layers) == 19
    assert {_options(layer) for layer in graph_layers} == {(True, 0.7, 2e-3)}
    backbone_config.evonorm_resnet.norm_activation.type = "graph:not_a_graph("
    with pytest.raises(ValueError, match=r"evonorm_resnet\.norm_activation\.type='graph:not_a_graph\('"):
        check_backbone(backbone_config)
    backbone_config.evonorm_resnet.norm_activation.type = "evonorm_b0"
    backbone_config.evonorm_resnet.norm_activation.momentum = 1.5
    with pytest.raises(ValueError, match=r"norm_activation\.momentum must be in \[0, 1\), received momentum=1\.5"):
        check_backbone(backbone_config)


def test_nf_resnet_builds_from_the_same_builder_and_has_no_norm_layer():
    backbone = _build("nf_resnet", configs.backbones.NFResNet(model_id=20))
    assert isinstance(backbone, NFResNet)
    assert checks.norm_act_layers(backbone) == []
    assert not any(isinstance(m, tf_keras.layers.BatchNormalization) for m in backbone.submodules)


def test_builder_passes_every_field_and_rejects_one_the_backbone_lacks():
    arguments = registration.backbone_arguments(
        configs.NormActResNet(model_id=18, width_multiplier=0.5, preactivation=False), NormActResNet)
    assert set(arguments) == {"model_id", "preactivation", "width_multiplier", "zero_init_residual",
                              "activation", "norm_act"}
    assert (arguments["model_id"], arguments["width_multiplier"], arguments["preactivation"]) == (18, 0.5, False)

    @dataclasses.dataclass
    class WithExtraField(configs.NormActResNet):
        dilation: int = 2

    with pytest.raises(ValueError, match=r"NormActResNet has no argument for the config fields \['dilation'\]"):
        registration.backbone_arguments(WithExtraField(), NormActResNet)


def _yaml_experiment(name):
    if name.startswith("maskrcnn_spinenet"):
        return "evonorm_maskrcnn_spinenet_coco"
    if name.startswith("maskrcnn_"):
        return "evonorm_maskrcnn_resnetfpn_coco"
    return "evonorm_resnet_imagenet" if name.startswith("resnet") else "evonorm_efficientnet_imagenet"


# (norm_momentum, norm_epsilon, use_sync_bn) each paper YAML puts in `task.model.norm_activation`.
AUTHORS = (0.9, 1e-5, False)  # tensorflow/tpu resnet_model.py evonorm() and its BN
YAML_NORMS = {
    "maskrcnn_resnet50fpn_bn_relu": (0.99, 1e-3, True),  # Model Garden's from-scratch recipe
    "maskrcnn_resnet50fpn_evonorm_b0": (0.9, 1e-5, True),
    "maskrcnn_resnet50fpn_evonorm_s0": AUTHORS,
    "maskrcnn_spinenet": (0.9, 1e-5, True),  # SpineNet-49/96/143: the recipe's sync BN
}


def _expected_norm(name):
    if "bn_silu" in name:
        # EfficientNet's BN (efficientnet_builder.py); the `_sync_` baseline averages over all cores.
        return (0.99, 1e-3, "_sync_" in name)
    return next((values for prefix, values in YAML_NORMS.items() if name.startswith(prefix)), AUTHORS)


def test_paper_yamls_put_the_norm_options_in_the_model_level_block():
    import glob
    import os

    from official.core import exp_factory
    from official.modeling import hyperparams

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "official_configs")
    paths = sorted(p for p in glob.glob(os.path.join(root, "*_[tg]pu.yaml")) if "biggan" not in p)
    assert len(paths) == 25  # ResNet-50, EfficientNet-B0/B5 and Mask R-CNN paper runs
    for path in paths:
        name = os.path.basename(path)
        config = hyperparams.override_params_dict(
            exp_factory.get_exp_config(_yaml_experiment(name)), path, is_strict=True)
        config.validate()
        model = config.task.model
        norm = model.norm_activation
        assert (norm.norm_momentum, norm.norm_epsilon, norm.use_sync_bn) == _expected_norm(name), name
        blocks = [model.backbone.get().norm_activation]
        if name.startswith("maskrcnn_"):
            blocks.append(model.heads_norm_activation)
            if model.decoder.type == "evonorm_fpn":
                blocks.append(model.decoder.evonorm_fpn.norm_activation)
        for block in blocks:
            assert (block.momentum, block.epsilon, block.synchronized) == (None, None, None), name

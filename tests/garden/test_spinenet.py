"""NormActSpineNet: spec tables, Model Garden parity, norm-act placement, configs, Mask R-CNN."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from official.core import exp_factory
from official.modeling import hyperparams
from official.vision.configs import backbones as model_garden_backbones
from official.vision.configs import common
from official.vision.modeling.backbones import factory as backbone_factory
from official.vision.modeling.backbones import spinenet as model_garden_spinenet

import evonorm_tf.configs  # registers the builders and experiments
from evonorm_tf.configs import maskrcnn as maskrcnn_configs
from evonorm_tf.modeling import NormActSpineNet
from evonorm_tf.modeling.backbones.spinenet import LEVEL_FILTERS, SPINENET_BLOCK_SPECS, SPINENET_SCALING
from evonorm_tf.tf_keras import TF_KERAS_TABLE

import norm_act_model_checks as checks

NORM_ACTS = ("bn_relu", "evonorm_b0", "evonorm_s0")
SIZE = 128  # the smallest input at which every level 2…7 has its own width
SMALL_ID = "49S"  # SpineNet-49 with 0.65× filters and 128 endpoint channels
OPTIONS = {"groups": 8}
# Model-level norm options unlike every default, for the BN-ReLU backbone and Model Garden's.
MODEL_NORM = common.NormActivation(use_sync_bn=True, norm_momentum=0.7, norm_epsilon=2e-3)


def _spec(size=SIZE):
    return tf_keras.layers.InputSpec(shape=[None, size, size, 3])


def _images(batch=2, size=SIZE, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=(batch, size, size, 3)), tf.float32)


def _experiment(override=None):
    config = exp_factory.get_exp_config("evonorm_maskrcnn_spinenet_coco")
    if override:
        config = hyperparams.override_params_dict(config, override, is_strict=True)
    config.validate()
    return config


@pytest.fixture(scope="module")
def mask_rcnn():
    """`evonorm_maskrcnn_spinenet_coco` shrunk to 49S at 128² with small heads, built by our task;
    the norm-act comes from a command-line style override (EvoNorm-S0, 8 groups)."""
    config = _experiment("task.model.backbone.evonorm_spinenet.norm_activation.type=evonorm_s0")
    config.override({"runtime": {"mixed_precision_dtype": "float32"}, "task": {"model": {
        "num_classes": 3, "input_size": [SIZE, SIZE, 3],
        "backbone": {"evonorm_spinenet": {"model_id": SMALL_ID, "norm_activation": {"groups": 8}}},
        "heads_norm_activation": {"type": "evonorm_s0", "groups": 8},
        "rpn_head": {"num_filters": 16},
        "detection_head": {"num_convs": 1, "num_filters": 16, "fc_dims": 32},
        "mask_head": {"num_convs": 1, "num_filters": 16},
        "roi_generator": {"test_pre_nms_top_k": 64, "test_num_proposals": 16},
        "detection_generator": {"pre_nms_top_k": 64, "max_num_detections": 8},
    }}})
    config.validate()
    return maskrcnn_configs.NormActMaskRCNNTask(config.task).build_model()


@pytest.fixture(scope="module")
def backbones(mask_rcnn):
    """One 49S backbone per norm-act at 128² (each build takes seconds: built once);
    the EvoNorm-S0 one is the Mask R-CNN's and the BN-ReLU one is built from a config
    with `MODEL_NORM`, both by Model Garden's backbone factory."""
    built = {
        "evonorm_b0": NormActSpineNet(SMALL_ID, input_specs=_spec(), norm_act="evonorm_b0", norm_act_options=OPTIONS),
        "bn_relu": backbone_factory.build_backbone(
            input_specs=_spec(),
            backbone_config=evonorm_tf.configs.Backbone(
                type="evonorm_spinenet",
                evonorm_spinenet=evonorm_tf.configs.NormActSpineNet(
                    model_id=SMALL_ID, norm_activation=evonorm_tf.configs.NormActivation(type="bn_relu"))),
            norm_activation_config=MODEL_NORM,
        ),
    }
    built["evonorm_s0"] = mask_rcnn.backbone
    return built


# -- spec tables -------------------------------------------------------------------------


def test_scaling_per_model_id():
    # (endpoint filters, filter scale, resample alpha, block repeats), as Model Garden's SCALING_MAP
    # (official/vision/modeling/backbones/spinenet.py) and the SpineNet paper's Table 1.
    expected = {
        "49S": (128, 0.65, 0.5, 1),
        "49": (256, 1.0, 0.5, 1),
        "96": (256, 1.0, 0.5, 2),
        "143": (256, 1.0, 1.0, 3),
        "190": (512, 1.3, 1.0, 4),
    }
    for model_id, values in expected.items():
        assert tuple(SPINENET_SCALING[model_id]) == values, model_id
    # Block filters per level after scaling: 49S rounds 64·0.65 = 41.6 down to 41.
    assert {level: int(LEVEL_FILTERS[level] * 0.65) for level in (2, 3, 4)} == {2: 41, 3: 83, 4: 166}
    assert {level: int(LEVEL_FILTERS[level] * 1.3) for level in (2, 3, 7)} == {2: 83, 3: 166, 7: 332}


def test_block_specs_are_spinenet49():
    assert len(SPINENET_BLOCK_SPECS) == 16
    assert [spec.level for spec in SPINENET_BLOCK_SPECS] == [2, 4, 3, 4, 6, 4, 5, 7, 5, 5, 4, 3, 5, 7, 6, 2]
    assert sum(spec.block == "residual" for spec in SPINENET_BLOCK_SPECS) == 4
    assert sorted(spec.level for spec in SPINENET_BLOCK_SPECS if spec.is_output) == [2, 3, 4, 5, 6, 7]
    # Every parent is an earlier block (0 and 1 are the stem blocks).
    assert all(max(spec.parents) < index + 2 for index, spec in enumerate(SPINENET_BLOCK_SPECS))


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="model_id='50'"):
        NormActSpineNet("50")
    with pytest.raises(ValueError, match="model_id=True"):
        NormActSpineNet(True)
    with pytest.raises(ValueError, match="min_level=1"):
        NormActSpineNet("49S", min_level=1)
    with pytest.raises(ValueError, match="max_level=8"):
        NormActSpineNet("49S", max_level=8)
    with pytest.raises(ValueError, match="stochastic_depth_drop_rate=1.5"):
        NormActSpineNet("49S", stochastic_depth_drop_rate=1.5)
    with pytest.raises(ValueError, match="width=96"):
        NormActSpineNet("49S", input_specs=tf_keras.layers.InputSpec(shape=[None, 128, 96, 3]))
    with pytest.raises(ValueError, match="height=64, width=128"):
        NormActSpineNet("49S", input_specs=tf_keras.layers.InputSpec(shape=[None, 64, 128, 3]))
    with pytest.raises(ValueError, match="unknown norm-act name 'evonorm_x'"):
        NormActSpineNet("49S", norm_act="evonorm_x")


# -- the built backbone ------------------------------------------------------------------


def _model_garden_spinenet_from_config(model_id, norm_activation):
    """Model Garden's SpineNet from its config, as its task builds it."""
    return backbone_factory.build_backbone(
        input_specs=_spec(),
        backbone_config=model_garden_backbones.Backbone(
            type="spinenet", spinenet=model_garden_backbones.SpineNet(model_id=model_id, min_level=3, max_level=7)),
        norm_activation_config=norm_activation,
    )


def _model_garden_spinenet(model_id):
    scaling = model_garden_spinenet.SCALING_MAP[model_id]
    return model_garden_spinenet.SpineNet(
        input_specs=_spec(),
        endpoints_num_filters=scaling["endpoints_num_filters"],
        resample_alpha=scaling["resample_alpha"],
        block_repeats=scaling["block_repeats"],
        filter_size_scale=scaling["filter_size_scale"],
    )


def _assert_same_weights(ours, theirs):
    assert ours.count_params() == theirs.count_params()
    shapes = [sorted(w.shape.as_list() for w in model.weights) for model in (ours, theirs)]
    assert shapes[0] == shapes[1]
    assert ours.output_specs == theirs.output_specs


def test_bn_relu_has_model_garden_parameters(backbones):
    ours = backbones["bn_relu"]
    theirs = _model_garden_spinenet_from_config(SMALL_ID, MODEL_NORM)
    _assert_same_weights(ours, theirs)
    assert ours.count_params() == 9146351
    # 49S's scaling in the built layers: level-2 blocks 41 filters (64 · 0.65), the level-4
    # residual node 166, its resampling from the 164-channel stem block at 20 = int(41 · 0.5).
    assert ours.get_layer("stem_block1_1_conv1").kernel.shape == (1, 1, 64, 41)
    assert ours.get_layer("block2_1_conv1").kernel.shape == (3, 3, 166, 166)
    assert ours.get_layer("block2_parent1_conv_in").kernel.shape == (1, 1, 164, 20)
    # Every BN of Model Garden's SpineNet is one of our norm-act layers, and nothing else is.
    their_bns = [m for m in theirs.submodules if isinstance(m, tf_keras.layers.BatchNormalization)]
    our_layers = checks.norm_act_layers(ours)
    assert len(our_layers) == len(their_bns) == 130
    # The model-level options reach all 130 layers, as they reach all of Model Garden's BNs.
    assert {(layer.synchronized, layer.momentum, layer.epsilon) for layer in our_layers} == {
        (bool(bn.synchronized), bn.momentum, bn.epsilon) for bn in their_bns} == {(True, 0.7, 2e-3)}


@pytest.mark.parametrize("norm_act", NORM_ACTS)
def test_output_specs_are_levels_3_to_7(backbones, norm_act):
    assert {key: tuple(shape) for key, shape in backbones[norm_act].output_specs.items()} == {
        str(level): (None, SIZE // 2**level, SIZE // 2**level, 128) for level in range(3, 8)
    }


def test_forward_gives_levels_3_to_7(backbones):
    # EvoNorm-S0 runs inside the Mask R-CNN test. Forward only: a backward pass of this
    # backbone costs ~6 s of CPU, and every weight sits on a path to an output by construction.
    for name in ("bn_relu", "evonorm_b0"):
        outputs = backbones[name](_images(batch=2), training=True)
        assert {key: tuple(value.shape) for key, value in outputs.items()} == {
            str(level): (2, SIZE // 2**level, SIZE // 2**level, 128) for level in range(3, 8)
        }, name
        assert all(np.all(np.isfinite(value.numpy())) for value in outputs.values()), name


def test_norm_act_positions_are_the_same_for_every_norm_act(backbones):
    positions = {}
    for name, model in backbones.items():
        layers = checks.norm_act_layers(model)
        assert all(isinstance(layer, TF_KERAS_TABLE[name]) for layer in layers)
        positions[name] = [(layer.name, layer.nonlinearity) for layer in layers]
    assert positions["bn_relu"] == positions["evonorm_b0"] == positions["evonorm_s0"]
    # Without activation: 2 resampling outputs x 15 nodes, the last norm of 17 blocks (2 stem
    # blocks + 15 nodes), the first stem block's projection shortcut (64 -> 164 channels). The
    # 16th node (the level-2 output) feeds nothing at min_level 3, so the model leaves it out.
    assert sum(not nonlinearity for _, nonlinearity in positions["evonorm_b0"]) == 30 + 17 + 1
    assert not any(
        isinstance(m, tf_keras.layers.BatchNormalization) for m in backbones["evonorm_s0"].submodules
    )
    # The S-series group rule: 8 groups where 8 divides the channels (128 at the endpoints),
    # the largest divisor below 8 elsewhere (41 channels at level 2 are prime: 1 group).
    layers = checks.norm_act_layers(backbones["evonorm_s0"])
    groups = {layer.name: layer.groups for layer in layers}
    assert groups["endpoint3_norm_act"] == 8 and groups["stem_block1_1_norm_act1"] == 1
    assert all(layer.gamma.shape[-1] % layer.groups == 0 for layer in layers)


def test_get_config_round_trip(backbones):
    model = backbones["evonorm_b0"]
    config = model.get_config()
    clone = NormActSpineNet.from_config(config)
    assert clone.get_config() == config
    assert clone.input_shape == model.input_shape == (None, SIZE, SIZE, 3)
    assert clone.count_params() == model.count_params()
    assert config["norm_act"] == "evonorm_b0" and config["norm_act_options"] == {}  # groups: S-series only


# -- configs, experiment, Mask R-CNN -------------------------------------------------------


def test_experiment_is_model_gardens_spinenet_recipe_with_evonorm_b0():
    config = _experiment()
    reference = exp_factory.get_exp_config("maskrcnn_spinenet_coco")
    model = config.task.model
    assert model.backbone.type == "evonorm_spinenet"
    spinenet = model.backbone.evonorm_spinenet
    assert (spinenet.model_id, spinenet.min_level, spinenet.max_level) == ("49", 3, 7)
    assert spinenet.norm_activation.type == model.heads_norm_activation.type == "evonorm_b0"
    assert model.decoder.type == "identity"
    assert model.input_size == [640, 640, 3] and config.task.init_checkpoint is None
    for key in ("num_classes", "min_level", "max_level", "anchor", "include_mask"):
        assert getattr(model, key) == getattr(reference.task.model, key), key
    assert config.trainer.as_dict() == reference.trainer.as_dict()
    assert config.task.train_data.as_dict() == reference.task.train_data.as_dict()
    assert config.runtime.mixed_precision_dtype == "bfloat16"


def test_experiment_overrides_and_validation():
    config = _experiment("task.model.backbone.evonorm_spinenet.model_id=96")
    assert str(config.task.model.backbone.evonorm_spinenet.model_id) == "96"
    with pytest.raises(ValueError, match=r"evonorm_spinenet.norm_activation.type='evonorm_x'"):
        _experiment("task.model.backbone.evonorm_spinenet.norm_activation.type=evonorm_x")
    with pytest.raises(ValueError, match=r"evonorm_spinenet.model_id=50 "):
        _experiment("task.model.backbone.evonorm_spinenet.model_id=50")
    with pytest.raises(KeyError):
        _experiment("task.model.backbone.evonorm_spinenet.norm_act.type=evonorm_s0")


def test_tpu_yaml_loads_strictly():
    import os

    path = os.path.join(
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        "official_configs", "maskrcnn_spinenet49_evonorm_b0_tpu.yaml",
    )
    config = _experiment(path)
    model = config.task.model
    assert (config.runtime.distribution_strategy, config.runtime.mixed_precision_dtype) == ("tpu", "bfloat16")
    assert config.task.init_checkpoint is None and config.task.train_data.dtype == "bfloat16"
    assert model.backbone.type == "evonorm_spinenet" and model.decoder.type == "identity"
    assert model.backbone.evonorm_spinenet.norm_activation.type == "evonorm_b0"
    assert model.heads_norm_activation.type == "evonorm_b0"
    # Model Garden's coco_spinenet49_mrcnn_tpu.yaml schedule.
    assert config.trainer.train_steps == 231000
    assert config.trainer.optimizer_config.learning_rate.stepwise.boundaries == [219450, 226380]


def test_mask_rcnn_builds_with_the_backbone_and_runs_one_image(mask_rcnn):
    """The S0 override reaches the backbone's layers; one inference pass on a 128² image."""
    assert isinstance(mask_rcnn.backbone, NormActSpineNet)
    backbone_norm_acts = checks.norm_act_layers(mask_rcnn.backbone)
    assert backbone_norm_acts and all(isinstance(m, TF_KERAS_TABLE["evonorm_s0"]) for m in backbone_norm_acts)
    assert {m.groups for m in backbone_norm_acts if m.name.startswith("endpoint")} == {8}
    assert mask_rcnn.decoder is None  # identity decoder: levels 3…7 go straight to the heads
    outputs = mask_rcnn(_images(batch=1), image_shape=tf.constant([[SIZE, SIZE]]), training=False)
    assert outputs["detection_boxes"].shape == (1, 8, 4)
    assert outputs["detection_masks"].shape[:2] == (1, 8)
    assert np.all(np.isfinite(outputs["detection_boxes"].numpy()))


# -- heavier parity checks (pytest -m slow) ------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("model_id", ["49", "96", "143", "143L", "190"])
def test_bn_relu_has_model_garden_parameters_large(model_id):
    ours = NormActSpineNet(model_id, input_specs=_spec(), norm_act="bn_relu")
    _assert_same_weights(ours, _model_garden_spinenet(model_id))

"""Configs: registered experiments, every YAML in official_configs/, Model Garden task and factory wiring."""

import glob
import os
import re

import numpy as np
import pytest
import tf_keras

from official.core import exp_factory, task_factory
from official.modeling import hyperparams
from official.vision.modeling.backbones import factory as backbone_factory
from official.vision.tasks import image_classification as mg_task

import evonorm_tf.configs as configs
from evonorm_tf.modeling import NormActEfficientNet, NormActResNet
from evonorm_tf.tf_keras import EvoNormB0, EvoNormS1

import norm_act_model_checks as checks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Classification YAMLs; the Mask R-CNN ones (maskrcnn_*) are checked in test_maskrcnn_configs.py,
# the BigGAN ones (biggan*) in test_gan_task.py.
YAMLS = sorted(
    p for p in glob.glob(os.path.join(ROOT, "official_configs", "*.yaml"))
    if not os.path.basename(p).startswith(("maskrcnn_", "biggan"))
)
IMAGENET_TRAIN_EXAMPLES = 1281167


def _experiment_for(path):
    name = os.path.basename(path)
    return "evonorm_resnet_imagenet" if name.startswith("resnet") else "evonorm_efficientnet_imagenet"


def _load(path):
    config = exp_factory.get_exp_config(_experiment_for(path))
    config = hyperparams.override_params_dict(config, path, is_strict=True)
    config.validate()
    return config


def test_there_is_a_yaml_for_every_paper_experiment():
    names = {os.path.basename(p) for p in YAMLS}
    for norm in ("bn_relu", "evonorm_b0", "evonorm_s0"):
        for target in ("tpu", "gpu"):
            assert f"resnet50_{norm}_{target}.yaml" in names
        assert f"resnet_{norm}_cpu_smoke.yaml" in names
    for norm in ("bn_silu", "evonorm_b0", "evonorm_s0"):
        for model in ("b0", "b5"):
            for target in ("tpu", "gpu"):
                assert f"efficientnet_{model}_{norm}_{target}.yaml" in names
        assert f"efficientnet_{norm}_cpu_smoke.yaml" in names


@pytest.mark.parametrize("path", YAMLS, ids=os.path.basename)
def test_yaml_loads_strictly_into_its_experiment(path):
    config = _load(path)
    name = os.path.basename(path)
    backbone = config.task.model.backbone
    assert backbone.type == ("evonorm_resnet" if name.startswith("resnet") else "evonorm_efficientnet")
    norm = backbone.get().norm_activation.type
    assert norm in name
    runtime = config.runtime
    if name.endswith("_tpu.yaml"):
        assert (runtime.distribution_strategy, runtime.mixed_precision_dtype) == ("tpu", "bfloat16")
        assert config.task.train_data.dtype == "bfloat16"
    elif name.endswith("_gpu.yaml"):
        assert (runtime.distribution_strategy, runtime.mixed_precision_dtype) == ("mirrored", "float16")
        assert runtime.num_gpus == 8
    else:
        assert name.endswith("_cpu_smoke.yaml")
        assert (runtime.distribution_strategy, runtime.mixed_precision_dtype) == ("mirrored", "float32")
        assert config.trainer.train_steps <= 8
    if name.startswith("resnet") and not name.endswith("_cpu_smoke.yaml"):
        assert backbone.evonorm_resnet.preactivation == (norm != "bn_relu")


@pytest.mark.parametrize("path", [p for p in YAMLS if "resnet50_" in p], ids=os.path.basename)
def test_resnet_schedules_follow_the_authors_recipe(path):
    config = _load(path)
    batch = config.task.train_data.global_batch_size
    per_epoch = IMAGENET_TRAIN_EXAMPLES // batch
    optimizer = config.trainer.optimizer_config
    assert batch == 1024 and config.trainer.train_steps == 90 * per_epoch
    assert optimizer.learning_rate.stepwise.boundaries == [30 * per_epoch, 60 * per_epoch, 80 * per_epoch]
    assert optimizer.learning_rate.stepwise.values == pytest.approx([0.1 * batch / 256 * m for m in (1, 0.1, 0.01, 0.001)])
    assert optimizer.warmup.linear.warmup_steps == 5 * per_epoch
    assert config.task.losses.l2_weight_decay == 1e-4


@pytest.mark.parametrize(
    "path", [p for p in YAMLS if re.match(r"efficientnet_b\d_", os.path.basename(p))], ids=os.path.basename
)
def test_efficientnet_schedules_follow_the_authors_recipe(path):
    config = _load(path)
    batch = config.task.train_data.global_batch_size
    per_epoch = IMAGENET_TRAIN_EXAMPLES / batch
    optimizer = config.trainer.optimizer_config
    assert abs(config.trainer.train_steps - 350 * per_epoch) <= 1
    assert optimizer.learning_rate.exponential.initial_learning_rate == pytest.approx(0.016 * batch / 256)
    assert optimizer.learning_rate.exponential.decay_steps == int(2.4 * per_epoch)
    assert optimizer.warmup.linear.warmup_steps == int(5 * per_epoch)
    assert optimizer.ema.average_decay == 0.9999
    model_id = config.task.model.backbone.evonorm_efficientnet.model_id
    assert config.task.model.input_size[0] == {"b0": 224, "b5": 456}[model_id]
    if "_tpu" in path:
        assert batch == 2048


def test_experiments_are_registered_with_model_gardens_task():
    ours = {name for name in exp_factory._REGISTERED_CONFIGS if name.startswith("evonorm_")}
    assert ours == set(configs.EXPERIMENTS)
    for name in configs.EXPERIMENTS:
        config = exp_factory.get_exp_config(name)
        assert task_factory.get_task_cls(type(config.task)) is not None
    for name in ("evonorm_resnet_imagenet", "evonorm_efficientnet_imagenet"):
        config = exp_factory.get_exp_config(name)
        assert isinstance(config, configs.ExperimentConfig)
        assert isinstance(config.task, configs.ImageClassificationTask)
        assert task_factory.get_task_cls(type(config.task)) is mg_task.ImageClassificationTask
    assert exp_factory.get_exp_config("evonorm_resnet_imagenet").task.model.backbone.type == "evonorm_resnet"


def test_override_shape_and_validation_errors():
    def override(text):  # override_params_dict changes the config in place: start fresh each time
        return hyperparams.override_params_dict(
            exp_factory.get_exp_config("evonorm_resnet_imagenet"), text, is_strict=True
        )

    config = override("task.model.backbone.evonorm_resnet.norm_activation.type=evonorm_s1")
    config.validate()
    assert config.task.model.backbone.evonorm_resnet.norm_activation.type == "evonorm_s1"
    with pytest.raises(ValueError, match=r"norm_activation.type='evonorm_x'.*valid names"):
        override("task.model.backbone.evonorm_resnet.norm_activation.type=evonorm_x").validate()
    with pytest.raises(ValueError, match="model_id=49"):
        override("task.model.backbone.evonorm_resnet.model_id=49").validate()
    with pytest.raises(KeyError, match="norm_act"):
        override("task.model.backbone.evonorm_resnet.norm_act.type=evonorm_s0")


def test_model_garden_task_builds_the_configured_backbone_with_weight_decay():
    config = _load(os.path.join(ROOT, "official_configs", "resnet_evonorm_b0_cpu_smoke.yaml"))
    config = hyperparams.override_params_dict(
        config, "task.model.backbone.evonorm_resnet.norm_activation.type=evonorm_s1", is_strict=True
    )
    task = task_factory.get_task(config.task)
    model = task.build_model()
    assert isinstance(model.backbone, NormActResNet)
    norms = checks.norm_act_layers(model.backbone)
    assert norms and all(isinstance(layer, EvoNormS1) for layer in norms)
    # Model Garden's L2 (l2_weight_decay / 2 per kernel) reaches every conv/dense kernel, no norm-act weight
    images = np.zeros([2, 32, 32, 3], np.float32)
    checks.check_weight_decay_only_on_kernels(model, images, config.task.losses.l2_weight_decay / 2)
    assert model(images, training=False).shape == (2, 5)


def test_model_garden_backbone_factory_builds_efficientnet_from_config():
    backbone_config = configs.Backbone(
        type="evonorm_efficientnet",
        evonorm_efficientnet=configs.NormActEfficientNet(
            model_id="b0", width_scale=0.25, depth_scale=0.1,
            norm_activation=configs.NormActivation(type="evonorm_b0", momentum=0.8),
        ),
    )
    backbone = backbone_factory.build_backbone(
        input_specs=tf_keras.layers.InputSpec(shape=[None, 32, 32, 3]),
        backbone_config=backbone_config,
        norm_activation_config=None,
    )
    assert isinstance(backbone, NormActEfficientNet)
    assert sorted(backbone.output_specs) == ["2", "3", "4", "5"]
    b0_layers = [layer for layer in checks.norm_act_layers(backbone) if layer.nonlinearity]
    assert b0_layers and all(isinstance(layer, EvoNormB0) and layer.momentum == 0.8 for layer in b0_layers)
    assert backbone.get_config()["width_scale"] == 0.25


@pytest.mark.parametrize("backbone_type", ["evonorm_resnet", "evonorm_efficientnet", "evonorm_spinenet", "nf_resnet"])
def test_registered_builder_rejects_a_config_of_another_type(backbone_type):
    """Each registered builder checks `backbone.type` and names the value it received."""
    builder = backbone_factory.registry.lookup(backbone_factory._REGISTERED_BACKBONE_CLS, backbone_type)
    other = configs.Backbone(type="resnet")
    with pytest.raises(ValueError, match=f"expected backbone type '{backbone_type}', received 'resnet'"):
        builder(tf_keras.layers.InputSpec(shape=[None, 32, 32, 3]), other, None)

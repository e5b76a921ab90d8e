"""Mask R-CNN YAMLs (official_configs/maskrcnn_resnet*.yaml) and the ImageNet → COCO backbone hand-over.

Each YAML must load strictly into `evonorm_maskrcnn_resnetfpn_coco` and
validate; the TPU files must hold the recipe their comments cite. The
documented `init_checkpoint` option is exercised: a checkpoint written by
Model Garden's trainer for our classification experiment restores into the
Mask R-CNN backbone through `init_checkpoint_modules: backbone`.
"""

import gc
import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from official.core import base_trainer, exp_factory, task_factory
from official.modeling import hyperparams

import evonorm_tf.configs  # noqa: F401  (registers the experiments)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(ROOT, "official_configs")
EXPERIMENT = "evonorm_maskrcnn_resnetfpn_coco"
TPU_YAMLS = sorted(glob.glob(os.path.join(CONFIGS, "maskrcnn_resnet50fpn_*_tpu.yaml")))
SMOKE_YAML = os.path.join(CONFIGS, "maskrcnn_resnetfpn_cpu_smoke.yaml")
RUN_YAML = os.path.join(CONFIGS, "maskrcnn_resnetfpn_cpu_shapes_run.yaml")


def _load(*paths, experiment=EXPERIMENT):
    config = exp_factory.get_exp_config(experiment)
    for path in paths:
        config = hyperparams.override_params_dict(config, path, is_strict=True)
    config.validate()
    return config


def _norm_types(model):
    return {
        model.backbone.evonorm_resnet.norm_activation.type,
        model.decoder.evonorm_fpn.norm_activation.type,
        model.heads_norm_activation.type,
    }


def test_there_is_a_tpu_yaml_per_norm_act():
    assert [os.path.basename(p) for p in TPU_YAMLS] == [
        f"maskrcnn_resnet50fpn_{norm}_tpu.yaml" for norm in ("bn_relu", "evonorm_b0", "evonorm_s0")
    ]


@pytest.mark.parametrize("path", TPU_YAMLS, ids=os.path.basename)
def test_tpu_yaml_loads_and_holds_the_from_scratch_recipe(path):
    config = _load(path)
    norm = os.path.basename(path)[len("maskrcnn_resnet50fpn_"):-len("_tpu.yaml")]
    model, task, trainer = config.task.model, config.task, config.trainer
    assert (config.runtime.distribution_strategy, config.runtime.mixed_precision_dtype) == ("tpu", "bfloat16")
    assert task.train_data.dtype == task.validation_data.dtype == "bfloat16"
    assert task.init_checkpoint is None and task.init_checkpoint_modules == "backbone"
    # The same norm-act in backbone, FPN and heads; v1.5 backbone for the BN baseline only.
    assert _norm_types(model) == {norm}
    assert model.backbone.type == "evonorm_resnet" and model.decoder.type == "evonorm_fpn"
    assert model.backbone.evonorm_resnet.model_id == 50
    assert model.backbone.evonorm_resnet.preactivation == (norm != "bn_relu")
    # Model Garden's r50fpn_640_coco_scratch_tpu4x4.yaml.
    assert (model.num_classes, model.input_size, model.min_level, model.max_level) == (91, [640, 640, 3], 3, 7)
    assert model.anchor.anchor_size == 3.0 and task.losses.l2_weight_decay == 8e-5
    assert task.train_data.global_batch_size == 256
    assert (task.train_data.parser.aug_scale_min, task.train_data.parser.aug_scale_max) == (0.5, 2.0)
    assert trainer.train_steps == 162050
    schedule = trainer.optimizer_config.learning_rate.stepwise
    assert schedule.boundaries == [148160, 157420] and schedule.values == pytest.approx([0.32, 0.032, 0.0032])
    assert trainer.optimizer_config.warmup.linear.warmup_steps == 2000
    # Every one of the 5000 COCO val images once: one image per core of a v3-32, the last batch partial.
    assert task.validation_data.global_batch_size % 32 == 0
    assert not task.validation_data.drop_remainder
    batch = task.validation_data.global_batch_size
    assert (trainer.validation_steps - 1) * batch < 5000 <= trainer.validation_steps * batch
    assert task.train_data.input_path == "coco/train*" and task.validation_data.input_path == "coco/val*"


def test_cpu_yamls_load_and_point_at_the_generated_shapes():
    smoke = _load(SMOKE_YAML)
    run = _load(SMOKE_YAML, RUN_YAML)
    for config in (smoke, run):
        assert config.runtime.mixed_precision_dtype == "float32" and config.task.init_checkpoint is None
        assert config.task.model.num_classes == 4  # shapes_coco.NUM_CLASSES
        assert config.task.annotation_file == "/tmp/evonorm_shapes_coco/instances_val2017.json"
        assert config.task.train_data.input_path == "/tmp/evonorm_shapes_coco/train*"
        assert _norm_types(config.task.model) == {"evonorm_b0"}
        cosine = config.trainer.optimizer_config.learning_rate.cosine
        assert cosine.decay_steps == config.trainer.train_steps
        assert config.trainer.optimizer_config.warmup.linear.warmup_steps < config.trainer.train_steps
    assert smoke.trainer.train_steps <= 8 and run.trainer.train_steps == 1000
    # The run differs from the smoke config only in the trainer block.
    assert run.task.as_dict() == smoke.task.as_dict()


def _tiny_backbone(norm="evonorm_b0", preactivation=True):
    return {"type": "evonorm_resnet", "evonorm_resnet": {
        "model_id": 10, "width_multiplier": 0.125, "preactivation": preactivation,
        "norm_activation": {"type": norm, "groups": 4},
    }}


def _imagenet_checkpoint(directory):
    """Our classification experiment, one step; saved the way Model Garden's trainer saves it."""
    config = exp_factory.get_exp_config("evonorm_resnet_imagenet")
    config.override({"runtime": {"mixed_precision_dtype": "float32"}, "task": {"model": {
        "num_classes": 5, "input_size": [32, 32, 3], "backbone": _tiny_backbone()}}}, is_strict=True)
    task = task_factory.get_task(config.task)
    model = task.build_model()
    optimizer = task.create_optimizer(config.trainer.optimizer_config, config.runtime)
    trainer = base_trainer.Trainer(config, task, model, optimizer, train=False, evaluate=False)
    # Moving variances away from their initial ones, so a restore is visible.
    for variable in model.backbone.variables:
        variable.assign(tf.random.stateless_normal(variable.shape, seed=[1, len(variable.name)]))
    path = trainer.checkpoint.save(os.path.join(directory, "ckpt"))
    return path, model.backbone


def _maskrcnn_task(init_checkpoint, backbone):
    config = exp_factory.get_exp_config(EXPERIMENT)
    config.override({"runtime": {"mixed_precision_dtype": "float32"}, "task": {
        "init_checkpoint": init_checkpoint, "init_checkpoint_modules": "backbone",
        "model": {
            "num_classes": 4, "input_size": [64, 64, 3], "min_level": 3, "max_level": 5,
            "backbone": backbone,
            "decoder": {"evonorm_fpn": {"num_filters": 8, "norm_activation": {"type": "evonorm_b0"}}},
            "rpn_head": {"num_filters": 8},
            "detection_head": {"num_convs": 0, "num_filters": 8, "fc_dims": 8},
            "mask_head": {"num_convs": 1, "num_filters": 8},
        }}}, is_strict=True)
    config.validate()
    return task_factory.get_task(config.task)


def test_imagenet_checkpoint_initialises_the_maskrcnn_backbone(tmp_path):
    path, imagenet_backbone = _imagenet_checkpoint(str(tmp_path))
    task = _maskrcnn_task(path, _tiny_backbone())
    model = task.build_model()
    before = {v.name: v.numpy() for v in model.backbone.variables}
    task.initialize(model)  # Model Garden: reads `backbone` with assert_existing_objects_matched
    restored = {v.name: v.numpy() for v in model.backbone.variables}
    expected = {v.name: v.numpy() for v in imagenet_backbone.variables}
    assert sorted(restored) == sorted(expected) and len(restored) > 20
    for name, value in restored.items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)
        assert not np.array_equal(value, before[name]), name
    # The whole model_dir works too (newest ckpt-N), and a different backbone form is refused.
    task = _maskrcnn_task(str(tmp_path), _tiny_backbone(preactivation=False))
    with pytest.raises((AssertionError, ValueError), match="shape|match"):
        task.initialize(task.build_model())
    # The failed restore warns about unused values when collected: collect now, while logging works.
    gc.collect()


def test_launch_script_builds_the_coco_command():
    import subprocess

    script = os.path.join(ROOT, "tpu_scripts", "launch_maskrcnn.sh")
    env = dict(os.environ, DRY_RUN="1", MODEL_DIR="gs://bucket/runs", DATA_DIR="gs://bucket/coco",
               ACCELERATOR_TYPE="v3-32", TPU_NAME="evonorm-tpu")
    run = subprocess.run(["bash", script, "evonorm_s0"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    command = run.stdout.replace("\\", "")
    for part in ("tpu_scripts/train.py", "--tpu=evonorm-tpu", "TPU_LOAD_LIBRARY=0", "--experiment=evonorm_maskrcnn_resnetfpn_coco",
                 "--config_file=official_configs/maskrcnn_resnet50fpn_evonorm_s0_tpu.yaml",
                 "--model_dir=gs://bucket/runs/maskrcnn_resnet50fpn_evonorm_s0",
                 "task.train_data.input_path=gs://bucket/coco/train*",
                 "task.validation_data.input_path=gs://bucket/coco/val*",
                 "task.annotation_file=gs://bucket/coco/instances_val2017.json"):
        assert part in command, part
    assert "valid*" not in command
    bad = subprocess.run(["bash", script, "evonorm_x"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert bad.returncode == 2 and "evonorm_x" in bad.stderr

"""Evaluation counts every validation image exactly once.

The ImageNet and COCO configs keep the last, partial validation batch
(`drop_remainder: false`, as Model Garden's own imagenet_resnet50_tpu.yaml)
and run ceil(images / batch) validation steps. The run test evaluates a tiny
TFRecord split whose size the batch does not divide with Model Garden's
trainer and reads the number of examples the accuracy metric counted.
"""

import glob
import importlib.util
import math
import os

import pytest
import tensorflow as tf

from official.core import base_trainer, exp_factory, task_factory
from official.modeling import hyperparams

import evonorm_tf.configs  # noqa: F401  (registers the experiments)
from evonorm_tf.configs import image_classification, maskrcnn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(ROOT, "official_configs")
IMAGENET_YAMLS = sorted(glob.glob(os.path.join(CONFIGS, "resnet50_*.yaml"))
                        + glob.glob(os.path.join(CONFIGS, "efficientnet_b[05]_*.yaml")))
COCO_YAMLS = sorted(glob.glob(os.path.join(CONFIGS, "maskrcnn_*_tpu.yaml")))


def _load(experiment, *paths):
    config = exp_factory.get_exp_config(experiment)
    for path in paths:
        config = hyperparams.override_params_dict(config, path, is_strict=True)
    config.validate()
    return config


def _covers_each_image_once(config, images):
    batch = config.task.validation_data.global_batch_size
    steps = config.trainer.validation_steps
    return (not config.task.validation_data.drop_remainder) and (steps - 1) * batch < images <= steps * batch


@pytest.mark.parametrize("experiment", ["evonorm_resnet_imagenet", "evonorm_efficientnet_imagenet"])
def test_imagenet_experiments_evaluate_all_50000_images(experiment):
    config = _load(experiment)
    assert _covers_each_image_once(config, 50000)
    assert config.trainer.validation_steps == math.ceil(50000 / config.task.validation_data.global_batch_size)


@pytest.mark.parametrize("experiment", ["evonorm_maskrcnn_resnetfpn_coco", "evonorm_maskrcnn_spinenet_coco"])
def test_coco_experiments_evaluate_all_5000_images(experiment):
    assert maskrcnn.COCO_VAL_EXAMPLES == 5000
    assert _covers_each_image_once(_load(experiment), 5000)


@pytest.mark.parametrize("path", IMAGENET_YAMLS, ids=os.path.basename)
def test_imagenet_yamls_evaluate_all_50000_images(path):
    experiment = "evonorm_resnet_imagenet" if "resnet" in path else "evonorm_efficientnet_imagenet"
    config = _load(experiment, path)
    assert config.task.validation_data.global_batch_size == 1024
    assert config.trainer.validation_steps == 49 and _covers_each_image_once(config, 50000)


@pytest.mark.parametrize("path", COCO_YAMLS, ids=os.path.basename)
def test_coco_yamls_evaluate_all_5000_images(path):
    experiment = "evonorm_maskrcnn_spinenet_coco" if "spinenet" in path else "evonorm_maskrcnn_resnetfpn_coco"
    config = _load(experiment, path)
    assert config.task.validation_data.global_batch_size == 32
    assert config.trainer.validation_steps == 157 and _covers_each_image_once(config, 5000)


def _prepare_module():
    spec = importlib.util.spec_from_file_location(
        "prepare_imagenet", os.path.join(ROOT, "tpu_scripts", "prepare_imagenet.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ten_validation_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("uneven")
    prepare = _prepare_module()
    prepare.write_synthetic_image_folder(str(root / "images"), 2, 5, 36, seed=3)
    prepare.prepare(str(root / "images"), str(root / "records"), "validation", num_shards=2)
    return str(root / "records" / "validation*")


def _evaluated_examples(input_path, drop_remainder):
    """Evaluates a tiny ResNet on `input_path` with Model Garden's trainer; returns the examples counted."""
    config = _load("evonorm_resnet_imagenet", os.path.join(CONFIGS, "resnet_evonorm_b0_cpu_smoke.yaml"))
    batch = 4
    config.override({
        "runtime": {"distribution_strategy": "one_device"},
        "task": {"validation_data": {"input_path": input_path, "global_batch_size": batch,
                                     "drop_remainder": drop_remainder}},
        "trainer": {"validation_steps": image_classification.validation_steps(batch, examples=10)},
    }, is_strict=True)
    assert config.trainer.validation_steps == 3
    task = task_factory.get_task(config.task)
    model = task.build_model()
    optimizer = task.create_optimizer(config.trainer.optimizer_config, config.runtime)
    trainer = base_trainer.Trainer(config, task, model, optimizer, train=False, evaluate=True)
    logs = trainer.evaluate(tf.convert_to_tensor(config.trainer.validation_steps))
    (accuracy,) = [metric for metric in trainer.validation_metrics if metric.name == "accuracy"]
    assert 0.0 <= float(logs["accuracy"]) <= 1.0
    return int(accuracy.count.numpy())


def test_evaluation_counts_each_of_ten_images_once_with_batch_four(ten_validation_images):
    # 10 images, batch 4: batches of 4, 4 and 2, all evaluated.
    assert _evaluated_examples(ten_validation_images, drop_remainder=False) == 10
    # Dropping the partial batch, as the configs did before, loses the last 2.
    assert _evaluated_examples(ten_validation_images, drop_remainder=True) == 8

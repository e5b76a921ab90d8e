"""What the TPU/GPU YAML comments say the code does, checked against what it does.

- RMSProp ε: the EfficientNet files say ε sits inside the square root (as the
  authors' TF1 optimizer); one step of the optimizer Model Garden builds from
  the file is compared with both placements (NumPy float64).
- Weight decay: the ResNet-50 and EfficientNet files say the loss is
  wd·Σw²/2 over convolution and dense kernels only; the regularisation loss of
  a model built by Model Garden's task is compared with that sum.
- EfficientNet-B5 BN baseline: the two files bracket the authors' grouped
  statistics (groups of max(8, cores/8) cores) as their headers say.
- SpineNet: one file per size of Model Garden's Mask R-CNN SpineNet configs,
  each with that config's resolution, anchors and schedule.
"""

import glob
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from official.core import exp_factory, task_factory
from official.modeling import hyperparams

import evonorm_tf.configs  # noqa: F401  (registers the experiments)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(ROOT, "official_configs")
EFFICIENTNET_YAMLS = sorted(glob.glob(os.path.join(CONFIGS, "efficientnet_b[05]_*.yaml")))
RESNET_YAMLS = sorted(glob.glob(os.path.join(CONFIGS, "resnet50_*.yaml")))


def _load(experiment, path):
    config = exp_factory.get_exp_config(experiment)
    config = hyperparams.override_params_dict(config, path, is_strict=True)
    config.validate()
    return config


def _comment(path, key):
    """The comment after `key:` in a YAML file."""
    (line,) = [line for line in open(path) if re.match(rf"\s*{re.escape(key)}", line)]
    return line.split("#", 1)[1].strip()


@pytest.mark.parametrize("path", EFFICIENTNET_YAMLS, ids=os.path.basename)
def test_rmsprop_epsilon_sits_inside_the_square_root_as_the_comment_says(path):
    assert "inside the square root" in _comment(path, "epsilon: 0.001")
    assert "ms starts at 0" in _comment(path, "epsilon: 0.001")
    config = _load("evonorm_efficientnet_imagenet", path)
    rmsprop = config.trainer.optimizer_config.optimizer.rmsprop
    rho, momentum, epsilon = rmsprop.rho, rmsprop.momentum, rmsprop.epsilon
    assert (rho, momentum, epsilon) == (0.9, 0.9, 0.001)
    # The file's optimizer at learning rate 1, without warmup or EMA (both leave the step's form alone).
    config.override({"runtime": {"mixed_precision_dtype": "float32"}, "trainer": {"optimizer_config": {
        "learning_rate": {"type": "constant", "constant": {"learning_rate": 1.0}},
        "warmup": {"type": None}, "ema": None}}}, is_strict=False)
    task = task_factory.get_task(config.task)
    optimizer = task.create_optimizer(config.trainer.optimizer_config, config.runtime)
    gradient = np.array([1e-3, 3e-2, 1.0])
    variable = tf.Variable(np.zeros(3, np.float32))
    for step in range(2):
        optimizer.apply_gradients([(tf.constant(gradient, tf.float32), variable)])
    # Two steps of RMSProp with momentum, mean square starting at 0, in float64.
    ms, mom, inside, outside = np.zeros(3), np.zeros(3), np.zeros(3), np.zeros(3)
    ms_out, mom_out = np.zeros(3), np.zeros(3)
    for step in range(2):
        ms = rho * ms + (1 - rho) * gradient**2
        mom = momentum * mom + gradient / np.sqrt(ms + epsilon)
        inside -= mom
        ms_out = rho * ms_out + (1 - rho) * gradient**2
        mom_out = momentum * mom_out + gradient / (np.sqrt(ms_out) + epsilon)
        outside -= mom_out
    np.testing.assert_allclose(variable.numpy(), inside, rtol=1e-5)
    assert not np.allclose(variable.numpy(), outside, rtol=1e-2)


def _regularised(experiment, yaml_name):
    config = _load(experiment, os.path.join(CONFIGS, yaml_name))
    task = task_factory.get_task(config.task)
    model = task.build_model()
    return config.task.losses.l2_weight_decay, model


@pytest.mark.parametrize("experiment, smoke_yaml, comment_files", [
    ("evonorm_resnet_imagenet", "resnet_evonorm_b0_cpu_smoke.yaml", RESNET_YAMLS),
    ("evonorm_efficientnet_imagenet", "efficientnet_evonorm_b0_cpu_smoke.yaml", EFFICIENTNET_YAMLS),
])
def test_weight_decay_covers_kernels_only_as_the_comment_says(experiment, smoke_yaml, comment_files):
    for path in comment_files:
        comment = _comment(path, "l2_weight_decay:")
        assert "wd·Σw²/2 over the convolution" in comment and "biases and norm-act variables are not decayed" in comment
    # The smoke file has the same keys as the full ones; only sizes differ.
    weight_decay, model = _regularised(experiment, smoke_yaml)
    kernels = [v for v in model.trainable_variables if v.name.split("/")[-1] in ("kernel:0", "depthwise_kernel:0")]
    others = [v for v in model.trainable_variables if v.name.split("/")[-1] not in ("kernel:0", "depthwise_kernel:0")]
    assert any(v.name.endswith("bias:0") for v in others)  # the classifier's bias exists, and is not decayed
    expected = weight_decay / 2 * sum(np.sum(np.square(v.numpy().astype(np.float64))) for v in kernels)
    assert len(model.losses) == len(kernels)
    np.testing.assert_allclose(float(tf.add_n(model.losses)), expected, rtol=1e-5)


def test_efficientnet_b5_bn_baselines_bracket_the_authors_grouped_statistics():
    per_core = _load("evonorm_efficientnet_imagenet", os.path.join(CONFIGS, "efficientnet_b5_bn_silu_tpu.yaml"))
    synced = _load("evonorm_efficientnet_imagenet", os.path.join(CONFIGS, "efficientnet_b5_bn_silu_sync_tpu.yaml"))
    cores = 32  # v3-32, as both headers say
    batch = per_core.task.train_data.global_batch_size
    # The authors' TpuBatchNormalization: groups of max(8, cores // 8) cores above 8 cores.
    group = max(8, cores // 8)
    assert (batch // cores, group * batch // cores, batch) == (64, 512, 2048)
    header = open(os.path.join(CONFIGS, "efficientnet_b5_bn_silu_tpu.yaml")).read()
    assert "groups of 8 on a v3-32, 512 images" in header and "per core (64 images)" in header
    assert "all 32 cores (2048 images" in header
    # The backbone's block leaves `synchronized` unset: Model Garden's model-level use_sync_bn decides.
    for config, synchronized in ((per_core, False), (synced, True)):
        assert config.task.model.backbone.evonorm_efficientnet.norm_activation.synchronized is None
        assert config.task.model.norm_activation.use_sync_bn is synchronized
    # Apart from that one switch the two files are the same experiment.
    synced.override({"task": {"model": {"norm_activation": {"use_sync_bn": False}}}}, is_strict=True)
    assert synced.as_dict() == per_core.as_dict()


# Model Garden's Mask R-CNN SpineNet configs (official/vision/beta/configs/experiments/maskrcnn/
# coco_spinenet{49,96,143}_mrcnn_tpu.yaml): size -> (input, anchor size).
SPINENET_SIZES = {"49": (640, 3.0), "96": (1024, 3.0), "143": (1280, 4.0)}


def test_there_is_one_spinenet_yaml_per_documented_size():
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(CONFIGS, "maskrcnn_spinenet*_tpu.yaml")))
    assert names == sorted(f"maskrcnn_spinenet{size}_evonorm_b0_tpu.yaml" for size in SPINENET_SIZES)


@pytest.mark.parametrize("size", sorted(SPINENET_SIZES))
def test_spinenet_yaml_has_its_own_resolution_and_schedule(size):
    path = os.path.join(CONFIGS, f"maskrcnn_spinenet{size}_evonorm_b0_tpu.yaml")
    config = _load("evonorm_maskrcnn_spinenet_coco", path)
    model, trainer = config.task.model, config.trainer
    resolution, anchor = SPINENET_SIZES[size]
    assert model.backbone.evonorm_spinenet.model_id == size
    assert model.input_size == [resolution, resolution, 3] and model.anchor.anchor_size == anchor
    assert (model.min_level, model.max_level, model.anchor.num_scales) == (3, 7, 3)
    assert model.backbone.evonorm_spinenet.stochastic_depth_drop_rate == 0.2
    assert config.task.losses.l2_weight_decay == 4e-5 and config.task.train_data.global_batch_size == 256
    assert (config.task.train_data.parser.aug_scale_min, config.task.train_data.parser.aug_scale_max) == (0.1, 2.0)
    assert trainer.train_steps == 231000
    assert trainer.optimizer_config.learning_rate.stepwise.boundaries == [219450, 226380]
    assert trainer.optimizer_config.learning_rate.stepwise.values == pytest.approx([0.32, 0.032, 0.0032])
    assert trainer.optimizer_config.warmup.linear.warmup_steps == 2000
    header = open(path).read().split("\nruntime:")[0]
    assert f"SpineNet-{size} on COCO 2017 at {resolution}x{resolution}" in header
    assert f"coco_spinenet{size}_mrcnn_tpu.yaml" in header and "model_id=96" not in header

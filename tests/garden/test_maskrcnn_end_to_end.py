"""Mask R-CNN end to end: generated COCO-layout data → prepare_coco → tpu_scripts/train.py train_and_eval.

The driver runs in a subprocess with the CPU smoke YAML
(`official_configs/maskrcnn_resnetfpn_cpu_smoke.yaml`) and a third config file
that points it at this test's data. It must save checkpoints and write
pycocotools box and mask AP (Model Garden's COCO evaluator on the generated
`instances_val2017.json`) to the validation summaries.

The fast test shrinks the model further and runs the train and eval steps
eagerly (no graph compile, which costs a minute on two cores). The slow one
runs the smoke YAML as it is, in graph mode, then resumes to a later step.
"""

import glob
import importlib.util
import math
import os
import subprocess
import sys

import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "tpu_scripts", "train.py")
SMOKE_YAML = os.path.join(ROOT, "official_configs", "maskrcnn_resnetfpn_cpu_smoke.yaml")
AP_KEYS = ("AP", "AP50", "mask_AP", "mask_AP50")


def _load_prepare_coco():
    spec = importlib.util.spec_from_file_location(
        "prepare_coco", os.path.join(ROOT, "tpu_scripts", "prepare_coco.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _data(root, train_images, val_images, image_size):
    prepare_coco = _load_prepare_coco()
    coco_dir, output_dir = os.path.join(root, "raw"), os.path.join(root, "records")
    prepare_coco.generate_shapes(coco_dir, "2017", train_images, val_images, image_size, seed=0)
    prepare_coco.prepare(coco_dir, output_dir, shards={"train": 2, "val": 1})
    return output_dir


def _data_yaml(path, data_dir, extra=""):
    with open(path, "w") as file:
        file.write(
            "task:\n"
            f"  annotation_file: {data_dir}/instances_val2017.json\n"
            f"  train_data:\n    input_path: {data_dir}/train*\n"
            f"  validation_data:\n    input_path: {data_dir}/val*\n" + extra
        )
    return str(path)


def _train(model_dir, *config_files, params_override=None):
    command = [
        sys.executable, TRAIN, "--experiment=evonorm_maskrcnn_resnetfpn_coco", "--mode=train_and_eval",
        f"--model_dir={model_dir}", "--seed=0", "--noenable_async_checkpointing",
    ] + [f"--config_file={path}" for path in (SMOKE_YAML, *config_files)]
    if params_override:
        command.append(f"--params_override={params_override}")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)
    assert run.returncode == 0, run.stderr[-4000:]
    return run


def _validation_metrics(model_dir):
    """{step: {tag: value}} from the evaluator's TensorBoard summaries."""
    metrics = {}
    for path in glob.glob(os.path.join(model_dir, "validation", "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
                metrics.setdefault(event.step, {})[value.tag] = number
    return metrics


def _assert_checkpoints_and_ap(model_dir, steps):
    assert tf.train.latest_checkpoint(model_dir) == os.path.join(model_dir, f"ckpt-{steps[-1]}")
    for step in steps:
        assert os.path.exists(os.path.join(model_dir, f"ckpt-{step}.index"))
    metrics = _validation_metrics(model_dir)[steps[-1]]
    for key in AP_KEYS:
        assert math.isfinite(metrics[key]) and 0.0 <= metrics[key] <= 1.0, (key, metrics[key])
    return metrics


# The smoke model shrunk further, steps run eagerly: no minute-long graph compile.
TINY = """\
  model:
    input_size: [64, 64, 3]
    max_level: 5
    backbone:
      evonorm_resnet:
        model_id: 10
        width_multiplier: 0.125
    decoder:
      evonorm_fpn:
        num_filters: 16
    rpn_head:
      num_filters: 16
    detection_head:
      num_filters: 16
      fc_dims: 32
    mask_head:
      num_convs: 1
      num_filters: 16
  train_data:
    global_batch_size: 2
  validation_data:
    global_batch_size: 2
trainer:
  train_steps: 2
  steps_per_loop: 1
  summary_interval: 1
  checkpoint_interval: 1
  validation_interval: 2
  validation_steps: 1
  train_tf_function: false
  train_tf_while_loop: false
  eval_tf_function: false
  optimizer_config:
    learning_rate:
      cosine:
        decay_steps: 2
    warmup:
      linear:
        warmup_steps: 1
"""


def test_tiny_train_and_eval_writes_checkpoints_and_coco_ap(tmp_path):
    data_dir = _data(str(tmp_path / "data"), train_images=4, val_images=2, image_size=64)
    model_dir = tmp_path / "model"
    # Its own file: with the data paths in the same YAML, TINY's train_data
    # key would replace theirs (YAML keeps the last of two equal keys).
    tiny_yaml = tmp_path / "tiny.yaml"
    tiny_yaml.write_text("task:\n" + TINY)
    run = _train(model_dir, _data_yaml(tmp_path / "data.yaml", data_dir), str(tiny_yaml))
    _assert_checkpoints_and_ap(str(model_dir), steps=[1, 2])
    # pycocotools printed both summaries: box (bbox) and mask (segm).
    assert run.stdout.count("Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all") == 2
    params = (model_dir / "params.yaml").read_text()
    assert f"{data_dir}/train*" in params and f"{data_dir}/val*" in params


@pytest.mark.slow
def test_smoke_yaml_train_and_eval_then_resume(tmp_path):
    data_dir = _data(str(tmp_path / "data"), train_images=16, val_images=8, image_size=128)
    model_dir = tmp_path / "model"
    data_yaml = _data_yaml(tmp_path / "data.yaml", data_dir, "trainer:\n  validation_steps: 1\n")
    _train(model_dir, data_yaml)
    _assert_checkpoints_and_ap(str(model_dir), steps=[2, 4])
    run = _train(model_dir, data_yaml, params_override="trainer.train_steps=6")
    assert "restored" in (run.stdout + run.stderr).lower()
    _assert_checkpoints_and_ap(str(model_dir), steps=[4, 6])

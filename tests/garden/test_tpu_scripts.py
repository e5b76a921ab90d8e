"""tpu_scripts: ImageNet-format TFRecords from an image folder, and the training driver end to end.

The driver runs in a subprocess (as on a TPU VM), with `--cpu_replicas=2` so
that the mirrored strategy spans two logical CPU devices.
"""

import glob
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "tpu_scripts", "train.py")
SMOKE_YAML = os.path.join(ROOT, "official_configs", "resnet_evonorm_b0_cpu_smoke.yaml")


def _load_prepare_module():
    spec = importlib.util.spec_from_file_location(
        "prepare_imagenet", os.path.join(ROOT, "tpu_scripts", "prepare_imagenet.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prepare_imagenet = _load_prepare_module()


@pytest.fixture(scope="module")
def tfrecords(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    prepare_imagenet.write_synthetic_image_folder(str(root / "train_images"), 4, 8, 40, seed=0)
    prepare_imagenet.write_synthetic_image_folder(str(root / "val_images"), 4, 4, 40, seed=1)
    data = root / "tfrecords"
    train = prepare_imagenet.prepare(str(root / "train_images"), str(data), "train", num_shards=2)
    validation = prepare_imagenet.prepare(str(root / "val_images"), str(data), "validation", num_shards=1)
    return data, train, validation


def _records(paths):
    spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64),
        "image/class/synset": tf.io.FixedLenFeature([], tf.string),
        "image/height": tf.io.FixedLenFeature([], tf.int64),
        "image/width": tf.io.FixedLenFeature([], tf.int64),
        "image/format": tf.io.FixedLenFeature([], tf.string),
    }
    return [tf.io.parse_single_example(r, spec) for r in tf.data.TFRecordDataset(paths)]


def test_prepare_writes_imagenet_format_records(tfrecords):
    data, train, validation = tfrecords
    assert [os.path.basename(p) for p in train] == ["train-00000-of-00002", "train-00001-of-00002"]
    assert [os.path.basename(p) for p in validation] == ["validation-00000-of-00001"]
    records = _records(train)
    assert len(records) == 32 and len(_records(validation)) == 16
    labels = sorted(int(r["image/class/label"]) for r in records)
    assert labels == sorted([1, 2, 3, 4] * 8)  # 1-based labels: 0 is left for background
    for record in records:
        synset = record["image/class/synset"].numpy().decode()
        assert int(record["image/class/label"]) == int(synset.split("_")[1]) + 1
        image = tf.io.decode_jpeg(record["image/encoded"])
        assert image.shape == (40, 40, 3)
        assert (int(record["image/height"]), int(record["image/width"])) == (40, 40)
        assert record["image/format"].numpy() == b"JPEG"
    # the training split is shuffled, so the first shard holds several classes
    assert len({int(r["image/class/label"]) for r in _records(train[:1])}) > 1


def test_prepare_reencodes_png_and_rejects_empty_folders(tmp_path):
    folder = tmp_path / "images" / "cat"
    folder.mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
    (folder / "a.png").write_bytes(tf.io.encode_png(pixels).numpy())
    paths = prepare_imagenet.prepare(str(tmp_path / "images"), str(tmp_path / "out"), "validation", 1)
    (record,) = _records(paths)
    assert record["image/encoded"].numpy()[:2] == b"\xff\xd8"
    assert tf.io.decode_jpeg(record["image/encoded"]).shape == (6, 5, 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class folders"):
        prepare_imagenet.prepare(str(tmp_path / "empty"), str(tmp_path / "out2"))


def _train(model_dir, data, *extra):
    command = [
        sys.executable, TRAIN,
        "--experiment=evonorm_resnet_imagenet",
        "--mode=train_and_eval",
        f"--model_dir={model_dir}",
        f"--config_file={SMOKE_YAML}",
        "--cpu_replicas=2",
        *extra,
    ]
    overrides = f"task.train_data.input_path={data}/train*,task.validation_data.input_path={data}/valid*"
    if not any(arg.startswith("--params_override") for arg in extra):
        command.append(f"--params_override={overrides}")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)


def _summary_steps(model_dir, subdir, tag):
    steps = []
    for path in sorted(glob.glob(os.path.join(model_dir, subdir, "events.out.tfevents.*"))):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            steps.extend(event.step for value in event.summary.value if value.tag == tag)
    return sorted(steps)


def _global_step(checkpoint):
    return int(tf.train.load_checkpoint(checkpoint).get_tensor("global_step/.ATTRIBUTES/VARIABLE_VALUE"))


def test_train_and_eval_end_to_end_then_resume(tfrecords, tmp_path):
    data, _, _ = tfrecords
    model_dir = tmp_path / "model"
    run = _train(model_dir, data)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "MirroredStrategy with 2 replicas in sync" in run.stderr
    assert os.path.exists(model_dir / "params.yaml")
    assert "evonorm_b0" in (model_dir / "params.yaml").read_text()
    assert _global_step(str(model_dir / "ckpt-4")) == 4
    assert os.path.exists(model_dir / "ckpt-2.index")
    assert _summary_steps(model_dir, "train", "training_loss") == [2, 4]
    assert _summary_steps(model_dir, "validation", "accuracy") == [2, 4]
    # the checkpoint holds the EvoNorm-B0 weights and moving variances of the backbone
    names = tf.train.load_checkpoint(str(model_dir / "ckpt-4")).get_variable_to_shape_map()
    assert sum("moving_variance" in name and "OPTIMIZER" not in name for name in names) >= 9

    resumed = _train(
        model_dir, data,
        f"--params_override=task.train_data.input_path={data}/train*,"
        f"task.validation_data.input_path={data}/valid*,trainer.train_steps=6",
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _global_step(str(model_dir / "ckpt-6")) == 6
    # steps 2 and 4 were not trained again: one summary per step
    assert _summary_steps(model_dir, "train", "training_loss") == [2, 4, 6]


def test_bad_experiment_name_exits_nonzero_with_message(tmp_path):
    run = _train(tmp_path / "model", tmp_path, "--experiment=evonorm_resnet_imagenett")
    assert run.returncode != 0
    assert "unknown experiment 'evonorm_resnet_imagenett'" in run.stderr
    assert "evonorm_resnet_imagenet" in run.stderr


def test_bad_override_exits_nonzero_with_message(tmp_path):
    run = _train(tmp_path / "model", tmp_path,
                 "--params_override=task.model.backbone.evonorm_resnet.norm_act.type=evonorm_s0")
    assert run.returncode != 0
    assert "invalid configuration" in run.stderr and "norm_act" in run.stderr
    assert not os.path.exists(tmp_path / "model" / "checkpoint")


@pytest.mark.parametrize(
    "script, args, config, override",
    [
        ("launch_resnet50.sh", ["evonorm_b1", "gpu"], "resnet50_evonorm_b0_gpu.yaml", "norm_activation.type=evonorm_b1"),
        ("launch_resnet50.sh", ["bn_relu"], "resnet50_bn_relu_tpu.yaml", None),
        ("launch_efficientnet.sh", ["b5", "evonorm_s2"], "efficientnet_b5_evonorm_s0_tpu.yaml", "type=evonorm_s2"),
    ],
)
def test_launch_scripts_build_the_training_command(script, args, config, override):
    env = dict(os.environ, DRY_RUN="1", MODEL_DIR="gs://bucket/runs", DATA_DIR="gs://bucket/imagenet",
               ACCELERATOR_TYPE="v3-8")
    run = subprocess.run(["bash", os.path.join(ROOT, "tpu_scripts", script), *args],
                         capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    command = run.stdout.replace("\\", "")
    assert f"--config_file=official_configs/{config}" in command
    assert os.path.exists(os.path.join(ROOT, "official_configs", config))
    assert "task.train_data.input_path=gs://bucket/imagenet/train*" in command
    assert ("--tpu=local" in command) == config.endswith("_tpu.yaml")
    if override:
        assert override in command
    bad = subprocess.run(["bash", os.path.join(ROOT, "tpu_scripts", script), "b0" if "efficient" in script else "x", "x"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode != 0 and "unknown" in bad.stderr

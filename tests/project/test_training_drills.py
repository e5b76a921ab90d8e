"""Failure drills: a training run killed with SIGKILL resumes; two localhost workers train together.

* SIGKILL drill: `tpu_scripts/train.py` on the CPU smoke config is killed
  (SIGKILL, no chance to clean up) once its first checkpoint is committed, then
  run again with the same `--model_dir`: it resumes from the newest
  checkpoint and reaches the same final step; every checkpoint on disk
  loads; the training-loss summaries continue (finite, every interval's step
  present) rather than restart at step 0.
* Multi-worker drill: two worker processes on 127.0.0.1 (free ports,
  `TF_CONFIG`) under `tf.distribute.MultiWorkerMirroredStrategy`
  (tests/multi_worker_task.py): a synchronized EvoNorm-B0 gives each worker
  the outputs and the moving variance of one layer on the global batch, and a
  small model trains with identical losses on both workers.

Both start several TensorFlow processes (tens of seconds each on 2 cores):
`@pytest.mark.slow`, run with `pytest -m slow tests/project/test_training_drills.py`.
"""

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from multi_worker_task import SHAPE, TRAIN_STEPS, global_batch, make_layer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "tpu_scripts", "train.py")
SMOKE_YAML = os.path.join(ROOT, "official_configs", "resnet_evonorm_b0_cpu_smoke.yaml")
WORKER = os.path.join(ROOT, "tests", "multi_worker_task.py")


def _environment(**extra):
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT, **extra)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """Tiny ImageNet-format TFRecords (4 classes of 40x40 images)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "prepare_imagenet", os.path.join(ROOT, "tpu_scripts", "prepare_imagenet.py"))
    prepare_imagenet = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare_imagenet)
    root = tmp_path_factory.mktemp("drill_data")
    prepare_imagenet.write_synthetic_image_folder(str(root / "images"), 4, 8, 40, seed=0)
    prepare_imagenet.prepare(str(root / "images"), str(root / "records"), "train", num_shards=2)
    return root / "records"


def _train_command(model_dir, data, train_steps):
    return [
        sys.executable, TRAIN, "--experiment=evonorm_resnet_imagenet", "--mode=train",
        f"--model_dir={model_dir}", f"--config_file={SMOKE_YAML}",
        f"--params_override=task.train_data.input_path={data}/train*,trainer.train_steps={train_steps},"
        "trainer.checkpoint_interval=2,trainer.summary_interval=2,trainer.steps_per_loop=2,"
        "trainer.max_to_keep=10",
    ]


def _loss_summaries(model_dir):
    values = []
    for path in sorted(glob.glob(os.path.join(model_dir, "train", "events.out.tfevents.*"))):
        try:
            for record in tf.data.TFRecordDataset(path):
                event = tf.compat.v1.Event.FromString(record.numpy())
                for value in event.summary.value:
                    if value.tag == "training_loss":
                        values.append((event.step, float(tf.make_ndarray(value.tensor))))
        except tf.errors.DataLossError:  # a record cut short by the kill
            pass
    return values


@pytest.mark.slow
def test_sigkill_during_training_then_resume(records, tmp_path):
    model_dir = tmp_path / "model"
    steps = 8
    process = subprocess.Popen(_train_command(model_dir, records, steps), env=_environment(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 1800
    # Kill once a checkpoint is committed (listed in the `checkpoint` state file, written after
    # the checkpoint's files): killed earlier, the run rightly starts again from step 0.
    while tf.train.latest_checkpoint(str(model_dir)) is None:
        assert process.poll() is None, f"training ended before its first checkpoint: {process.stderr.read()}"
        assert time.time() < deadline, "no checkpoint within 30 minutes"
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    killed_at = _loss_summaries(model_dir)
    assert not glob.glob(str(model_dir / f"ckpt-{steps}.index")), "the run finished before the kill"

    resumed = subprocess.run(_train_command(model_dir, records, steps), env=_environment(),
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "restored from checkpoint" in resumed.stdout + resumed.stderr
    # Same final step as an uninterrupted run.
    final = tf.train.latest_checkpoint(str(model_dir))
    assert final.endswith(f"ckpt-{steps}")
    # Every checkpoint on disk is intact (loads, holds the step it is named after).
    checkpoints = sorted(glob.glob(str(model_dir / "ckpt-*.index")))
    assert len(checkpoints) >= 2
    for index in checkpoints:
        prefix = index[:-len(".index")]
        reader = tf.train.load_checkpoint(prefix)
        assert int(reader.get_tensor("global_step/.ATTRIBUTES/VARIABLE_VALUE")) == int(prefix.split("-")[-1])
    # The loss curve continues: each interval's step has a finite loss, and the
    # resumed run wrote only steps after the checkpoint it restored.
    losses = _loss_summaries(model_dir)
    assert {step for step, _ in losses} == set(range(2, steps + 1, 2))
    assert all(np.isfinite(loss) for _, loss in losses)
    new = losses[len(killed_at):]
    assert new and min(step for step, _ in new) > 2, (killed_at, new)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@pytest.mark.slow
def test_two_localhost_workers_synchronize_batch_statistics(tmp_path):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(subprocess.Popen(
            [sys.executable, WORKER, str(tmp_path / f"worker{index}.npz")],
            env=_environment(TF_CONFIG=json.dumps(config)), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True))
    for process in processes:
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output[-3000:]
    results = [np.load(tmp_path / f"worker{index}.npz") for index in range(2)]

    # One worker, one layer, the whole global batch.
    x = global_batch()
    single = make_layer()
    expected = single(x, training=True).numpy()
    half = SHAPE[0] // 2
    for index, result in enumerate(results):
        assert int(result["task"]) == index
        np.testing.assert_allclose(result["outputs"], expected[index * half:(index + 1) * half],
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(result["moving_variance"], single.moving_variance.numpy(), rtol=1e-5)
    # Per-worker statistics would differ: the halves have different variances.
    per_worker = make_layer()(x[:half], training=True).numpy()
    assert np.max(np.abs(per_worker - expected[:half])) > 1e-2
    # Both workers trained the same model: identical, finite, decreasing losses.
    assert len(results[0]["losses"]) == TRAIN_STEPS
    np.testing.assert_allclose(results[0]["losses"], results[1]["losses"], rtol=1e-6)
    assert np.all(np.isfinite(results[0]["losses"]))
    assert results[0]["losses"][-1] < results[0]["losses"][0]

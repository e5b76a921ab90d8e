"""Clean consoles: no TensorFlow C++ lines from the demo, each Model Garden line once, progress kept."""

import collections
import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "tpu_scripts", "train.py")
SMOKE_YAML = os.path.join(ROOT, "official_configs", "resnet_evonorm_b0_cpu_smoke.yaml")
CONSOLE_LOGGING = os.path.join(ROOT, "evonorm_tf", "console_logging.py")


def _without_level(**extra):
    """The test's environment without a user-set C++ log level, plus `extra`."""
    environment = dict(os.environ, PYTHONPATH=ROOT)
    for name in ("TF_CPP_MIN_LOG_LEVEL", "EVONORM_TF_QUIET_NATIVE_LOGS"):
        environment.pop(name, None)
    environment.update(extra)
    return environment


def _load_console_logging():
    spec = importlib.util.spec_from_file_location("console_logging", CONSOLE_LOGGING)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("line, native", [
    (b"2026-12-06 20:13:46.030936: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:31] Could not find", True),
    (b"2026-12-06 20:13:47.908995: E external/local_xla/xla/stream_executor/cuda/cuda_platform.cc:51] x", True),
    (b"I0000 00:00:1796588151.306214    8917 device_compiler.h:196] Compiled cluster using XLA!", True),
    (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR", True),
    (b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with", True),
    (b"[1/2] evonorm_b0 bs=64  seed=0 done: test accuracy 0.244, 40.7 ms/step", False),
    (b"python -m evonorm_tf.demo: error: --epochs must be >= 1, received 0", False),
    (b"Traceback (most recent call last):", False),
])
def test_native_log_line_pattern(line, native):
    assert bool(_load_console_logging().NATIVE_LOG_LINE.match(line)) == native


def test_descriptor_2_filter_drops_native_lines_only():
    script = f"""
import importlib.util, os, sys
spec = importlib.util.spec_from_file_location("console_logging", {CONSOLE_LOGGING!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module.quiet_native_logs()
os.write(2, b"I0000 00:00:1796588151.306214    8917 device_compiler.h:196] Compiled cluster using XLA!\\n")
os.write(2, b"native but not a log line\\n")
print("python stderr line", file=sys.stderr)
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=_without_level(), timeout=60)
    assert run.returncode == 0, run.stderr
    assert sorted(run.stderr.splitlines()) == ["native but not a log line", "python stderr line"]


def test_a_user_level_disables_the_filter():
    script = f"""
import importlib.util, os
spec = importlib.util.spec_from_file_location("console_logging", {CONSOLE_LOGGING!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module.quiet_native_logs()
os.write(2, b"I0000 00:00:1796588151.306214    8917 device_compiler.h:196] Compiled cluster using XLA!\\n")
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=_without_level(TF_CPP_MIN_LOG_LEVEL="0"), timeout=60)
    assert "Compiled cluster using XLA!" in run.stderr


def test_demo_console_has_progress_and_no_tensorflow_noise(tmp_path):
    """Default environment (no TF_CPP_MIN_LOG_LEVEL): stderr stays empty, progress goes to stdout.

    Two norm-acts at two batch sizes, one a partial last batch: our
    tf.functions see several shapes, and must not warn about retracing.
    """
    run = subprocess.run(
        [sys.executable, "-m", "evonorm_tf.demo", "--quick", "--norm-acts", "evonorm_b0,evonorm_s0",
         "--batch-sizes", "32,7", "--train-subset", "64", "--curve-points", "2",
         "--output-dir", str(tmp_path)],
        capture_output=True, text=True, env=_without_level(), cwd=ROOT, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr.strip() == "", run.stderr[-3000:]
    assert "retracing" not in run.stdout
    done = [line for line in run.stdout.splitlines() if " done: test accuracy " in line]
    assert len(done) == 4, run.stdout
    assert "acc @bs32" in run.stdout


def test_train_console_shows_each_model_garden_line_once(tmp_path):
    """Orbit prints its progress to stdout and logs it through absl: the console gets it once."""
    prepare = importlib.util.spec_from_file_location(
        "prepare_imagenet", os.path.join(ROOT, "tpu_scripts", "prepare_imagenet.py"))
    prepare_imagenet = importlib.util.module_from_spec(prepare)
    prepare.loader.exec_module(prepare_imagenet)
    prepare_imagenet.write_synthetic_image_folder(str(tmp_path / "images"), 2, 4, 32, seed=0)
    prepare_imagenet.prepare(str(tmp_path / "images"), str(tmp_path / "records"), "train", num_shards=1)
    run = subprocess.run(
        [sys.executable, TRAIN, "--experiment=evonorm_resnet_imagenet", "--mode=train",
         f"--model_dir={tmp_path / 'model'}", f"--config_file={SMOKE_YAML}",
         f"--params_override=task.train_data.input_path={tmp_path}/records/train*,trainer.train_steps=2"],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3"),
        cwd=ROOT, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    console = run.stdout + run.stderr
    # Progress lines stay, once each.
    assert console.count("train | step:      0 | training until step 2...") == 1, console[-3000:]
    assert console.count("saved checkpoint to") == 1, console[-3000:]
    # Each log record reaches the console once: no line twice with the same timestamp (two absl
    # handlers), and no absl message echoed in another format (python logging's, or a print).
    absl_format = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\] (.*)$")
    lines = console.splitlines()
    timestamped = [line for line in lines if absl_format.match(line)]
    repeated = [line for line, count in collections.Counter(timestamped).items() if count > 1]
    assert not repeated, repeated
    messages = {absl_format.match(line).group(1).strip() for line in timestamped}
    messages.discard("")
    echoed = [line for line in lines if not absl_format.match(line) and line.strip()
              and any(line.strip().endswith(message) for message in messages)]
    assert not echoed, echoed[:10]
    assert "retracing" not in console


def test_orbit_echo_filter_drops_only_printed_controller_lines():
    """absl names `_log`'s caller, so the filter goes by file and level (unit check of the rule)."""
    import logging

    echo_filter = _load_console_logging()._OrbitEchoFilter()

    def record(path, message, level=logging.INFO):
        return logging.LogRecord("absl", level, path, 535, message, None, None, func="train")

    assert not echo_filter.filter(record("/site-packages/orbit/controller.py", "train | step: 2 | ..."))
    assert echo_filter.filter(record("/site-packages/orbit/controller.py", "Sync on async checkpoint saving."))
    assert echo_filter.filter(record("/site-packages/orbit/controller.py", "slow", logging.WARNING))
    assert echo_filter.filter(record("/site-packages/official/core/train_utils.py", "Saving experiment"))

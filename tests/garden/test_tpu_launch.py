"""tpu_scripts: TPU VM commands by topology, detached runs, the install and the TPU check.

No TPU is reached here: the gcloud commands are checked as `DRY_RUN=1` prints
them (what the scripts run is the same string), the detached runner runs a
short shell command, the install's package resolution is checked with pip's
`--dry-run --report`, and the TPU check must fail on this CPU-only machine.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = os.path.join(ROOT, "tpu_scripts")
PJRT = "NEXT_PLUGGABLE_DEVICE_USE_C_API=true TF_PLUGGABLE_DEVICE_LIBRARY_PATH=/lib/libtpu.so"
DATA = r"--params_override=task.train_data.input_path=gs://b/imagenet/train\*\,task.validation_data.input_path=gs://b/imagenet/valid\*"
SSH = "gcloud compute tpus tpu-vm ssh evonorm-tpu --zone=europe-west4-a --worker=0 --command="


def _bash(script, *args, **env):
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("ACCELERATOR_TYPE", "RUNTIME_VERSION", "TPU_NAME", "PROJECT")}
    environment.update(env)
    return subprocess.run(["bash", os.path.join(SCRIPTS, script), *args], capture_output=True, text=True,
                          env=environment, cwd=ROOT, timeout=120)


def _launch(accelerator, script="launch_resnet50.sh", *args):
    return _bash(script, *(args or ("evonorm_b0",)), DRY_RUN="1", MODEL_DIR="gs://b/runs",
                 DATA_DIR="gs://b/imagenet", ACCELERATOR_TYPE=accelerator)


TRAIN = ("tpu_scripts/run_detached.sh python3 tpu_scripts/train.py --mode=train_and_eval {tpu} "
         "--experiment=evonorm_resnet_imagenet --config_file=official_configs/resnet50_evonorm_b0_tpu.yaml "
         "--model_dir=gs://b/runs/resnet50_evonorm_b0_tpu " + DATA)


@pytest.mark.parametrize("accelerator, hosts, environment, tpu", [
    ("v3-8", 1, PJRT, "--tpu=local"),
    ("v4-8", 1, PJRT, "--tpu=local"),
    ("v3-32", 4, "TPU_LOAD_LIBRARY=0", "--tpu=evonorm-tpu"),
])
def test_launch_runs_by_topology_on_worker_zero(accelerator, hosts, environment, tpu):
    run = _launch(accelerator)
    assert run.returncode == 0, run.stderr
    remote = f"cd evonorm_tf && env {environment} " + TRAIN.format(tpu=tpu)
    assert run.stdout.splitlines() == [f"# {accelerator}: {hosts} host(s)", f"{SSH}'{remote}'"]


def test_launch_command_is_shell_ready():
    """The printed line, parsed by a shell, gives --command the remote command train.py's flags need."""
    line = _launch("v3-32").stdout.splitlines()[1]
    words = subprocess.run(["bash", "-c", f"set -- {line}; printf '%s\\n' \"$@\""], capture_output=True,
                           text=True, check=True).stdout.splitlines()
    remote = words[-1][len("--command="):]
    flags = subprocess.run(["bash", "-c", f"set -- {remote.split(' && ', 1)[1]}; printf '%s\\n' \"$@\""],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    assert flags[:4] == ["env", "TPU_LOAD_LIBRARY=0", "tpu_scripts/run_detached.sh", "python3"]
    assert flags[-1] == ("--params_override=task.train_data.input_path=gs://b/imagenet/train*,"
                         "task.validation_data.input_path=gs://b/imagenet/valid*")


def test_maskrcnn_launch_on_a_pod_slice():
    run = _launch("v3-32", "launch_maskrcnn.sh", "evonorm_b0")
    assert run.returncode == 0, run.stderr
    line = run.stdout.splitlines()[1]
    assert "env TPU_LOAD_LIBRARY=0 tpu_scripts/run_detached.sh" in line and "--tpu=evonorm-tpu" in line
    assert "--tpu=local" not in line and "LIBRARY_PATH" not in line


@pytest.mark.parametrize("accelerator", ["v3-31", "v9-8", "tpu-v3-8", ""])
def test_launch_rejects_an_unknown_accelerator_type_in_one_line(accelerator):
    run = _launch(accelerator)
    assert run.returncode == 2 and run.stdout == ""
    assert len(run.stderr.strip().splitlines()) == 1 and "ACCELERATOR_TYPE" in run.stderr


def test_gpu_target_runs_here_without_tpu_flags():
    run = _bash("launch_resnet50.sh", "bn_relu", "gpu", DRY_RUN="1", MODEL_DIR="/runs", DATA_DIR="/data")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("python3 tpu_scripts/train.py --mode=train_and_eval --experiment=")
    assert "--tpu" not in run.stdout and "gcloud" not in run.stdout


@pytest.mark.parametrize("accelerator, image", [("v3-8", ""), ("v4-8", ""), ("v3-32", "tpu-vm-tf-2.20.0-pod-pjrt")])
def test_create_tpu_vm_by_topology(accelerator, image):
    run = _bash("create_tpu_vm.sh", DRY_RUN="1", ACCELERATOR_TYPE=accelerator, RUNTIME_VERSION=image,
                REPO_URL="https://example.org/evonorm_tf.git")
    assert run.returncode == 0, run.stderr
    image = image or "tpu-ubuntu2204-base"
    lines = run.stdout.splitlines()
    assert lines[1] == ("gcloud compute tpus tpu-vm create evonorm-tpu --zone=europe-west4-a "
                        f"--accelerator-type={accelerator} --version={image}")
    setup = "set -e; rm -rf evonorm_tf && git clone https://example.org/evonorm_tf.git evonorm_tf && cd evonorm_tf && "
    if accelerator == "v3-32":
        assert lines[2:] == [
            f"{SSH}'{setup}CHECK=0 tpu_scripts/install_on_tpu_vm.sh'",
            f"{SSH}'cd evonorm_tf && TPU_LOAD_LIBRARY=0 python3 tpu_scripts/check_tpu.py --tpu=evonorm-tpu'",
        ]
    else:
        assert lines[2:] == [f"{SSH}'{setup}tpu_scripts/install_on_tpu_vm.sh'"]


def test_create_pod_slice_needs_a_tensorflow_pod_image():
    run = _bash("create_tpu_vm.sh", DRY_RUN="1", ACCELERATOR_TYPE="v3-32", REPO_URL="x")
    assert run.returncode == 2 and run.stdout == ""
    assert len(run.stderr.strip().splitlines()) == 1 and "RUNTIME_VERSION" in run.stderr


# --- detached runs ----------------------------------------------------------------------------------


def _detached(state, model_dir, script):
    env = dict(os.environ, RUN_STATE_DIR=str(state))
    return subprocess.run([os.path.join(SCRIPTS, "run_detached.sh"), "bash", "-c", script, f"--model_dir={model_dir}"],
                          capture_output=True, text=True, env=env, timeout=60)


def _wait_for(path, text, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if os.path.exists(path) and text in open(path).read():
            return open(path).read()
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in {path} after {seconds} s")


def test_run_detached_survives_the_caller_logs_in_model_dir_and_refuses_a_second_copy(tmp_path):
    model_dir, state = tmp_path / "model", tmp_path / "state"
    gate = tmp_path / "gate"
    started = _detached(state, model_dir, f"echo step 1 $0; while [ ! -e {gate} ]; do sleep 0.1; done; echo step 2")
    assert started.returncode == 0, started.stderr
    assert f"log: {model_dir}/train.log" in started.stdout
    log = _wait_for(model_dir / "train.log", "step 1 --model_dir=")
    (pid_file,) = list(state.iterdir())[0].glob("pid")
    pid = int(pid_file.read_text())
    # Its own session: a hang-up of the SSH session that started it does not reach it.
    assert os.getsid(pid) == pid != os.getsid(0)

    again = _detached(state, model_dir, "echo never")
    assert again.returncode == 1 and "already running" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1

    gate.write_text("")
    log = _wait_for(model_dir / "train.log", "exit status 0")
    assert log.index("step 1") < log.index("step 2") < log.index("exit status 0")
    assert "never" not in log
    # Ended: the same command starts again and appends to the same log (train.py then resumes).
    _wait_for_gone(pid_file)
    resumed = _detached(state, model_dir, "echo step 3; exit 3")
    assert resumed.returncode == 0, resumed.stderr
    log = _wait_for(model_dir / "train.log", "exit status 3")
    assert log.index("step 2") < log.index("step 3")


def _wait_for_gone(path, seconds=30):
    deadline = time.time() + seconds
    while os.path.exists(path) and time.time() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(path)


def test_run_detached_needs_a_model_dir(tmp_path):
    run = subprocess.run([os.path.join(SCRIPTS, "run_detached.sh"), "echo", "hi"], capture_output=True, text=True,
                         env=dict(os.environ, RUN_STATE_DIR=str(tmp_path)), timeout=60)
    assert run.returncode == 2 and "--model_dir" in run.stderr and run.stdout == ""


# --- the install ------------------------------------------------------------------------------------


def _install_dry_run(python_dir):
    env = dict(os.environ, DRY_RUN="1", PATH=f"{python_dir}:{os.environ['PATH']}",
               PIP=f"{sys.executable} -m pip")
    return subprocess.run(["bash", os.path.join(SCRIPTS, "install_on_tpu_vm.sh")], capture_output=True,
                          text=True, env=env, timeout=300)


def test_install_on_a_base_image_keeps_tensorflow_tpu(tmp_path):
    # A Python without TensorFlow, as on tpu-ubuntu2204-base.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "base")], check=True)
    run = _install_dry_run(tmp_path / "base" / "bin")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == (f"{sys.executable} -m pip install tensorflow-tpu==2.20.0 ./tpu_scripts/tensorflow_tpu_alias "
                        "-e . -f https://storage.googleapis.com/libtpu-tf-releases/index.html")
    if not os.path.exists("/lib/libtpu.so"):
        assert lines[1].startswith("sudo ln -s ") and lines[1].endswith(" /lib/libtpu.so")
    assert lines[-1] == f"env {PJRT} python3 tpu_scripts/check_tpu.py --tpu=local"


def test_install_on_a_tensorflow_image_pins_its_tensorflow(tmp_path):
    # This Python has a `tensorflow` distribution, as a TensorFlow TPU VM image.
    import tensorflow as tf

    wrapper = tmp_path / "python3"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    run = _install_dry_run(tmp_path)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith(f"TensorFlow {tf.__version__} from the image; constraints: tensorflow=={tf.__version__}")
    assert lines[1].startswith(f"{sys.executable} -m pip install --constraint ") and lines[1].endswith(" -e .")
    assert "tensorflow-tpu" not in lines[1]


def test_alias_distribution_is_tensorflow_requiring_tensorflow_tpu(tmp_path):
    source = shutil.copytree(os.path.join(SCRIPTS, "tensorflow_tpu_alias"), tmp_path / "alias")
    report = tmp_path / "report.json"
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-build-isolation",
                          "--no-index", "--quiet", "--report", str(report), str(source)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    (install,) = json.loads(report.read_text())["install"]
    metadata = install["metadata"]
    assert (metadata["name"], metadata["version"]) == ("tensorflow", "2.20.0")
    assert metadata["requires_dist"] == ["tensorflow-tpu==2.20.0"]
    # It stands for the version the install script pins and setup.py requires.
    assert "TF_VERSION:-2.20.0" in open(os.path.join(SCRIPTS, "install_on_tpu_vm.sh")).read()
    assert "tensorflow~=2.20.0" in open(os.path.join(ROOT, "setup.py")).read()


@pytest.mark.slow
def test_install_resolves_tensorflow_to_the_tpu_build(tmp_path):
    """The base-image install, resolved by pip against the package index in an empty environment."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "empty")], check=True)
    report = tmp_path / "report.json"
    run = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(tmp_path / "empty" / "bin" / "python"), "install", "--dry-run",
         "--quiet", "--report", str(report), "tensorflow-tpu==2.20.0", "./tpu_scripts/tensorflow_tpu_alias", "-e", "."],
        capture_output=True, text=True, cwd=ROOT, timeout=1800)
    if run.returncode != 0 and "No matching distribution found for tensorflow-tpu" in run.stderr:
        pytest.skip("the package index lists no tensorflow-tpu 2.20.0 for this platform")
    assert run.returncode == 0, run.stderr[-3000:]
    installs = {item["metadata"]["name"].lower().replace("_", "-"): item for item in json.loads(report.read_text())["install"]}
    assert installs["tensorflow-tpu"]["metadata"]["version"] == "2.20.0"
    # `tensorflow` is the alias (a local directory), never the plain wheel from the index.
    assert installs["tensorflow"]["download_info"]["url"].endswith("tpu_scripts/tensorflow_tpu_alias")
    assert "dir_info" in installs["tensorflow"]["download_info"]
    assert {"tf-models-official", "tf-keras", "tensorflow-text", "libtpu"} <= set(installs)
    shutil.rmtree(os.path.join(SCRIPTS, "tensorflow_tpu_alias", "tensorflow.egg-info"), ignore_errors=True)


# --- the TPU check and the first steps ----------------------------------------------------------------


def test_check_tpu_fails_in_one_line_without_a_tpu():
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("TPU_NAME", None)
    run = subprocess.run([sys.executable, os.path.join(SCRIPTS, "check_tpu.py")], capture_output=True, text=True,
                         env=env, timeout=600)
    assert run.returncode == 1 and run.stdout == ""
    lines = [line for line in run.stderr.splitlines() if line.startswith("check_tpu.py:")]
    assert len(lines) == 1 and "no TPU" in lines[0] and "--tpu=local" in lines[0]


def test_first_steps_builds_trains_and_times_on_the_default_strategy():
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run(
        [sys.executable, os.path.join(SCRIPTS, "first_steps.py"), "--experiment=evonorm_resnet_imagenet",
         "--config_file=official_configs/resnet_evonorm_b0_cpu_smoke.yaml",
         "--params_override=runtime.distribution_strategy=one_device,task.train_data.global_batch_size=4",
         "--steps=3"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert lines[0] == "devices: 1 x CPU (/job:localhost/replica:0/task:0/device:CPU:0)"
    assert lines[1] == "strategy: OneDeviceStrategy, 1 replicas in sync, global batch 4 (4 per replica)"
    assert lines[2].startswith("first step (tracing and compilation): ")
    assert lines[3].startswith("step time: median ") and " over 2 steps, " in lines[3] and "images/s" in lines[3]


def test_first_steps_rejects_a_detection_experiment_in_one_line():
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run([sys.executable, os.path.join(SCRIPTS, "first_steps.py"),
                          "--experiment=evonorm_maskrcnn_resnetfpn_coco"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert run.returncode != 0
    assert run.stderr.strip().splitlines()[-1] == (
        "first_steps.py: --experiment=evonorm_maskrcnn_resnetfpn_coco is not an image classification experiment")


def test_mode_eval_and_spinenet_launches():
    run = _bash("launch_maskrcnn.sh", "evonorm_b0", "spinenet96", DRY_RUN="1", MODE="eval", MODEL_DIR="gs://b/runs",
                DATA_DIR="gs://b/coco", ACCELERATOR_TYPE="v3-32")
    assert run.returncode == 0, run.stderr
    line = run.stdout.splitlines()[1]
    assert "train.py --mode=eval --tpu=evonorm-tpu --experiment=evonorm_maskrcnn_spinenet_coco" in line
    assert "--config_file=official_configs/maskrcnn_spinenet96_evonorm_b0_tpu.yaml" in line
    for args, env in ((("evonorm_s0", "spinenet96"), {}), (("evonorm_b0", "spinenet50"), {}),
                      (("evonorm_b0",), {"MODE": "predict"})):
        bad = _bash("launch_maskrcnn.sh", *args, DRY_RUN="1", MODEL_DIR="gs://b/runs", DATA_DIR="gs://b/coco",
                    ACCELERATOR_TYPE="v3-32", **env)
        assert bad.returncode == 2 and bad.stdout == "" and len(bad.stderr.strip().splitlines()) == 1

"""Every command answers bad input with one line on stderr, a non-zero exit and no traceback.

Each case runs one entry point as a user would, in a subprocess: the
`tpu_scripts/*.py` drivers (with `TF_CPP_MIN_LOG_LEVEL=3`, which silences
TensorFlow's C++ start-up lines) and the `python -m evonorm_tf.*` commands
(without it: they keep those lines off the console themselves). The one line
must name the bad value (`expected`). Set `EVONORM_TF_TRACEBACK=1` to see
a traceback instead (evonorm_tf/command_line.py).
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "tpu_scripts", "train.py")
PREPARE_COCO = os.path.join(ROOT, "tpu_scripts", "prepare_coco.py")
PREPARE_IMAGENET = os.path.join(ROOT, "tpu_scripts", "prepare_imagenet.py")
SMOKE_YAML = os.path.join(ROOT, "official_configs", "resnet_evonorm_b0_cpu_smoke.yaml")
BACKBONE = "task.model.backbone.evonorm_resnet.norm_activation"


def _train(tmp, *flags, data=True):
    """train.py on the CPU smoke config; `flags` replace the defaults of the same name.

    `--params_override` values are appended to one that points the training
    data at a (dummy) file, unless `data` is False.
    """
    defaults = {"--experiment": "evonorm_resnet_imagenet", "--mode": "train", "--model_dir": f"{tmp}/model",
                "--config_file": SMOKE_YAML}
    overrides = [f"task.train_data.input_path={tmp}/records/train*"] if data else []
    extra = []
    for flag in flags:
        name, _, value = flag.partition("=")
        if name == "--params_override":
            overrides.append(value)
        elif name in defaults:
            defaults[name] = value
        else:
            extra.append(flag)
    command = [sys.executable, TRAIN, *(f"{name}={value}" for name, value in defaults.items()), *extra]
    if overrides:
        command.append("--params_override=" + ",".join(overrides))
    return command


def _script(path, *flags):
    return [sys.executable, path, *flags]


def _module(name, *flags):
    return [sys.executable, "-m", name, *flags]


DEMO = "evonorm_tf.demo"
SIGNAL = "evonorm_tf.analysis.signal_propagation"
DIGITS_GAN = "evonorm_tf.gan.train_digits"

# (id, command builder taking the case's tmp folder, text the line must contain)
CASES = [
    # tpu_scripts/train.py
    ("train-missing-config-file", lambda t: _train(t, f"--config_file={t}/nowhere.yaml"), "nowhere.yaml"),
    ("train-config-file-is-folder", lambda t: _train(t, f"--config_file={t}"), "no such YAML file"),
    ("train-malformed-yaml", lambda t: _train(t, f"--config_file={t}/broken.yaml"), "not valid YAML"),
    ("train-yaml-not-a-mapping", lambda t: _train(t, f"--config_file={t}/list.yaml"), "mapping"),
    ("train-malformed-override", lambda t: _train(t, "--params_override=task.model.num_classes"),
     "task.model.num_classes"),
    ("train-unknown-override-key", lambda t: _train(t, f"--params_override={BACKBONE}.typ=evonorm_s0"),
     "typ"),
    ("train-unknown-experiment", lambda t: _train(t, "--experiment=evonorm_resnet_imagenett"),
     "evonorm_resnet_imagenett"),
    ("train-unknown-norm-act", lambda t: _train(t, f"--params_override={BACKBONE}.type=evonorm_s9"),
     "evonorm_s9"),
    ("train-unknown-model-id", lambda t: _train(
        t, "--params_override=task.model.backbone.evonorm_resnet.model_id=11"), "model_id=11"),
    ("train-groups-zero", lambda t: _train(
        t, f"--params_override={BACKBONE}.type=evonorm_s0,{BACKBONE}.groups=0"), "groups"),
    # 3 divides none of ResNet's widths (64, 128, ...): model construction names the layer.
    ("train-groups-not-dividing-channels", lambda t: _train(
        t, f"--params_override={BACKBONE}.type=evonorm_s0,{BACKBONE}.groups=3"), "groups=3"),
    ("train-input-path-matches-nothing", lambda t: _train(
        t, f"--params_override=task.train_data.input_path={t}/nowhere/train*", data=False), "nowhere"),
    ("train-negative-train-steps", lambda t: _train(t, "--params_override=trainer.train_steps=-5"), "-5"),
    ("train-zero-batch-size", lambda t: _train(
        t, "--params_override=task.train_data.global_batch_size=0"), "global_batch_size"),
    ("train-negative-cpu-replicas", lambda t: _train(t, "--cpu_replicas=-1"), "cpu_replicas"),
    ("train-unknown-mode", lambda t: _train(t, "--mode=trian"), "trian"),
    ("train-missing-model-dir", lambda t: [arg for arg in _train(t) if not arg.startswith("--model_dir")],
     "model_dir"),
    ("train-unknown-flag", lambda t: _train(t, "--num_epochs=3"), "num_epochs"),
    # tpu_scripts/prepare_coco.py
    ("coco-missing-coco-dir", lambda t: _script(PREPARE_COCO, f"--coco_dir={t}/nowhere", f"--output_dir={t}/out"),
     "nowhere"),
    ("coco-missing-output-dir-flag", lambda t: _script(PREPARE_COCO, f"--coco_dir={t}"), "output_dir"),
    ("coco-zero-shards", lambda t: _script(PREPARE_COCO, f"--coco_dir={t}", f"--output_dir={t}/out",
                                           "--train_shards=0"), "train_shards"),
    ("coco-negative-shapes", lambda t: _script(PREPARE_COCO, "--generate_shapes", f"--coco_dir={t}/raw",
                                               f"--output_dir={t}/out", "--shapes_train_images=-4"), "-4"),
    # tpu_scripts/prepare_imagenet.py
    ("imagenet-missing-image-dir", lambda t: _script(PREPARE_IMAGENET, f"--image_dir={t}/nowhere",
                                                     f"--output_dir={t}/out"), "nowhere"),
    ("imagenet-zero-shards", lambda t: _script(PREPARE_IMAGENET, f"--image_dir={t}", f"--output_dir={t}/out",
                                               "--num_shards=0"), "num_shards"),
    ("imagenet-missing-labels-file", lambda t: _script(
        PREPARE_IMAGENET, f"--image_dir={t}", f"--output_dir={t}/out", f"--labels_file={t}/synsets.txt"),
     "synsets.txt"),
    ("imagenet-negative-classes", lambda t: _script(
        PREPARE_IMAGENET, f"--image_dir={t}", f"--output_dir={t}/out", "--synthetic_classes=-3"), "-3"),
    ("imagenet-unknown-split", lambda t: _script(
        PREPARE_IMAGENET, f"--image_dir={t}", f"--output_dir={t}/out", "--split=test"), "test"),
    ("imagenet-empty-folder", lambda t: _script(PREPARE_IMAGENET, f"--image_dir={t}/empty",
                                                f"--output_dir={t}/out"), "no class folders"),
    # python -m evonorm_tf.demo
    ("demo-unknown-norm-act", lambda t: _module(DEMO, "--norm-acts", "evonorm_s9"), "evonorm_s9"),
    ("demo-negative-batch-size", lambda t: _module(DEMO, "--batch-sizes=-2"), "-2"),
    ("demo-zero-epochs", lambda t: _module(DEMO, "--epochs", "0"), "--epochs"),
    ("demo-zero-train-subset", lambda t: _module(DEMO, "--train-subset", "0"), "--train-subset"),
    ("demo-small-image-size", lambda t: _module(DEMO, "--image-size", "4"), "--image-size"),
    ("demo-output-dir-is-file", lambda t: _module(DEMO, "--output-dir", f"{t}/list.yaml"), "list.yaml"),
    ("demo-unknown-model", lambda t: _module(DEMO, "--model", "vgg"), "vgg"),
    # python -m evonorm_tf.analysis.signal_propagation
    ("signal-unknown-backbone", lambda t: _module(SIGNAL, "--backbone", "vgg16", "--output", f"{t}/s.png"),
     "vgg16"),
    ("signal-unknown-norm-act", lambda t: _module(
        SIGNAL, "--backbone", "resnet20:bn_reluu", "--output", f"{t}/s.png"), "bn_reluu"),
    ("signal-unknown-depth", lambda t: _module(
        SIGNAL, "--backbone", "resnet7:bn_relu", "--output", f"{t}/s.png"), "resnet7"),
    ("signal-zero-batch-size", lambda t: _module(
        SIGNAL, "--backbone", "resnet20:bn_relu", "--output", f"{t}/s.png", "--batch-size", "0"),
     "--batch-size"),
    ("signal-missing-output-folder", lambda t: _module(
        SIGNAL, "--backbone", "resnet20:bn_relu", "--output", f"{t}/nowhere/s.png"), "nowhere"),
    # python -m evonorm_tf.gan.train_digits
    ("gan-unknown-norm-act", lambda t: _module(DIGITS_GAN, "--model_dir", f"{t}/gan", "--norm_act",
                                               "evonorm_s9"), "evonorm_s9"),
    ("gan-negative-steps", lambda t: _module(DIGITS_GAN, "--model_dir", f"{t}/gan", "--steps", "-1"),
     "--steps"),
    ("gan-zero-batch-size", lambda t: _module(DIGITS_GAN, "--model_dir", f"{t}/gan", "--batch_size", "0"),
     "--batch_size"),
    ("gan-missing-model-dir", lambda t: _module(DIGITS_GAN, "--steps", "3"), "model_dir"),
]


def _environment(command):
    environment = dict(os.environ, PYTHONPATH=ROOT)
    environment.pop("EVONORM_TF_TRACEBACK", None)
    if "-m" in command:  # the package's commands keep TensorFlow's C++ lines off stderr themselves
        environment.pop("TF_CPP_MIN_LOG_LEVEL", None)
    else:
        environment["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return environment


@pytest.fixture
def case_folder(tmp_path):
    """A folder with the files the cases refer to."""
    (tmp_path / "broken.yaml").write_text("task:\n  model: [unclosed\n")
    (tmp_path / "list.yaml").write_text("- task\n- runtime\n")
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "train-00000-of-00001").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    return tmp_path


# One case per entry point runs in CI (each starts TensorFlow: seconds); the rest with `pytest -m slow`.
CI_CASES = ("train-missing-config-file", "train-groups-zero", "train-input-path-matches-nothing",
            "coco-missing-coco-dir", "imagenet-missing-image-dir", "demo-negative-batch-size",
            "signal-unknown-backbone", "gan-negative-steps")




def _params():
    return [pytest.param(name, make_command, expected, id=name,
                         marks=() if name in CI_CASES else pytest.mark.slow)
            for name, make_command, expected in CASES]


@pytest.mark.parametrize("name, make_command, expected", _params())
def test_bad_input_gives_one_line_and_a_nonzero_exit(name, make_command, expected, case_folder):
    command = make_command(str(case_folder))
    run = subprocess.run(command, capture_output=True, text=True, env=_environment(command), cwd=ROOT,
                         timeout=600)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode != 0, f"exit 0 for {command}: {run.stdout[-2000:]}"
    assert "Traceback" not in run.stderr + run.stdout, run.stderr[-3000:]
    assert len(lines) == 1, "\n".join(lines[-20:])
    assert expected in lines[0], lines[0]
    assert "error" in lines[0], lines[0]

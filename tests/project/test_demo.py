"""The main job (`python -m evonorm_tf.demo`) and its digits pipeline, end to end but small."""

import contextlib
import io
import json
import runpy
import struct
import sys

import numpy as np
import pytest
import tf_keras

from evonorm_tf import demo
from evonorm_tf.data import digits


def _png_size(path):
    """(width, height) from a PNG's signature and IHDR chunk; raises if it is not a PNG."""
    with open(path, "rb") as handle:
        header = handle.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG: {header[:8]!r}"
    assert header[12:16] == b"IHDR"
    return struct.unpack(">II", header[16:24])


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One in-process `--quick` run of two norm-acts at two batch sizes."""
    output_dir = tmp_path_factory.mktemp("demo")
    argv = ["--quick", "--norm-acts", "evonorm_s0,bn_relu", "--batch-sizes", "16,2",
            "--output-dir", str(output_dir)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        results = demo.main(argv)
    return results, output_dir, printed.getvalue()


def test_quick_run_writes_png_and_json(quick_run):
    results, output_dir, _ = quick_run
    png = output_dir / "demo.png"
    width, height = _png_size(png)
    assert width >= 600 and height >= 600
    assert png.stat().st_size > 20_000  # bars and four curve panels, not an empty canvas
    saved = json.loads((output_dir / "results.json").read_text())
    assert [(run["norm_act"], run["batch_size"]) for run in saved["runs"]] == [
        ("evonorm_s0", 16), ("bn_relu", 16), ("evonorm_s0", 2), ("bn_relu", 2)
    ]
    assert len(results) == 4


def test_quick_run_prints_an_accuracy_per_run(quick_run):
    results, _, printed = quick_run
    lines = printed.splitlines()
    lines = lines[[index for index, line in enumerate(lines) if line.startswith("norm-act")][0]:]
    assert lines[0].split() == ["norm-act", "acc", "@bs16", "ms/step", "@bs16", "acc", "@bs2",
                                "ms/step", "@bs2"]
    assert len(lines) >= 4
    for line, result_pair in zip(lines[2:4], [results[0::2], results[1::2]]):
        cells = line.split()
        assert cells[0] == result_pair[0].norm_act
        assert float(cells[1]) == pytest.approx(result_pair[0].test_accuracy, abs=5e-4)
        assert float(cells[3]) == pytest.approx(result_pair[1].test_accuracy, abs=5e-4)
        assert float(cells[2]) > 0 and float(cells[4]) > 0  # ms/step


def test_quick_evonorm_s0_learns(quick_run):
    results, _, _ = quick_run
    s0_at_batch_2 = [r for r in results if r.norm_act == "evonorm_s0" and r.batch_size == 2][0]
    # 200 steps on 400 images: chance is 0.1; this setting reaches ~0.85.
    assert s0_at_batch_2.test_accuracy > 0.5
    assert s0_at_batch_2.train_loss[-1] < s0_at_batch_2.train_loss[0]
    assert len(s0_at_batch_2.curve_accuracy) == 4
    assert s0_at_batch_2.images_seen[-1] == 400


def test_table_shows_mean_and_std_over_seeds():
    runs = [demo.RunResult("evonorm_s0", 2, seed, accuracy, 3.0, [2], [1.0], [accuracy])
            for seed, accuracy in enumerate([0.8, 0.9])]
    table = demo.format_table(runs, ["evonorm_s0"], [2])
    assert "0.850 ± 0.071" in table  # sample standard deviation of 0.8 and 0.9


@pytest.mark.filterwarnings("ignore:'evonorm_tf.demo' found in sys.modules:RuntimeWarning")
def test_module_entry_point_help(monkeypatch, capsys):
    # What `python -m evonorm_tf.demo --help` runs, in this process.
    monkeypatch.setattr(sys, "argv", ["evonorm_tf.demo", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("evonorm_tf.demo", run_name="__main__")
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    for flag in ("--norm-acts", "--batch-sizes", "--seeds", "--output-dir", "--quick", "--model"):
        assert flag in printed


@pytest.mark.parametrize("argv, message", [
    (["--norm-acts", "evonorm_s9"], "evonorm_s9"),
    (["--batch-sizes", "0"], "received '0'"),
    (["--seeds", "a"], "received 'a'"),
    (["--model", "vgg"], "vgg"),
    (["--epochs", "0"], "received 0"),
])
def test_bad_flags_are_rejected_naming_the_value(argv, message, capsys):
    with pytest.raises(SystemExit):
        demo.parse_args(argv)
    assert message in capsys.readouterr().err


def test_every_norm_act_name_builds_the_convnet():
    for name in demo.factory.NORM_ACT_NAMES:
        model = demo.MODEL_BUILDERS["convnet"]((16, 16, 1), 10, name, groups=8)
        assert isinstance(model, tf_keras.Model)
        assert model.output_shape == (None, 10)
        # tf_keras tracks the norm-act weights (a Keras 3 layer here would not be).
        assert sum(1 for w in model.trainable_weights if "gamma" in w.name) == 4, name


def test_resnet20_plugs_into_the_builder_table():
    model = demo.MODEL_BUILDERS["resnet20"]((16, 16, 1), 10, "evonorm_s0", groups=8)
    assert model.output_shape == (None, 10)
    layer_types = {type(layer).__name__ for layer in model.submodules}
    assert "EvoNormS0" in layer_types and "BatchNormReLU" not in layer_types


def test_digits_split_is_fixed_stratified_and_upsampled():
    first = digits.load_digits_split(image_size=16, split_seed=0)
    again = digits.load_digits_split(image_size=16, split_seed=0)
    other = digits.load_digits_split(image_size=16, split_seed=1)
    assert first.train_images.shape == (1437, 16, 16, 1)
    assert first.test_images.shape == (360, 16, 16, 1)
    assert first.train_images.dtype == np.float32 and first.train_labels.dtype == np.int32
    np.testing.assert_array_equal(first.test_labels, again.test_labels)
    np.testing.assert_array_equal(first.test_images, again.test_images)
    assert not np.array_equal(first.test_labels, other.test_labels)
    assert 0.0 <= first.train_images.min() and first.train_images.max() <= 1.0
    assert set(np.bincount(first.test_labels)) <= {35, 36, 37}  # stratified: ~36 per class
    # Upsampling keeps the digit: block means of the 16x16 image track the 8x8 original.
    original = digits.load_digits_split(image_size=8, split_seed=0)
    pooled = first.test_images.reshape(360, 8, 2, 8, 2, 1).mean(axis=(2, 4))
    assert np.corrcoef(pooled.ravel(), original.test_images.ravel())[0, 1] > 0.95


def test_train_batches_cover_one_epoch_in_a_seeded_order():
    split = digits.load_digits_split(image_size=8, train_subset=50)
    batches = list(digits.train_batches(split, batch_size=16, seed=3, epoch=0))
    assert [len(labels) for _, labels in batches] == [16, 16, 16]  # last 2 images dropped
    assert digits.steps_per_epoch(split, 16) == 3
    replay = list(digits.train_batches(split, batch_size=16, seed=3, epoch=0))
    next_epoch = list(digits.train_batches(split, batch_size=16, seed=3, epoch=1))
    np.testing.assert_array_equal(batches[0][1], replay[0][1])
    assert not np.array_equal(batches[0][0], next_epoch[0][0])
    seen = np.concatenate([images for images, _ in batches]).reshape(48, -1)
    assert len(np.unique(seen, axis=0)) == 48  # no image twice in an epoch


@pytest.mark.parametrize("kwargs, message", [
    ({"image_size": 4}, "received 4"),
    ({"test_fraction": 1.5}, "received 1.5"),
    ({"train_subset": 0}, "received 0"),
])
def test_digits_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        digits.load_digits_split(**kwargs)


def test_neighbouring_systems_run_as_rows_of_the_comparison(tmp_path):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        results = demo.main(["--quick", "--norm-acts", "nf,shadow_bn", "--batch-sizes", "16",
                             "--train-subset", "96", "--curve-points", "1",
                             "--output-dir", str(tmp_path)])
    assert [result.norm_act for result in results] == ["nf", "shadow_bn"]
    for result in results:
        assert 0.0 <= result.test_accuracy <= 1.0 and np.all(np.isfinite(result.train_loss))
    table = printed.getvalue()
    assert "nf" in table and "shadow_bn" in table
    layer_types = {type(layer).__name__ for layer in demo.SYSTEM_BUILDERS["shadow_bn"](
        (16, 16, 1), 10).submodules}
    assert "ShadowBatchNormalization" in layer_types
    nf_types = {type(layer).__name__ for layer in demo.SYSTEM_BUILDERS["nf"]((16, 16, 1), 10).submodules}
    assert "ScaledWSConv2D" in nf_types and not any("Norm" in name for name in nf_types - {"ScaledWSConv2D"})

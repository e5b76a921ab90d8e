"""The digits BigGAN driver: flags, sample grids, and (slow) an end-to-end run with resume."""

import dataclasses
import glob
import os

import numpy as np
import pytest

from evonorm_tf.gan import train_digits


def _tiny(model_dir, steps):
    return train_digits.DigitsGANConfig(
        model_dir=str(model_dir), ch=4, groups=4, z_dim=16, shared_dim=8, batch_size=4,
        discriminator_steps=1, steps=steps, eval_every=2, eval_samples=40, standing_samples=16)


def test_parse_args_overrides_defaults():
    config = train_digits.parse_args(["--model_dir", "/tmp/x", "--norm_act", "evonorm_s0",
                                      "--steps", "7", "--ema_decay", "0.5", "--jit_compile"])
    assert config == train_digits.DigitsGANConfig(
        model_dir="/tmp/x", norm_act="evonorm_s0", steps=7, ema_decay=0.5, jit_compile=True)
    assert train_digits.parse_args(["--model_dir", "d"]).discriminator_steps == 2
    with pytest.raises(SystemExit):
        train_digits.parse_args([])  # --model_dir is required


def test_sample_grid_rows_are_classes(tmp_path):
    trainer = train_digits.build_trainer(_tiny(tmp_path, 1))
    grid = train_digits.sample_grid(trainer.ema_generator, per_class=3)
    assert grid.shape == (10 * 32, 3 * 32, 1) and grid.dtype == np.uint8
    # Tile (row k, column j) is sample j of class k: regenerate class 4's second sample.
    images = train_digits.sample(trainer.ema_generator, np.repeat(np.arange(10), 3), seed=0)
    expected = np.clip((images[4 * 3 + 1] + 1.0) * 127.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(grid[4 * 32:5 * 32, 32:64], expected)


@pytest.mark.slow
def test_run_writes_samples_summaries_checkpoints_and_resumes(tmp_path):
    lines = []
    result = train_digits.run(_tiny(tmp_path, 2), log=lines.append)
    fid = result["fid_digits_classifier"]
    assert result["step"] == 2 and np.isfinite(fid) and fid > 0
    assert 1.0 <= result["inception_score_digits_classifier"] <= 10.0
    assert os.path.exists(tmp_path / "samples_000002.png")
    assert glob.glob(str(tmp_path / "events.out.tfevents.*"))
    config = dataclasses.replace(_tiny(tmp_path, 4), truncation_curve="1.0,0.5")
    result = train_digits.run(config, log=lines.append)
    # The truncation curve at the last step: untruncated, then each threshold.
    assert [point["truncation"] for point in result["truncation_curve"]] == [None, 1.0, 0.5]
    assert all(np.isfinite(point["fid_digits_classifier"]) for point in result["truncation_curve"])
    assert any("resumed" in line and "step 2" in line for line in lines)
    assert result["step"] == 4 and os.path.exists(tmp_path / "samples_000004.png")

"""The MixPath supernet experiment as a command: a small smoke run (CI), the full run (slow),
and the feature statistics it reports, checked on constructed paths."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from evonorm_tf.analysis import mixpath_supernet


def test_feature_similarity_of_identical_and_independent_paths():
    tf_keras.utils.set_random_seed(0)
    model = mixpath_supernet.MixPathSupernet(10, blocks=((4, 1),), kernel_sizes=(1, 1, 1, 1))
    images = tf.constant(np.random.default_rng(0).uniform(size=(64, 6, 6, 1)).astype(np.float32))
    masks = tf.constant([[1.0, 1.0, 0.0, 0.0]])
    model(images, masks)
    block = model.mixed[0]
    # Identical paths: f_i + f_j = 2 f_i, cosine 1 and variance ratio 4.
    for path in block.paths[1:]:
        path.set_weights(block.paths[0].get_weights())
    same = mixpath_supernet.feature_similarity(model, images, masks)
    np.testing.assert_allclose(same["cosine"], [1.0], atol=1e-5)
    np.testing.assert_allclose(same["variance_ratio"], [4.0], rtol=1e-4)
    # Independently drawn depthwise kernels (the seeds above fix every weight and input): the
    # paths' features are no longer multiples of one another.
    rng = np.random.default_rng(1)
    for path in block.paths:
        path.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in path.get_weights()])
    mixed = mixpath_supernet.feature_similarity(model, images, masks)
    assert mixed["cosine"][0] < 0.9 and mixed["variance_ratio"][0] < 3.5


def test_command_smoke_run_writes_json_and_plot(tmp_path):
    output, plot = tmp_path / "mixpath.json", tmp_path / "mixpath.png"
    status = mixpath_supernet.main([
        "--seeds", "0", "--children", "3", "--supernet-epochs", "1", "--child-epochs", "1",
        "--image-size", "8", "--train-subset", "128", "--output", str(output), "--plot", str(plot),
    ])
    assert status == 0
    report = json.loads(output.read_text())
    run = report["runs"][0]
    assert len(run["children"]) == 3 and len(run["standalone_accuracy"]) == 3
    for child in run["children"]:
        assert all(1 <= sum(mask) <= 2 for mask in child)  # m ≤ M = 2 of n = 4 in every block
    for name in ("shadow_bn", "shared_bn"):
        tau = run[name]["kendall_tau"]
        assert tau is None or -1.0 <= tau <= 1.0
        assert len(run[name]["supernet_accuracy_recalibrated"]) == 3
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_rejects_bad_values_in_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "evonorm_tf.analysis.mixpath_supernet", "--children", "1", "--output", "x.json"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode != 0
    assert "--children must be >= 2" in result.stderr and "received 1" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_full_three_seed_run(tmp_path):
    output = tmp_path / "mixpath.json"
    assert mixpath_supernet.main(["--output", str(output)]) == 0
    summary = json.loads(output.read_text())["summary"]
    assert summary["seeds"] == [0, 1, 2]
    # Summed features of two paths: between independent (2) and identical (4) paths.
    assert 1.5 < summary["variance_ratio_at_init"] < 4.0
    for name in ("shadow_bn", "shared_bn"):
        assert all(-1.0 <= tau <= 1.0 for tau in summary[name]["kendall_tau"] if tau is not None)

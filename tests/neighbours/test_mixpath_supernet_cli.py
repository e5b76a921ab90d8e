"""The MixPath supernet experiment as a command: a small smoke run (CI), the full run (slow),
and the feature statistics it reports, checked on constructed paths."""

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from scipy import stats

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
    assert len(run["standalone_loss"]) == 3 and all(loss > 0.0 for loss in run["standalone_loss"])
    for child in run["children"]:
        assert all(1 <= sum(mask) <= 2 for mask in child)  # m ≤ M = 2 of n = 4 in every block
    for name in ("shadow_bn", "shared_bn"):
        tau = run[name]["kendall_tau"]
        assert tau is None or -1.0 <= tau <= 1.0
        assert len(run[name]["supernet_accuracy_recalibrated"]) == 3
        # τ by loss pairs the supernet's losses with the stand-alone losses (not accuracies).
        expected = stats.kendalltau(run[name]["supernet_loss_recalibrated"], run["standalone_loss"])
        if np.isnan(expected.statistic):
            assert run[name]["kendall_tau_by_loss"] is None
        else:
            assert run[name]["kendall_tau_by_loss"] == pytest.approx(expected.statistic)
            assert run[name]["kendall_tau_by_loss_pvalue"] == pytest.approx(expected.pvalue)
        assert report["summary"][name]["kendall_tau_by_loss"] == [run[name]["kendall_tau_by_loss"]]
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
        assert all(0.0 <= p <= 1.0 for p in summary[name]["kendall_tau_pvalue"] if p is not None)
        # Training aligns the paths (MixPath's observation): the sum moves towards 2 f_i.
        assert summary[name]["variance_ratio_after_training"] > summary["variance_ratio_at_init"]
    # Without recalibration, one BN per m keeps the children usable; one shared BN does not
    # (0.93 vs 0.59 in docs/results/mixpath_supernet_digits.json).
    assert summary["shadow_bn"]["mean_supernet_accuracy"] > summary["shared_bn"]["mean_supernet_accuracy"] + 0.1


def _report(seed, settings, tau):
    """A one-seed report as the command writes it (2 children, 3 blocks)."""
    similarity = {"cosine": [0.7, 0.8, 0.9], "variance_ratio": [2.0, 2.5, 3.0]}
    part = {"similarity_after_training": similarity, "supernet_accuracy": [0.5, 0.6],
            "supernet_accuracy_recalibrated": [0.8, 0.9], "supernet_loss_recalibrated": [0.4, 0.3]}
    for label in ("kendall_tau", "kendall_tau_without_recalibration", "kendall_tau_by_loss"):
        part[label], part[f"{label}_pvalue"] = tau, 1.0
    run = {"seed": seed, "children": [[[1, 0, 0, 0]] * 3, [[0, 1, 1, 0]] * 3], "similarity_at_init": similarity,
           "shadow_bn": part, "shared_bn": dict(part, kendall_tau=None), "standalone_accuracy": [0.7, 0.75],
           "standalone_loss": [0.9, 0.8], "seconds": 1.0}
    return {"settings": settings, "summary": {}, "runs": [run]}


def test_combine_merges_seeds_in_order_and_rejects_other_settings(tmp_path, capsys):
    settings = {"children": 2, "supernet_epochs": 1}
    paths = []
    for seed, tau in ((2, 1.0), (0, -1.0)):
        paths.append(tmp_path / f"seed{seed}.json")
        paths[-1].write_text(json.dumps(_report(seed, settings, tau)))
    output = tmp_path / "combined.json"
    assert mixpath_supernet.main(["--combine", *map(str, paths), "--output", str(output)]) == 0
    summary = json.loads(output.read_text())["summary"]
    assert summary["seeds"] == [0, 2]
    assert summary["shadow_bn"]["kendall_tau"] == [-1.0, 1.0] and summary["shadow_bn"]["mean_kendall_tau"] == 0.0
    assert summary["shared_bn"]["mean_kendall_tau"] is None  # undefined τ (ties) is left out of means
    assert summary["shadow_bn"]["mean_kendall_tau_by_loss"] == 0.0
    assert summary["shadow_bn"]["mean_kendall_tau_by_loss_pvalue"] == pytest.approx(1.0)  # 2 children, 2 seeds
    assert summary["standalone_accuracy_range"] == [0.7, 0.75]
    assert summary["variance_ratio_at_init"] == pytest.approx(2.5)

    paths[1].write_text(json.dumps(_report(0, dict(settings, children=3), 1.0)))
    with pytest.raises(SystemExit) as exit_info:
        mixpath_supernet.main(["--combine", *map(str, paths), "--output", str(output)])
    assert exit_info.value.code != 0
    assert "other settings" in capsys.readouterr().err


@pytest.mark.parametrize("items, samples", [(4, 1), (4, 2), (5, 2)])
def test_exact_pvalue_of_a_mean_tau_matches_enumeration(items, samples):
    from evonorm_tf.analysis.mixpath_report import mean_kendall_tau_pvalue

    # Every combination of `samples` permutations against the identity, equally likely.
    taus = [stats.kendalltau(range(items), p).statistic for p in itertools.permutations(range(items))]
    means = np.array([np.mean(combo) for combo in itertools.product(taus, repeat=samples)])
    for observed in sorted(set(np.round(means, 9))):
        expected = np.mean(np.abs(means) >= abs(observed) - 1e-9)
        assert mean_kendall_tau_pvalue(observed, items, samples) == pytest.approx(expected, abs=1e-12)
    if samples == 1:  # one τ: SciPy's exact test
        assert mean_kendall_tau_pvalue(taus[1], items, 1) == pytest.approx(
            stats.kendalltau(range(items), list(itertools.permutations(range(items)))[1], method="exact").pvalue)

"""The calibrated search protocol: proxy data, quality threshold, random generation, rerank, Ray."""

import collections
import json
import os
import random

import numpy as np
import pyglove as pg
import pytest

from evonorm_tf.search import __main__ as cli
from evonorm_tf.search import config as search_config
from evonorm_tf.search import encoding, evaluation, executors, mutation, proxy, space


def test_digits_proxy_is_offline_standardised_and_holds_out_a_disjoint_split():
    data = proxy.load_data("digits", seed=3)
    again = proxy.load_data("digits", seed=3)
    other = proxy.load_data("digits", seed=4)
    assert data.train_images.shape == (1400, 8, 8, 1) and data.test_images.shape == (397, 8, 8, 1)
    np.testing.assert_array_equal(data.test_images, again.test_images)
    assert not np.array_equal(data.test_labels, other.test_labels)           # another split
    assert abs(data.train_images.mean()) < 1e-3 and abs(data.train_images.std() - 1) < 1e-3
    train = {image.tobytes() for image in data.train_images}
    assert sum(image.tobytes() in train for image in data.test_images) < 5   # (a few true duplicates)
    assert set(np.unique(data.train_labels)) == set(range(10))
    with pytest.raises(ValueError, match="num_test must be in"):
        proxy.digits(num_test=1797)


def test_quality_threshold_sits_between_chance_and_what_a_constant_predictor_can_reach():
    config = search_config.SearchConfig(max_candidates=1)
    assert (config.data, config.quality_steps, config.quality_threshold) == ("digits", 100, 0.2)
    labels = proxy.load_data("digits", seed=config.seed).test_labels
    # A layer that hides the input makes the network predict one class at best.
    assert np.bincount(labels).max() / len(labels) < 0.75 * config.quality_threshold


def test_calibrated_quality_stage_accepts_evonorm_b0_on_the_first_anchor():
    # The documented calibration: BN-ReLU, B0, S0 reach 0.45–0.80 after 50 steps, far above 0.2.
    config = search_config.SearchConfig(max_candidates=1, anchors=("resnet",), train_steps=50,
                                        quality_steps=50, stability_steps=2, workers=0)
    result = evaluation.evaluate_candidate(space.EVONORM_GRAPHS["evonorm_b0"], config.evaluation())
    assert result["rejected"] is None, result
    assert result["quality_scores"][0] >= 2 * config.quality_threshold


def test_random_generation_draws_ops_and_inputs_uniformly():
    """PyGlove's random DNA (what the search proposes) matches the paper's generator."""
    ops = list(space.op_names())
    spec = pg.dna_spec(encoding.hyper_space(ops))
    rng = random.Random(0)
    genomes = [encoding.genome_from_dna(pg.random_dna(spec, rng), ops) for _ in range(200)]
    op_counts = collections.Counter(node.op for genome in genomes for node in genome.nodes)
    expected = 200 * (space.MAX_NODES - space.NUM_INITIAL) / len(ops)        # 83 per op
    assert set(op_counts) == set(ops)
    assert all(abs(count - expected) < 0.35 * expected for count in op_counts.values()), op_counts
    # The last node reads each of its 13 predecessors equally often.
    first_inputs = collections.Counter(genome.nodes[-1].inputs[0] for genome in genomes)
    assert len(first_inputs) == space.MAX_NODES - 1 and max(first_inputs.values()) < 3 * 200 / 13


def test_random_graphs_are_small_and_mostly_ignore_the_input():
    """Documents the sparsity the rejection rules exist for (numbers quoted in docs/search.md)."""
    statistics = mutation.random_graph_statistics(400, seed=0)
    assert statistics["samples"] == 400
    assert 0.2 < statistics["reads_input"] < 0.5          # 0.316 on 1,000 samples
    assert 1.5 < statistics["mean_ops"] < 3.5              # 2.37 on 1,000 samples
    assert statistics["reads_input_and_finite_and_per_sample"] < statistics["reads_input"]
    assert mutation.reads_input(space.Graph.from_string(space.EVONORM_GRAPHS["evonorm_s0"]))
    assert not mutation.reads_input(space.Graph.from_string("exp(2);add(1,4)"))


def test_rerank_accepts_graph_baselines_and_reports_sd_over_seeds(tmp_path, capsys):
    tiny = ["--anchors", "resnet", "--num-train", "128", "--num-test", "64", "--width", "8",
            "--train-steps", "3", "--quality-steps", "2", "--quality-threshold", "0",
            "--stability-steps", "1", "--population-size", "2", "--tournament-size", "2",
            "--workers", "0", "--no-progress", "--max-candidates", "2"]
    run = str(tmp_path / "run")
    cli.main(["search", "--method", "random", "--output", run, *tiny])
    s1 = "graph:" + space.EVONORM_GRAPHS["evonorm_s1"]          # has ';' and ','
    output = str(tmp_path / "rr")
    cli.main(["rerank", "--runs", run, "--output", output, "--top", "0", "--steps", "2",
              "--seeds", "2", "--baselines", s1, "--baselines", "bn_relu"])
    rows = json.load(open(os.path.join(output, "rerank.json")))
    assert sorted(row["name"] for row in rows) == sorted(["bn_relu", s1])
    for row in rows:
        assert len(row["per_seed"]) == 2 and row["seeds"] == 2
        assert row["mean_accuracy"] == pytest.approx(np.mean(row["per_seed"]))
        assert row["mean_accuracy_sd"] == pytest.approx(np.std(row["per_seed"], ddof=1))
    capsys.readouterr()
    assert cli.main(["rerank", "--runs", run, run, "--output", output, "--top", "1", "2", "3"]) == 2
    assert "one count, or one per run" in capsys.readouterr().err
    assert cli.main(["rerank", "--runs", run, "--output", output, "--top", "0", "--no-baselines"]) == 2
    assert "nothing to re-rank" in capsys.readouterr().err


def test_report_limits_outputs_to_the_first_candidates(tmp_path):
    tiny = ["--anchors", "resnet", "--num-train", "128", "--num-test", "64", "--width", "8",
            "--train-steps", "2", "--stability-steps", "1", "--quality-steps", "1",
            "--quality-threshold", "0", "--workers", "0", "--no-progress", "--max-candidates", "4"]
    run = str(tmp_path / "run")
    cli.main(["search", "--method", "random_rejection", "--output", run, *tiny])
    cli.main(["report", "--runs", run, "--first", "2", "--plot", str(tmp_path / "p.png"),
              "--labels", "Random + rejection"])
    summary = json.load(open(os.path.join(run, "summary.json")))
    assert summary["evaluated"] == 2 and os.path.exists(tmp_path / "p.png")


def _ray_available():
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _ray_available(), reason="ray is not installed (pip install ray: the "
                    "`search-ray` extra); the same worker function is tested through the process pool")
def test_ray_executor_runs_the_same_worker_function_on_a_local_ray():
    executor = executors.Executor(workers=1, ray_address="local")
    try:
        evaluation = search_config.SearchConfig(
            max_candidates=1, anchors=("resnet",), train_steps=2, quality_steps=1,
            quality_threshold=0.0, stability_steps=1, num_train=128, num_test=64).evaluation()
        futures = [executor.submit(text, evaluation)
                   for text in ("div(0,1)", "neg(1)", space.EVONORM_GRAPHS["evonorm_s1"])]
        results = [future.result(timeout=600) for future in futures]
    finally:
        executor.shutdown()
    assert [r["rejected"] for r in results] == ["numerical", "quality", None]
    assert len(results[2]["scores"]) == 1 and results[2]["cost"] == 3 * 1 + 2

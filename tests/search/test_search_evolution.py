"""Evolution (PyGlove), tournament rules, persistence and resume, the process pool, the CLI."""

import concurrent.futures
import json
import os
import random

import pyglove as pg
import pytest

from evonorm_tf.search import __main__ as cli
from evonorm_tf.search import config as search_config
from evonorm_tf.search import encoding, evolution, executors, loop, mutation, space, store


def test_genome_dna_round_trip():
    ops = list(space.op_names())
    spec = pg.dna_spec(encoding.hyper_space(ops))
    rng = random.Random(0)
    for _ in range(20):
        genome = mutation.random_genome(rng)
        assert encoding.genome_from_dna(encoding.dna_from_genome(genome, ops, spec), ops) == genome


def test_pareto_front():
    fitnesses = [(0.5, 0.5), (0.6, 0.2), (0.4, 0.4), (0.2, 0.7), (0.6, 0.2)]
    assert evolution.pareto_front(fitnesses) == [0, 1, 3, 4]


def _population(fitnesses):
    spec = pg.dna_spec(encoding.hyper_space(list(space.op_names())))
    population = []
    for fitness in fitnesses:
        dna = pg.random_dna(spec, random.Random(len(population)))
        population.append(pg.evolution.set_fitness(dna, fitness))
    return population


def test_tournament_rules():
    # B has the best mean; A and C are on the Pareto front too.
    population = _population([(0.9, 0.1), (0.6, 0.6), (0.1, 0.9), (0.2, 0.2)])
    average = evolution.TournamentWinner("average", seed=0)
    assert all(average.select(population, None) == [population[1]] for _ in range(5))
    pareto = evolution.TournamentWinner("pareto", seed=0)
    winners = {id(pareto.select(population, None)[0]) for _ in range(60)}
    assert winners == {id(population[i]) for i in (0, 1, 2)}


class FakeExecutor:
    """Scores a graph by its size (no training); raises KeyboardInterrupt after `kill_after` submits."""

    def __init__(self, workers=2, kill_after=None):
        self.workers, self.kill_after, self.submitted = workers, kill_after, []

    def submit(self, graph_text, evaluation):
        if self.kill_after is not None and len(self.submitted) >= self.kill_after:
            raise KeyboardInterrupt("simulated kill")
        self.submitted.append(graph_text)
        graph = space.Graph.from_string(graph_text)
        future = concurrent.futures.Future()
        if "x" not in graph.formula():
            future.set_result({"scores": None, "rejected": "quality", "cost": 1})
        else:
            size = len(graph.nodes)
            future.set_result({"scores": [size / 10, 1 - size / 10], "rejected": None, "cost": 10})
        return future

    def shutdown(self):
        pass


def _config(**overrides):
    values = dict(method="evolution", population_size=4, tournament_size=2, max_candidates=16,
                  anchors=("resnet", "mobilenet"), workers=2)
    return search_config.SearchConfig(**{**values, **overrides})


def test_resume_after_kill_neither_loses_nor_repeats_evaluations(tmp_path):
    directory = str(tmp_path / "search")
    config = _config()
    first = FakeExecutor(kill_after=8)
    with pytest.raises(KeyboardInterrupt):
        loop.run_search(directory, config, progress=False, executor=first)
    saved = store.Store(directory).load()
    assert len([r for r in saved if not r["duplicate"]]) >= 6    # in-flight work may be lost
    # A crash mid-write leaves a temporary file, never a partial record.
    open(os.path.join(directory, "candidates", "garbage.tmp"), "w").write("{partial")
    second = FakeExecutor()
    records = loop.run_search(directory, config, progress=False, executor=second)

    evaluated = [r for r in records if not r["duplicate"]]
    assert len(evaluated) == config.max_candidates
    ids = [r["proposal_id"] for r in records]
    assert len(ids) == len(set(ids))               # unique (an in-flight proposal may be lost)
    hashes = [r["hash"] for r in evaluated]
    assert len(hashes) == len(set(hashes))                              # nothing trained twice
    resubmitted = set(first.submitted) & set(second.submitted)
    finished_first = {r["graph"] for r in saved if not r["duplicate"]}
    assert not (resubmitted & finished_first)                          # finished work not redone
    for record in saved:                                                # old records untouched
        assert store.read_json(store.Store(directory).path(record["proposal_id"])) == record
    assert not [n for n in os.listdir(os.path.join(directory, "candidates")) if n.endswith(".tmp")]
    # Evolution went on after the population was initialised: children are one-node mutations.
    children = [r for r in records if not r["initial_population"]]
    assert children and max(r["generation_id"] for r in records) > 1
    with pytest.raises(ValueError, match="cannot resume it with method='random'"):
        loop.run_search(directory, _config(method="random"), progress=False,
                             executor=FakeExecutor())


def test_random_search_has_no_population(tmp_path):
    records = loop.run_search(str(tmp_path), _config(method="random_rejection", max_candidates=8),
                                   progress=False, executor=FakeExecutor())
    assert len([r for r in records if not r["duplicate"]]) == 8
    assert all(r["generation_id"] == 1 or r["initial_population"] for r in records)


def test_local_process_pool_evaluates_in_workers():
    executor = executors.Executor(workers=2)
    try:
        evaluation = _config(max_candidates=1).evaluation()
        futures = [executor.submit(text, evaluation) for text in ("div(0,1)", "neg(1)")]
        results = [future.result(timeout=300) for future in futures]
    finally:
        executor.shutdown()
    assert [r["rejected"] for r in results] == ["numerical", "quality"]


def test_cli_compare_report_and_rerank_at_tiny_scale(tmp_path, capsys):
    # The smallest documented run (docs/search.md, "Commands"): it accepts a candidate in each method.
    tiny = ["--anchors", "resnet", "--num-train", "128", "--num-test", "64", "--width", "8",
            "--train-steps", "3", "--quality-steps", "3", "--quality-threshold", "0",
            "--stability-steps", "2", "--population-size", "2", "--tournament-size", "2",
            "--workers", "0", "--seed", "2", "--no-progress"]
    output = str(tmp_path / "compare")
    cli.main(["compare", "--output", output, "--max-candidates", "4", *tiny])
    assert os.path.exists(os.path.join(output, "progress.png"))
    for method in ("random", "random_rejection", "evolution"):
        summary = json.load(open(os.path.join(output, method, "summary.json")))
        assert summary["evaluated"] == 4 and summary["method"] == method
        assert summary["rejections"].get("accepted", 0) >= 1
        assert os.path.exists(os.path.join(output, method, "leaderboard.csv"))
    cli.main(["rerank", "--runs", os.path.join(output, "random"), "--output", str(tmp_path / "rr"),
              "--top", "1", "--steps", "2", "--baselines", "bn_relu"])
    rows = json.load(open(tmp_path / "rr" / "rerank.json"))
    assert "bn_relu" in [row["name"] for row in rows] and all("resnet" in row for row in rows)

"""Reproducible search: records independent of interruptions, worker count and finishing order."""

import concurrent.futures
import os
import random
import signal
import time

import pytest

from evonorm_tf.search import __main__ as cli
from evonorm_tf.search import config as search_config
from evonorm_tf.search import evolution, loop, report, space, store

_TIMING = ("seconds",)


def _fake_result(graph_text):
    """A deterministic stand-in for training, with the real search's mix of outcomes.

    Layers that ignore x are constant (instant quality rejection); of the
    others, by their graph: 2 % accepted, ~half fail the stress test, the rest
    fail the trained quality test (all proportions as measured on random genomes).
    """
    graph = space.Graph.from_string(graph_text)
    draw = random.Random(graph_text)
    if "x" not in graph.formula():
        return {"scores": None, "rejected": "quality", "cost": 0, "quality_scores": None}
    roll = draw.random()
    if roll < 0.02 or "std_" in graph_text and roll < 0.3:
        scores = [round(0.2 + 0.6 * draw.random(), 4) for _ in range(2)]
        return {"scores": scores, "rejected": None, "cost": 10, "quality_scores": scores}
    if roll < 0.5:
        return {"scores": None, "rejected": "stability", "cost": 3, "quality_scores": None}
    return {"scores": None, "rejected": "quality", "cost": 5,
            "quality_scores": [round(0.19 * draw.random(), 4)]}


class ThreadedFakeExecutor:
    """Evaluates `_fake_result` in threads that finish in a random order (jitter)."""

    def __init__(self, workers=2, jitter=0.003, interrupt_at=None, seed=0):
        self.workers, self.jitter, self.submitted = workers, jitter, []
        self.interrupt_at = interrupt_at
        self._rng = random.Random(seed)
        self._pool = concurrent.futures.ThreadPoolExecutor(workers)

    def _evaluate(self, graph_text, delay):
        time.sleep(delay)
        return _fake_result(graph_text)

    def submit(self, graph_text, evaluation):
        self.submitted.append(graph_text)
        if self.interrupt_at is not None and len(self.submitted) == self.interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)   # as a user's Ctrl-C during an evaluation
        return self._pool.submit(self._evaluate, graph_text, self._rng.random() * self.jitter)

    def shutdown(self, cancel=False):
        self._pool.shutdown(wait=True, cancel_futures=True)


def _config(**overrides):
    values = dict(method="evolution", population_size=4, tournament_size=2, max_candidates=40,
                  anchors=("resnet", "mobilenet"), workers=2, seed=3)
    return search_config.SearchConfig(**{**values, **overrides})


def _comparable(records):
    return [{k: v for k, v in record.items() if k not in _TIMING} for record in records]


def _run(directory, config, **kwargs):
    executor = kwargs.pop("executor", None) or ThreadedFakeExecutor(config.workers)
    return loop.run_search(str(directory), config, progress=False, executor=executor, **kwargs)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted evolution search (2 workers)."""
    return _comparable(_run(tmp_path_factory.mktemp("reference"), _config()))


def test_records_do_not_depend_on_workers_or_finishing_order(reference, tmp_path):
    assert len([r for r in reference if not r["duplicate"]]) == 40
    assert any(not r["initial_population"] for r in reference)           # it evolved
    one = _comparable(_run(tmp_path / "one", _config(workers=1)))
    four = _comparable(_run(tmp_path / "four", _config(workers=4),
                            executor=ThreadedFakeExecutor(4, jitter=0.01, seed=7)))
    assert one == reference and four == reference


@pytest.mark.parametrize("stop_after", [1, 5, 13, 29])
def test_a_search_stopped_anywhere_and_resumed_ends_with_the_uninterrupted_records(
        reference, tmp_path, stop_after):
    config = _config()
    _run(tmp_path, config, stop_after=stop_after)
    assert len([r for r in store.Store(str(tmp_path)).load() if not r["duplicate"]]) < 40
    assert _comparable(_run(tmp_path, config)) == reference


def test_sigint_stops_with_the_in_flight_proposal_evaluated_again_on_resume(reference, tmp_path):
    config = _config()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    executor = ThreadedFakeExecutor(2, jitter=0.05, interrupt_at=12)
    try:
        with pytest.raises(loop.SearchStopped) as stopped:
            _run(tmp_path, config, executor=executor)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # handler restored
    finally:
        signal.signal(signal.SIGINT, previous)
    assert stopped.value.signal_name == "SIGINT" and stopped.value.in_flight
    stored = {r["proposal_id"] for r in store.Store(str(tmp_path)).load()}
    assert not set(stopped.value.in_flight) & stored             # in flight: not recorded...
    resumed = _comparable(_run(tmp_path, config))
    assert resumed == reference                                   # ...but evaluated on resume
    assert set(stopped.value.in_flight) <= {r["proposal_id"] for r in resumed}


def test_cli_reports_a_signal_in_one_line_and_a_non_zero_status(tmp_path, capsys, monkeypatch):
    def interrupted(directory, config, progress=True):
        raise loop.SearchStopped("SIGTERM", 7, [8, 9])

    monkeypatch.setattr(loop, "run_search", interrupted)
    status = cli.main(["search", "--output", str(tmp_path), "--max-candidates", "10"])
    error = capsys.readouterr().err.strip()
    assert status == 143 and "\n" not in error
    assert error.startswith("stopped by SIGTERM: 7 candidates") and "proposals 8, 9" in error


# The documented three-seed comparison (docs/search.md): ResNet anchor, 30 training and quality
# steps, a 10-step stress test, population 2, tournament 2, feedback delay 1, 4,000 compute units.
DOCUMENTED_RUN = dict(method="evolution", anchors=("resnet",), train_steps=30, quality_steps=30,
                      stability_steps=10, population_size=2, tournament_size=2, feedback_delay=1,
                      budget_steps=4000, max_candidates=3000, workers=0)


def _documented_mix_result(graph_text):
    """The documented run's outcomes and costs, as measured there on random genomes.

    Layers that ignore x: instant quality rejection (cost 0). Of the others:
    5 % accepted (a full 30-step training after the 10-step stress test:
    30 + 30 units), 45 % fail the stress test within its first steps (9
    units), 50 % fail the trained quality test (60 units).
    """
    graph = space.Graph.from_string(graph_text)
    if "x" not in graph.formula():
        return {"scores": None, "rejected": "quality", "cost": 0, "quality_scores": None}
    draw = random.Random(graph_text)
    roll = draw.random()
    if roll < 0.05:
        score = round(0.2 + 0.6 * draw.random(), 4)
        return {"scores": [score], "rejected": None, "cost": 60, "quality_scores": [score]}
    if roll < 0.5:
        return {"scores": None, "rejected": "stability", "cost": 9, "quality_scores": None}
    return {"scores": None, "rejected": "quality", "cost": 60,
            "quality_scores": [round(0.07 + 0.12 * draw.random(), 4)]}


class _DocumentedMixExecutor(ThreadedFakeExecutor):
    def _evaluate(self, graph_text, delay):
        return _documented_mix_result(graph_text)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mutation_starts_within_the_first_tenth_of_the_documented_run(tmp_path, seed):
    # The run's size is its compute budget: the first child comes before a tenth of it is spent.
    config = search_config.SearchConfig(**DOCUMENTED_RUN, seed=seed)
    records = _run(tmp_path, config, executor=_DocumentedMixExecutor(1, jitter=0.0), stop_after=15)
    evaluated = report.evaluated(records)
    first = report.first_child(records)
    assert first is not None
    before = evaluated[:first - 1]
    assert sum(r["cost"] for r in before) <= config.budget_steps / 10
    accepted = [r for r in before if r.get("scores") and not r.get("rejected")]
    assert len(accepted) < config.population_size          # near misses made the difference
    # Breeding starts from the first near miss, not once `population_size` of them are stored:
    # proposal k sees records 1..k-1, so the first child is one of the next two proposals.
    near_misses = [r for r in before if evolution.fitness(r, 1) is not None]
    assert near_misses
    child = evaluated[first - 1]
    assert child["proposal_id"] <= near_misses[0]["proposal_id"] + 2
    assert child["parent_id"] in [r["proposal_id"] for r in near_misses]


def test_random_genomes_alternate_with_children_until_a_layer_is_accepted(tmp_path):
    config = search_config.SearchConfig(**DOCUMENTED_RUN, seed=2)   # first acceptance: proposal 24
    records = _run(tmp_path, config, executor=_DocumentedMixExecutor(1, jitter=0.0), stop_after=30)
    by_id = {r["proposal_id"]: r for r in records}

    def accepted(record):
        original = by_id[record.get("duplicate_of") or record["proposal_id"]]
        return bool(original.get("scores")) and not original.get("rejected")

    first = min(r["proposal_id"] for r in records if not r["initial_population"])
    first_accepted = min(r["proposal_id"] for r in records if accepted(r))
    assert first_accepted - first > 10
    bootstrap = [r for r in records if first <= r["proposal_id"] <= first_accepted]
    # Proposal k sees records 1..k-1: while none of them is accepted, odd proposals are random.
    assert all(r["initial_population"] == (r["proposal_id"] % 2 == 1) for r in bootstrap)
    later = [r for r in records if r["proposal_id"] > first_accepted]
    assert later and all(not r["initial_population"] for r in later)
    assert any(not by_id[r["parent_id"]].get("rejected") for r in later)
    # Random genomes are those Random + rejection draws at the same proposal index.
    random_config = search_config.SearchConfig(**{**DOCUMENTED_RUN, "method": "random_rejection"},
                                               seed=2)
    random_records = _run(tmp_path / "random", random_config,
                          executor=_DocumentedMixExecutor(1, jitter=0.0), stop_after=30)
    random_by_id = {r["proposal_id"]: r["genome"] for r in random_records}
    shared = [r for r in bootstrap if r["initial_population"] and r["proposal_id"] in random_by_id]
    assert shared and all(r["genome"] == random_by_id[r["proposal_id"]] for r in shared)


def _record(proposal_id, rejected, scores=None, quality_scores=None):
    return {"proposal_id": proposal_id, "rejected": rejected, "scores": scores,
            "quality_scores": quality_scores}


def test_near_misses_fill_the_population_until_accepted_layers_replace_them():
    history = [_record(1, "stability"), _record(2, "quality"), _record(3, "numerical"),
               _record(4, "quality", quality_scores=[0.15]), _record(5, None, [0.5, 0.6])]
    members = evolution.population(history, 3, 2)
    assert [r["proposal_id"] for r, _ in members] == [1, 4, 5]   # never constants or NaN layers
    fitness = dict((r["proposal_id"], value) for r, value in members)
    assert fitness[5] == (4.5, 4.6) and fitness[4] == (2.15, 2.0) and fitness[1] == (0.0, 0.0)
    assert evolution.pareto_front(list(fitness.values())) == [2]   # accepted dominates near misses
    history += [_record(6, None, [0.3, 0.3]), _record(7, "stability"), _record(8, None, [0.9, 0.2])]
    members = evolution.population(history, 3, 2)
    assert [r["proposal_id"] for r, _ in members] == [5, 6, 8]   # accepted only, most recent


def test_progress_counts_duplicates_apart_from_rejections():
    counts = loop._Counts()
    for record in ({"duplicate": False, "rejected": "quality", "cost": 0},
                   {"duplicate": True, "duplicate_of": 1},
                   {"duplicate": False, "rejected": None, "scores": [0.5, 0.7], "cost": 4}):
        counts.add(record)
    assert counts.postfix() == {"best": "0.600", "rejected": 1, "duplicates": 1, "steps": 4}


def test_a_child_already_in_the_history_is_mutated_again_until_new():
    config = search_config.SearchConfig(**DOCUMENTED_RUN, seed=0)
    dna_spec = evolution.pg.dna_spec(evolution.encoding.hyper_space(list(config.ops)))
    # A full-length genome whose layer is one op, tanh x: it has few distinct children.
    filler = [space.Node("add", (0, 0))] * (space.MAX_NODES - space.NUM_INITIAL - 1)
    parent = space.Genome(filler + [space.Node("tanh", (0,))])
    assert parent.to_graph().formula() == "tanh(x)"
    history = [{"proposal_id": 1, "genome": parent.to_string(), "rejected": None, "scores": [0.6],
                "hash": evolution.mutation.functional_hash(parent.to_graph())}]
    first, lineage = evolution.propose(config, 7, history, dna_spec)
    assert lineage["parent_id"] == 1 and lineage["mutation_tries"] == 1
    # The same proposal, once that child (a rejected layer, so not a parent) is in the history:
    seen = evolution.mutation.functional_hash(first.to_graph())
    history.append({"proposal_id": 2, "genome": first.to_string(), "rejected": "numerical",
                    "scores": None, "hash": seen})
    second, lineage = evolution.propose(config, 7, history, dna_spec)
    assert lineage["mutation_tries"] > 1
    assert evolution.mutation.functional_hash(second.to_graph()) not in {r["hash"] for r in history}
    # Every try seen: the last one is returned, further from the parent (more mutations per try).
    tried = []
    child, lineage = evolution.propose(config, 7, history, dna_spec,
                                       hash_of=lambda graph: tried.append(graph) or seen)
    assert lineage["mutation_tries"] == evolution.MAX_NEW_CHILD_TRIES == len(tried)
    assert tried[-1] == child.to_graph()


def _one_op_layers_accepted(graph_text):
    """Accepts every layer of at most one op that reads x (a population of small layers)."""
    graph = space.Graph.from_string(graph_text)
    if "x" not in graph.formula():
        return {"scores": None, "rejected": "quality", "cost": 0, "quality_scores": None}
    if len(graph.nodes) <= 1:
        return {"scores": [0.5], "rejected": None, "cost": 60, "quality_scores": [0.5]}
    return {"scores": None, "rejected": "stability", "cost": 9, "quality_scores": None}


class _OneOpExecutor(ThreadedFakeExecutor):
    def _evaluate(self, graph_text, delay):
        return _one_op_layers_accepted(graph_text)


def test_a_population_of_small_layers_spends_its_budget_on_new_children(tmp_path):
    # Children of one-op parents are mostly functional duplicates of earlier candidates; they
    # are mutated again until new, so the search spends its budget instead of proposing for ever.
    config = search_config.SearchConfig(**{**DOCUMENTED_RUN, "budget_steps": 1500}, seed=2)
    records = _run(tmp_path, config, executor=_OneOpExecutor(1, jitter=0.0))
    children = [r for r in records if not r["initial_population"]]
    assert len(children) > 50
    assert sum(r["duplicate"] for r in children) <= len(children) // 20
    assert any(r["mutation_tries"] > 1 for r in children)
    assert sum(r["cost"] for r in records if not r["duplicate"]) >= config.budget_steps

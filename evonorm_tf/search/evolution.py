"""The search loop: candidate evaluation, regularized evolution (PyGlove) and baselines.

Three methods share one loop (`run_search`):

| method | proposals | rejection |
|---|---|---|
| `random` | uniform random genomes | none: every candidate is fully trained |
| `random_rejection` | uniform random genomes | numerical, stability, quality |
| `evolution` | regularized evolution with a multi-objective tournament | numerical, stability, quality |

Evolution is PyGlove's compositional `pg.evolution.Evolution`, set up as
regularized (aging) evolution (Real et al. 2019): the first `population_size`
accepted candidates are uniform random genomes (PyGlove's `pg.geno.Random`
draws each node's op and inputs uniformly, which is the paper's random
generation); then each proposal samples a tournament of `tournament_size`
members, picks a winner with the `average` rule (highest mean accuracy over
the K anchors) or the `pareto` rule (a uniformly random member of the
tournament's Pareto front), and applies the three-step mutation; the
population keeps the `population_size` most recent accepted candidates.
Rejected candidates are recorded but never enter the population.

Candidates are evaluated by `evaluate_candidate`, a plain function of plain
data, so a local process pool and Ray run the same code: `Executor` submits
it to either and returns `concurrent.futures.Future`s. Every finished record
is persisted (`store.Store`) before it is fed back, and `run_search` resumes
a directory by replaying its records into the algorithm (`recover`).
Functionally equivalent candidates (`mutation.functional_hash`) are never
trained twice: a repeat reuses the first one's result, recorded as a
duplicate.
"""

import concurrent.futures
import dataclasses
import functools
import math
import multiprocessing
import os
import random
import time

import pyglove as pg

from evonorm_tf.search import mutation, proxy, rejection, space, store

METHODS = ("evolution", "random_rejection", "random")
RULES = ("pareto", "average")


@dataclasses.dataclass
class SearchConfig:
    """Everything that defines a search (stored as `config.json`).

    Budget: the search stops once `max_candidates` candidates have been
    evaluated (duplicates not counted) or `budget_steps` compute units are
    spent (one unit = one training step of one anchor; a stress-test step
    counts 3), whichever comes first (`None` = no limit).
    """

    method: str = "evolution"
    series: str = "B"                      # "B": all 24 ops; "S": no batch statistics
    rule: str = "pareto"
    population_size: int = 20
    tournament_size: int = 5
    max_candidates: int = None
    budget_steps: int = None
    anchors: tuple = proxy.ANCHORS
    data: str = "digits"                   # see docs/search.md for the calibration
    data_dir: str = None
    num_train: int = None                  # None: the data set's default (textures: 4096)
    num_test: int = None                   # None: textures 1024, digits 397, cifar10 10,000
    image_size: int = 16
    noise: float = 0.1
    width: int = 8
    train_steps: int = 100
    batch_size: int = 32
    optimizer: str = "adam"
    learning_rate: float = 0.003
    quality_steps: int = 50
    quality_threshold: float = 0.2        # twice chance, the paper's rule
    stability_steps: int = 6
    stability_threshold: float = 1e8
    stability_learning_rate: float = 1.0
    seed: int = 0
    workers: int = 2
    ray_address: str = None

    def __post_init__(self):
        self.anchors = tuple(self.anchors)
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, received {self.method!r}")
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, received {self.rule!r}")
        if self.series not in ("B", "S"):
            raise ValueError(f"series must be 'B' or 'S', received {self.series!r}")
        for anchor in self.anchors:
            if anchor not in proxy.ANCHOR_BUILDERS:
                raise ValueError(f"unknown anchor {anchor!r}; valid: {', '.join(proxy.ANCHORS)}")
        if self.method == "evolution" and not 2 <= self.tournament_size <= self.population_size:
            raise ValueError(
                f"need 2 <= tournament_size <= population_size, received "
                f"tournament_size={self.tournament_size}, population_size={self.population_size}"
            )
        if self.max_candidates is None and self.budget_steps is None:
            raise ValueError("set max_candidates or budget_steps, received neither")

    @property
    def ops(self):
        return space.op_names(batch_statistics=self.series == "B")

    @property
    def rejection(self):
        return self.method != "random"

    def to_dict(self):
        value = dataclasses.asdict(self)
        value["anchors"] = list(self.anchors)
        return value

    def evaluation(self):
        """The plain-data part a worker needs to evaluate a candidate."""
        keys = ("anchors", "data", "data_dir", "num_train", "num_test", "image_size", "noise",
                "width", "train_steps", "batch_size", "optimizer", "learning_rate", "quality_steps",
                "quality_threshold", "stability_steps", "stability_threshold",
                "stability_learning_rate", "seed")
        value = {key: getattr(self, key) for key in keys}
        value["anchors"] = list(self.anchors)
        value["rejection"] = self.rejection
        return value


# Keys that must agree when a directory is resumed.
RESUME_KEYS = ("method", "series", "rule", "population_size", "tournament_size", "anchors",
               "data", "train_steps", "quality_steps", "seed")


# -- evaluating one candidate (runs in a worker) -------------------------------------------


@functools.lru_cache(maxsize=2)
def _data(name, data_dir, num_train, num_test, image_size, noise, seed):
    return proxy.load_data(name, data_dir, seed=seed, num_train=num_train, num_test=num_test,
                           image_size=image_size, noise=noise)


def evaluate_candidate(graph_text, evaluation):
    """Evaluates one canonical graph; returns a plain dict.

    Steps: numerical check → stability stress test → per anchor, train
    `quality_steps`, check accuracy ≥ `quality_threshold` → continue to
    `train_steps`. With `evaluation["rejection"]` False only the full training
    runs (a diverged run scores 0).

    Returns:
      `{"scores": [accuracy per anchor] or None, "rejected": reason or None,
      "cost": compute units, "seconds": wall time, "max_gradient_norm": ...}`.
    """
    start = time.time()
    e = evaluation
    data = _data(e["data"], e["data_dir"], e["num_train"], e["num_test"], e["image_size"],
                 e["noise"], e["seed"])
    name = "graph:" + graph_text
    result = {"scores": None, "rejected": None, "cost": 0, "max_gradient_norm": None,
              "quality_scores": None}

    def finish():
        result["seconds"] = round(time.time() - start, 3)
        return result

    graph = space.Graph.from_string(graph_text)
    if e["rejection"]:
        if not rejection.numerically_finite(graph, seed=e["seed"]):
            result["rejected"] = "numerical"
            return finish()
        if not rejection.depends_on_sample(graph, seed=e["seed"]):
            result["rejected"] = "quality"
            return finish()
        config = rejection.StabilityConfig(
            steps=e["stability_steps"], learning_rate=e["stability_learning_rate"],
            threshold=e["stability_threshold"], anchor=e["anchors"][0])
        passed, worst = rejection.stability_test(name, data, config, e["width"], e["seed"])
        result["cost"] += 3 * e["stability_steps"]
        result["max_gradient_norm"] = worst if math.isfinite(worst) else "inf"
        if not passed:   # an infinite worst-case gradient norm is a failed stress test too
            result["rejected"] = "stability"
            return finish()

    train_config = proxy.TrainConfig(steps=e["train_steps"], batch_size=e["batch_size"],
                                     optimizer=e["optimizer"], learning_rate=e["learning_rate"])
    trainers = []
    quality = []
    for anchor in e["anchors"]:
        model = proxy.build_anchor(anchor, proxy.norm_act_builder(name),
                                   data.train_images.shape[1:], e["width"], e["seed"])
        trainer = proxy.Trainer(model, data, train_config, e["seed"])
        trainers.append(trainer)
        if not e["rejection"]:
            continue
        finite = trainer.train(e["quality_steps"])
        result["cost"] += trainer.steps_done
        if not finite:
            result["rejected"] = "numerical"
            return finish()
        quality.append(trainer.accuracy())
        if quality[-1] < e["quality_threshold"]:
            result["rejected"] = "quality"
            result["quality_scores"] = quality
            return finish()
    result["quality_scores"] = quality or None

    scores = []
    for trainer in trainers:
        before = trainer.steps_done
        finite = trainer.train(e["train_steps"] - trainer.steps_done)
        result["cost"] += trainer.steps_done - before
        if not finite and e["rejection"]:
            result["rejected"] = "numerical"
            return finish()
        scores.append(trainer.accuracy() if finite else 0.0)
    result["scores"] = scores
    return finish()


# -- executors -----------------------------------------------------------------------------


# Each worker runs TensorFlow on one thread: parallelism comes from the workers.
WORKER_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_NUM_INTRAOP_THREADS": "1",
                      "TF_NUM_INTEROP_THREADS": "1"}


def _init_worker():
    for key, value in WORKER_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)


class Executor:
    """Submits `evaluate_candidate` in-process (workers=0), to a process pool, or to Ray.

    All three return `concurrent.futures.Future`s, so `run_search` has one code path.
    """

    def __init__(self, workers, ray_address=None):
        self.workers = max(1, workers)
        self._pool = None
        self._remote = None
        self._ray = None
        if ray_address:
            import ray  # optional dependency (extra `search-ray`): only needed for --ray-address

            # "local" starts a private single-machine Ray; "auto" or host:port joins a cluster.
            ray.init(address=ray_address, ignore_reinit_error=True, include_dashboard=False,
                     runtime_env={"env_vars": dict(WORKER_ENVIRONMENT)},
                     **({"num_cpus": self.workers} if ray_address == "local" else {}))
            self._ray = ray
            self._remote = ray.remote(num_cpus=1)(evaluate_candidate)
        elif workers > 0:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker)

    def submit(self, graph_text, evaluation):
        if self._remote is not None:
            return self._remote.remote(graph_text, evaluation).future()
        if self._pool is not None:
            return self._pool.submit(evaluate_candidate, graph_text, evaluation)
        future = concurrent.futures.Future()
        try:
            future.set_result(evaluate_candidate(graph_text, evaluation))
        except BaseException as error:  # surfaced by future.result()
            future.set_exception(error)
        return future

    def shutdown(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._ray is not None:
            self._ray.shutdown()


# -- PyGlove: genomes as DNA, the mutation and the tournament ------------------------------


def hyper_space(ops):
    """The genome as a PyGlove search space: per node an op and two input choices."""
    return pg.List([
        pg.Dict(op=pg.oneof(list(ops)), first=pg.oneof(list(range(index))),
                second=pg.oneof(list(range(index))))
        for index in range(space.NUM_INITIAL, space.MAX_NODES)
    ])


def genome_from_dna(dna, ops):
    numbers = dna.to_numbers()
    nodes = []
    for offset in range(len(numbers) // 3):
        op = space.OPS[ops[numbers[3 * offset]]]
        nodes.append(space.Node(op.name, tuple(numbers[3 * offset + 1: 3 * offset + 1 + op.arity])))
    return space.Genome(nodes)


def dna_from_genome(genome, ops, dna_spec):
    numbers = []
    for node in genome.nodes:
        inputs = list(node.inputs) + [0] * (2 - len(node.inputs))
        numbers += [ops.index(node.op)] + inputs
    return pg.DNA.from_numbers(numbers, dna_spec)


@pg.members([
    ("ops", pg.typing.List(pg.typing.Str()), "Op names of the search."),
    ("seed", pg.typing.Int().noneable(), "Random seed."),
])
class ThreeStepMutator(pg.evolution.Mutator):
    """The paper's mutation (`mutation.mutate`) as a PyGlove mutator."""

    def _on_bound(self):
        super()._on_bound()
        self._rng = random.Random(self.seed)

    def mutate(self, dna, global_state, step=0):
        ops = list(self.ops)
        child = mutation.mutate(genome_from_dna(dna, ops), self._rng, ops)
        return dna_from_genome(child, ops, dna.spec)


def pareto_front(fitnesses):
    """Indices of the non-dominated fitness tuples (maximisation)."""
    front = []
    for i, candidate in enumerate(fitnesses):
        dominated = any(
            all(o >= c for o, c in zip(other, candidate)) and any(o > c for o, c in zip(other, candidate))
            for j, other in enumerate(fitnesses) if j != i
        )
        if not dominated:
            front.append(i)
    return front


@pg.members([
    ("rule", pg.typing.Enum("pareto", list(RULES)), "Tournament winner rule."),
    ("seed", pg.typing.Int().noneable(), "Random seed."),
])
class TournamentWinner(pg.evolution.Selector):
    """Picks one winner of a tournament: `average` (best mean) or `pareto` (random front member)."""

    def _on_bound(self):
        super()._on_bound()
        self._rng = random.Random(self.seed)

    def select(self, inputs, global_state, step=0):
        if not inputs:
            return []
        fitnesses = [tuple(pg.evolution.get_fitness(dna)) for dna in inputs]
        if self.rule == "average":
            means = [sum(f) / len(f) for f in fitnesses]
            return [inputs[means.index(max(means))]]
        return [inputs[self._rng.choice(pareto_front(fitnesses))]]


def make_algorithm(config, seed):
    """The PyGlove DNA generator of a method."""
    if config.method != "evolution":
        return pg.geno.Random(seed=seed)
    reproduction = (
        pg.evolution.selectors.Random(config.tournament_size, seed=seed)
        >> TournamentWinner(config.rule, seed=seed)
        >> ThreeStepMutator(list(config.ops), seed=seed)
    )
    return pg.evolution.Evolution(
        reproduction,
        population_init=(pg.geno.Random(seed=seed), config.population_size),
        population_update=pg.evolution.selectors.Last(config.population_size),
        multi_objective=True,
    )


# -- the loop ------------------------------------------------------------------------------


def _reward(record):
    return tuple(record["scores"]) if record.get("scores") else None


def _progress(total, initial, enabled):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm comes with tensorflow-datasets; the bar is optional
        return None
    return tqdm(total=total, initial=initial, unit="cand", dynamic_ncols=True)


def run_search(directory, config, progress=True, stop_after=None, executor=None):
    """Runs (or resumes) a search in `directory`; returns all records.

    Args:
      directory: the search directory (see `store`); records already there are
        replayed and the search continues from them.
      config: a `SearchConfig`.
      progress: show a progress bar (tqdm).
      stop_after: stop after this many new evaluations in this call (used to
        simulate a kill in tests); None runs to the budget.
      executor: an `Executor` (default: built from `config.workers`, `config.ray_address`).
    """
    records_store = store.Store(directory)
    records_store.check_or_write_config(config.to_dict(), RESUME_KEYS)
    records = records_store.load()
    ops = list(config.ops)
    dna_spec = pg.dna_spec(hyper_space(ops))
    # A resumed run draws fresh random numbers (the replayed history is not re-drawn).
    seed = config.seed + 7919 * len(records)
    algorithm = make_algorithm(config, seed)
    algorithm.setup(dna_spec)
    history = []
    for record in records:
        dna = dna_from_genome(space.Genome.from_string(record["genome"]), ops, dna_spec)
        dna.set_metadata("initial_population", record.get("initial_population", True))
        dna.set_metadata("generation_id", record.get("generation_id", 1))
        dna.set_metadata("proposal_id", record["proposal_id"])
        history.append((dna, _reward(record)))
    if history:
        algorithm.recover(history)

    by_hash = {record["hash"]: record for record in records if not record.get("duplicate")}
    evaluated = sum(1 for record in records if not record.get("duplicate"))
    spent = sum(record.get("cost", 0) for record in records)
    next_id = max((record["proposal_id"] for record in records), default=0) + 1
    evaluation = config.evaluation()
    own_executor = executor is None
    executor = executor or Executor(config.workers, config.ray_address)
    bar = _progress(config.max_candidates, evaluated, progress)
    in_flight = {}
    new_evaluations = 0
    proposals_without_evaluation = 0

    def budget_left():
        if stop_after is not None and new_evaluations + len(in_flight) >= stop_after:
            return False
        if config.max_candidates is not None and evaluated + len(in_flight) >= config.max_candidates:
            return False
        return config.budget_steps is None or spent < config.budget_steps

    def finish(record, dna):
        nonlocal evaluated, spent
        records_store.save(record)
        records.append(record)
        reward = _reward(record)
        if reward is not None:
            algorithm.feedback(dna, reward)
        if not record.get("duplicate"):
            evaluated += 1
            spent += record.get("cost", 0)
            by_hash[record["hash"]] = record
            if bar is not None:
                bar.update(1)
                best = max((sum(r["scores"]) / len(r["scores"]) for r in records if r.get("scores")),
                           default=0.0)
                rejected = sum(1 for r in records if r.get("rejected"))
                bar.set_postfix(best=f"{best:.3f}", rejected=rejected, steps=spent)

    try:
        while True:
            while len(in_flight) < executor.workers and budget_left():
                dna = algorithm.propose()
                genome = genome_from_dna(dna, ops)
                graph = genome.to_graph()
                record = {
                    "proposal_id": next_id,
                    "genome": genome.to_string(),
                    "graph": graph.canonical,
                    "formula": graph.formula(),
                    "hash": mutation.functional_hash(graph),
                    "initial_population": bool(dna.metadata.get("initial_population", True)),
                    "generation_id": int(dna.metadata.get("generation_id", 1)),
                    "method": config.method,
                }
                next_id += 1
                earlier = by_hash.get(record["hash"])
                pending = any(r["hash"] == record["hash"] for r, _ in in_flight.values())
                if earlier is not None or pending:
                    proposals_without_evaluation += 1
                    if proposals_without_evaluation > 1000:
                        raise RuntimeError("1000 proposals in a row were duplicates; the search is stuck")
                    record.update(duplicate=True,
                                  duplicate_of=earlier["proposal_id"] if earlier else None,
                                  scores=earlier.get("scores") if earlier else None,
                                  rejected=(earlier.get("rejected") if earlier else "duplicate"),
                                  cost=0)
                    finish(record, dna)
                    continue
                proposals_without_evaluation = 0
                in_flight[executor.submit(graph.canonical, evaluation)] = (record, dna)
            if not in_flight:
                break
            done, _ = concurrent.futures.wait(in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                record, dna = in_flight.pop(future)
                record.update(future.result(), duplicate=False)
                new_evaluations += 1
                finish(record, dna)
    finally:
        if bar is not None:
            bar.close()
        if own_executor:
            executor.shutdown()
    return records

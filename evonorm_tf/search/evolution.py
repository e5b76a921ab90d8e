"""Proposals of the three methods: regularized evolution (PyGlove operators) and random search.

| method | proposals | rejection |
|---|---|---|
| `random` | uniform random genomes | none: every candidate is fully trained |
| `random_rejection` | uniform random genomes | numerical, stability, quality |
| `evolution` | regularized evolution with a multi-objective tournament | numerical, stability, quality |

A proposal is a pure function of `(config, k, history)`: its random
generator is keyed by the search seed and the proposal index `k`, and
`history` holds the records of proposals `1 .. k - feedback_delay` (the
search loop waits for them). A search interrupted anywhere and resumed
therefore proposes exactly what the uninterrupted search proposes.

Evolution is regularized (aging) evolution (Real et al. 2019) with the
paper's tournament and mutation, written with PyGlove's operators
(`pg.evolution.selectors.Random >> TournamentWinner >> ThreeStepMutator`):

- The population is the `population_size` most recent *accepted* candidates.
- Bootstrapping: about 1 % of random genomes pass every rejection test, so a
  population of accepted genomes alone would need ~100 candidates per member
  before the first tournament. Until `population_size` candidates are
  accepted, the free places are taken by the most recent near misses: the
  candidates that failed only the stress test or the trained quality test
  (about a third of random genomes). They rank below every accepted
  candidate (`fitness`), so they are parents only while no accepted
  candidate is in a tournament. The numerical and instant quality
  rejections (constants, NaN) never become parents.
- Proposals are uniform random genomes until the population holds a first
  member; a tournament among fewer than `tournament_size` members takes
  them all, so mutation starts right after the first near miss (about 3
  candidates), not after `population_size` of them. While the population
  holds no accepted candidate, every odd proposal is still a uniform
  random genome (the same one Random + rejection draws at that index):
  children of near misses are accepted no more often than random genomes
  (docs/search.md), so the search keeps random search's chance of finding
  its first accepted layer while it already mutates. From the first
  accepted member on, every proposal is a child.
- A child must be new: if its functional hash (`mutation.functional_hash`)
  is already in the history, the parent is mutated again, up to
  `MAX_NEW_CHILD_TRIES` times, and after every `TRIES_PER_DEPTH` failed
  tries each try applies one more three-step mutation (a parent whose
  one-step neighbourhood has all been seen is left further away). Without
  this, a population of small layers breeds mostly functional duplicates,
  which reuse their original's result and spend no budget, so a budgeted
  search could propose for ever. Only when every try is a duplicate is the
  child recorded as one.
"""

import hashlib
import random

import pyglove as pg

from evonorm_tf.search import encoding, mutation, space

# Fitness offsets: every accepted candidate dominates every near miss on every anchor.
_ACCEPTED, _QUALITY_NEAR_MISS, _STABILITY_NEAR_MISS = 4.0, 2.0, 0.0

MAX_NEW_CHILD_TRIES = 64
TRIES_PER_DEPTH = 16


def proposal_seed(seed, proposal_id):
    """An integer seed for proposal `proposal_id` of a search with `seed` (stable across runs)."""
    digest = hashlib.sha256(f"{seed}:{proposal_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


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
        child = mutation.mutate(encoding.genome_from_dna(dna, ops), self._rng, ops)
        return encoding.dna_from_genome(child, ops, dna.spec)


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
    ("rule", pg.typing.Enum("pareto", ["pareto", "average"]), "Tournament winner rule."),
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


def fitness(record, num_anchors):
    """The tournament fitness of a record (one value per anchor), or None if it cannot be a parent.

    Accepted: `4 + accuracy`; rejected by the trained quality test: `2 +
    accuracy after the quality steps` (0 on anchors it did not reach);
    rejected by the stress test: 0. Numerical and instant quality rejections
    (constant or non-finite layers) are never parents.
    """
    if record.get("scores") and not record.get("rejected"):
        return tuple(_ACCEPTED + score for score in record["scores"])
    if record.get("rejected") == "quality" and record.get("quality_scores"):
        scores = list(record["quality_scores"]) + [0.0] * num_anchors
        return tuple(_QUALITY_NEAR_MISS + score for score in scores[:num_anchors])
    if record.get("rejected") == "stability":
        return (_STABILITY_NEAR_MISS,) * num_anchors
    return None


def population(history, size, num_anchors):
    """`(record, fitness)` of the population after `history` (records in proposal order).

    The `size` most recent accepted candidates; while fewer are accepted, the
    most recent near misses fill the free places (see the module docstring).
    History records of duplicates must carry their original's result.
    """
    accepted, near_misses = [], []
    for record in history:
        value = fitness(record, num_anchors)
        if value is None:
            continue
        (accepted if value[0] >= _ACCEPTED else near_misses).append((record, value))
    members = accepted[-size:]
    free = size - len(members)
    if free > 0:
        members = near_misses[-free:] + members if near_misses else members
    return sorted(members, key=lambda member: member[0]["proposal_id"])


def propose(config, proposal_id, history, dna_spec, hash_of=None):
    """The genome of proposal `proposal_id` and its lineage.

    Args:
      config: the `SearchConfig`.
      proposal_id: the 1-based proposal index `k`.
      history: records of proposals `1 .. k - config.feedback_delay` in order,
        duplicates carrying their original's result.
      dna_spec: `pg.dna_spec(encoding.hyper_space(config.ops))`.
      hash_of: `graph -> functional hash` (default `mutation.functional_hash`;
        the loop passes a cached one). A child whose hash is in `history` is
        mutated again (module docstring).

    Returns:
      `(genome, lineage)`: a `space.Genome` and `{"initial_population": bool,
      "generation_id": int, "parent_id": proposal id or None, "mutation_tries":
      tries until the child was new (0 for random genomes)}`.
    """
    ops = list(config.ops)
    seed = proposal_seed(config.seed, proposal_id)
    members = []
    if config.method == "evolution":
        members = population(history, config.population_size, len(config.anchors))
    bootstrapping = not any(value[0] >= _ACCEPTED for _, value in members)
    if config.method != "evolution" or not members or bootstrapping and proposal_id % 2 == 1:
        dna = pg.random_dna(dna_spec, random.Random(seed))
        return (encoding.genome_from_dna(dna, ops),
                {"initial_population": True, "generation_id": 1, "parent_id": None,
                 "mutation_tries": 0})
    population_dna = []
    for record, value in members:
        dna = encoding.dna_from_genome(space.Genome.from_string(record["genome"]), ops, dna_spec)
        dna.set_metadata("proposal_id", record["proposal_id"])
        dna.set_metadata("generation_id", record.get("generation_id", 1))
        population_dna.append(pg.evolution.set_fitness(dna, value))
    tournament = pg.evolution.selectors.Random(config.tournament_size, seed=seed)
    winner = TournamentWinner(config.rule, seed=seed + 1)
    parent = winner(tournament(population_dna))[0]
    mutator = ThreeStepMutator(ops, seed=seed + 2)
    hash_of = hash_of or mutation.functional_hash
    seen = {record["hash"] for record in history if "hash" in record}
    for tries in range(1, MAX_NEW_CHILD_TRIES + 1):
        child = parent
        for _ in range(1 + (tries - 1) // TRIES_PER_DEPTH):
            child = mutator([child])[0]
        genome = encoding.genome_from_dna(child, ops)
        if hash_of(genome.to_graph()) not in seen:
            break
    return (genome,
            {"initial_population": False,
             "generation_id": int(parent.metadata["generation_id"]) + 1,
             "parent_id": int(parent.metadata["proposal_id"]), "mutation_tries": tries})

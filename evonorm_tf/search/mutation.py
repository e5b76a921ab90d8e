"""Random genomes, the paper's three-step mutation and functional-equivalence hashing.

Random generation (arXiv:2004.02967 §3): starting from the 4 initial nodes,
append nodes until the genome has `space.MAX_NODES`; each new node draws an op
uniformly from the search's op set and its input(s) uniformly from the nodes
before it. The last node is the output.

Mutation, three steps: (1) pick an intermediate node uniformly at random,
(2) replace its op by one drawn uniformly from the op set, (3) re-draw its
input node(s) uniformly from the nodes before it. A mutation of an inactive
node leaves the layer unchanged, so `mutate` repeats the three steps on the
parent until the canonical graph changes (bounded number of tries).

Functional-equivalence hashing (as AutoML-Zero's FEC): two graphs that
compute the same function on fixed random inputs (and fixed random `v0`, `v1`)
get the same hash, so the search trains only one of them.
"""

import hashlib
import random

import numpy as np

from evonorm_tf.search import compiler, space

MAX_MUTATION_TRIES = 100


def random_genome(rng, ops=None, num_nodes=space.MAX_NODES):
    """A random genome with `num_nodes` nodes in all (initial nodes included).

    Args:
      rng: a `random.Random`.
      ops: op names to draw from (default: all 24).
      num_nodes: total node count, 5..`space.MAX_NODES`.
    """
    ops = tuple(ops or space.op_names())
    if not space.NUM_INITIAL < num_nodes <= space.MAX_NODES:
        raise ValueError(f"num_nodes must be in 5..{space.MAX_NODES}, received {num_nodes!r}")
    nodes = []
    for index in range(space.NUM_INITIAL, num_nodes):
        op = space.get_op(rng.choice(ops))
        nodes.append(space.Node(op.name, tuple(rng.randrange(index) for _ in range(op.arity))))
    return space.Genome(nodes)


def mutate_once(genome, rng, ops=None):
    """The three-step mutation, applied once (the layer may not change)."""
    ops = tuple(ops or space.op_names())
    nodes = list(genome.nodes)
    offset = rng.randrange(len(nodes))                                  # (1) a node
    op = space.get_op(rng.choice(ops))                                  # (2) a new op
    index = space.NUM_INITIAL + offset
    inputs = tuple(rng.randrange(index) for _ in range(op.arity))       # (3) new inputs
    nodes[offset] = space.Node(op.name, inputs)
    return space.Genome(nodes)


def mutate(genome, rng, ops=None):
    """A child whose canonical graph differs from the parent's (if one is found)."""
    parent = genome.to_graph()
    child = genome
    for _ in range(MAX_MUTATION_TRIES):
        child = mutate_once(genome, rng, ops)
        if child.to_graph() != parent:
            return child
    return child


_HASH_SHAPE = (4, 4, 4, 8)
_HASH_GROUPS = 2
_SIGNIFICANT_BITS = 12  # ~3.6 significant digits: robust to reordered float32 arithmetic


def functional_hash(graph, seed=0):
    """A hash of the function a graph computes (training mode) on fixed random inputs.

    Two inputs are used (a standard normal and a shifted, scaled one) with
    random `v0`, `v1`; outputs are rounded to ~3.6 significant digits, and
    NaN / ±Inf hash as themselves.
    """
    rng = np.random.default_rng(seed)
    v0 = rng.normal(size=_HASH_SHAPE[-1]).astype(np.float32)
    v1 = rng.normal(1.0, 0.5, size=_HASH_SHAPE[-1]).astype(np.float32)
    digest = hashlib.sha1()
    for loc, scale in ((0.0, 1.0), (0.7, 3.0)):
        x = rng.normal(loc, scale, size=_HASH_SHAPE).astype(np.float32)
        with np.errstate(all="ignore"):
            y, _ = compiler.graph_forward(graph, x, v0, v1, training=True, groups=_HASH_GROUPS)
            y = y.numpy().astype(np.float64)
            mantissa, exponent = np.frexp(np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0))
            mantissa = np.round(mantissa * 2 ** _SIGNIFICANT_BITS)
        digest.update(mantissa.tobytes())
        digest.update(np.where(mantissa == 0, 0, exponent).astype(np.int64).tobytes())
        digest.update(np.isnan(y).tobytes() + np.isposinf(y).tobytes() + np.isneginf(y).tobytes())
    return digest.hexdigest()[:16]


def reads_input(graph):
    """Whether the output of `graph` is connected to the input node `x` (node 0)."""
    connected = {0}
    for offset, node in enumerate(graph.nodes):
        if connected.intersection(node.inputs):
            connected.add(space.NUM_INITIAL + offset)
    return space.NUM_INITIAL + len(graph.nodes) - 1 in connected


def random_graph_statistics(samples, seed=0, ops=None):
    """What uniform random generation produces (the paper's sparse space, measured).

    Returns the fraction of `samples` random genomes whose canonical graph
    reads the input, of those that are also numerically finite and differ
    between samples (so they reach the stress test), and the mean number
    of ops of the canonical graphs.
    """
    from evonorm_tf.search import rejection  # imports Keras; only needed here

    rng = random.Random(seed)
    reads = passes_cheap_checks = ops_total = 0
    for _ in range(samples):
        graph = random_genome(rng, ops).to_graph()
        ops_total += len(graph.nodes)
        if not reads_input(graph):
            continue
        reads += 1
        if rejection.numerically_finite(graph) and rejection.depends_on_sample(graph):
            passes_cheap_checks += 1
    return {"samples": samples, "reads_input": reads / samples,
            "reads_input_and_finite_and_per_sample": passes_cheap_checks / samples,
            "mean_ops": ops_total / samples}

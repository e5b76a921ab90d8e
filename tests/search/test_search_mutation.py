"""Random genomes, the three-step mutation and functional-equivalence hashing."""

import random

import pytest

from evonorm_tf.search import mutation, space


def test_random_genomes_fill_the_node_budget_with_valid_inputs():
    rng = random.Random(0)
    genomes = [mutation.random_genome(rng) for _ in range(200)]
    for genome in genomes:
        assert space.NUM_INITIAL + len(genome.nodes) == space.MAX_NODES
        for offset, node in enumerate(genome.nodes):
            assert all(0 <= i < space.NUM_INITIAL + offset for i in node.inputs)
    ops_seen = {node.op for genome in genomes for node in genome.nodes}
    assert ops_seen == set(space.OPS)  # 2000 uniform draws reach all 24 ops
    # Canonical graphs differ in size: random genomes have inactive nodes.
    assert len({len(g.to_graph().nodes) for g in genomes}) > 3


def test_s_series_genomes_never_use_batch_statistics():
    rng = random.Random(1)
    ops = space.op_names(batch_statistics=False)
    for _ in range(100):
        genome = mutation.random_genome(rng, ops)
        genome = mutation.mutate(genome, rng, ops)
        assert not genome.to_graph().uses_batch_statistics


def test_mutation_changes_exactly_one_node_and_redraws_its_inputs():
    rng = random.Random(2)
    parent = mutation.random_genome(rng)
    changed_positions = set()
    for _ in range(300):
        child = mutation.mutate_once(parent, rng)
        differences = [i for i, (a, b) in enumerate(zip(parent.nodes, child.nodes)) if a != b]
        assert len(differences) <= 1
        if differences:
            (offset,) = differences
            changed_positions.add(offset)
            node = child.nodes[offset]
            assert len(node.inputs) == space.OPS[node.op].arity
            assert all(i < space.NUM_INITIAL + offset for i in node.inputs)
    assert changed_positions == set(range(len(parent.nodes)))  # every node can be picked


def test_mutate_changes_the_active_graph():
    rng = random.Random(3)
    for _ in range(50):
        parent = mutation.random_genome(rng)
        assert mutation.mutate(parent, rng).to_graph() != parent.to_graph()


def test_functionally_equivalent_graphs_share_a_hash():
    def hashed(text):
        return mutation.functional_hash(space.Graph.from_string(text))

    s1 = hashed(space.EVONORM_GRAPHS["evonorm_s1"])
    # x·σ(x) written as σ(x)·x, via a double negation, and divided by std computed twice.
    assert hashed("sigmoid(0);mul(4,0);std_whg(0);div(5,6)") == s1
    assert hashed("neg(0);neg(4);sigmoid(5);mul(0,6);std_whg(0);div(7,8)") == s1
    assert hashed("add(0,1);sigmoid(4);mul(4,5);std_whg(0);div(6,7)") == s1  # x + 0 = x
    # Different functions differ: S2 vs S1, v0 vs v1, instance vs group statistics.
    assert hashed(space.EVONORM_GRAPHS["evonorm_s2"]) != s1
    assert hashed("mul(0,2)") != hashed("mul(0,3)")
    assert hashed("sigmoid(0);mul(0,4);std_wh(0);div(5,6)") != s1
    # Non-finite outputs hash deterministically.
    assert hashed("div(0,1)") == hashed("div(0,1)") != hashed("neg(0);div(4,1)")


def test_bad_node_count_is_rejected():
    with pytest.raises(ValueError, match="received 20"):
        mutation.random_genome(random.Random(0), num_nodes=20)

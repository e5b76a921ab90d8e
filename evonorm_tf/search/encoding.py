"""Genomes as PyGlove DNA: the search space of one node list, and conversions both ways."""

import pyglove as pg

from evonorm_tf.search import space


def hyper_space(ops):
    """The genome as a PyGlove search space: per node an op and two input choices."""
    return pg.List([
        pg.Dict(op=pg.oneof(list(ops)), first=pg.oneof(list(range(index))),
                second=pg.oneof(list(range(index))))
        for index in range(space.NUM_INITIAL, space.MAX_NODES)
    ])


def genome_from_dna(dna, ops):
    """The `space.Genome` of a DNA of `hyper_space(ops)` (unused second inputs are dropped)."""
    numbers = dna.to_numbers()
    nodes = []
    for offset in range(len(numbers) // 3):
        op = space.OPS[ops[numbers[3 * offset]]]
        nodes.append(space.Node(op.name, tuple(numbers[3 * offset + 1: 3 * offset + 1 + op.arity])))
    return space.Genome(nodes)


def dna_from_genome(genome, ops, dna_spec):
    """The DNA of a full-length genome (a unary op's unused second input is 0)."""
    numbers = []
    for node in genome.nodes:
        inputs = list(node.inputs) + [0] * (2 - len(node.inputs))
        numbers += [ops.index(node.op)] + inputs
    return pg.DNA.from_numbers(numbers, dna_spec)

"""The search space of normalization-activation layers, as plain data.

A layer is a directed acyclic graph (Liu, Brock, Simonyan, Le 2020,
arXiv:2004.02967, §3). Nodes 0–3 are the initial nodes:

| index | name | value |
|---|---|---|
| 0 | `x` | the input tensor |
| 1 | `zero` | a constant zero tensor |
| 2 | `v0` | a trainable per-channel vector, initialised to 0 |
| 3 | `v1` | a trainable per-channel vector, initialised to 1 |

Every further node applies one primitive op from `OPS` to one or two
earlier nodes; every op keeps x's shape (aggregations broadcast back). A
genome has at most `MAX_NODES = 14` nodes in all and its last node is the
output; the layer returns `output · γ + β`.

`OPS` has the paper's 24 primitives: 12 element-wise ops and 12
aggregations (mean, mean of squares, standard deviation, each over
`(b,w,h)` batch, `(w,h,c)` layer, `(w,h)` instance or `(w,h,c/g)` group
axes). The batch aggregations are left out of S-series searches
(`op_names(batch_statistics=False)`).

ε conventions (documented choices, see docs/search.md): the two
second-order aggregations carry ε so that dividing by them or taking their
square root is safe, `mean_sq_I(x) = μ_I(x²) + ε` and
`std_I(x) = sqrt(σ²_I(x) + ε)`. `log` and `sqrt` are sign-preserving and
defined at 0 (`sign(x)·ln|x|`, `sign(x)·sqrt|x|`, both 0 at x = 0). `div` is
a plain division: a division by zero produces Inf and is rejected.

A `Genome` is the full node list (inactive nodes included, so mutation can
revive them); a `Graph` is its pruned, canonical form: only nodes the
output depends on, renumbered in order, commutative inputs sorted. The
canonical string of a graph, e.g. for EvoNorm-S1

    sigmoid(0);mul(0,4);std_whg(0);div(5,6)

is what `get_norm_act("graph:" + canonical)` accepts.
"""

import collections
import dataclasses
import re

INITIAL_NODES = ("x", "zero", "v0", "v1")
NUM_INITIAL = len(INITIAL_NODES)
MAX_NODES = 14

AXES = ("bwh", "whc", "wh", "whg")
AXES_DESCRIPTION = {
    "bwh": "(b,w,h): batch statistic",
    "whc": "(w,h,c): layer statistic",
    "wh": "(w,h): instance statistic",
    "whg": "(w,h,c/g): group statistic",
}
STATISTICS = ("mean", "mean_sq", "std")


@dataclasses.dataclass(frozen=True)
class Op:
    """A primitive op.

    Attributes:
      name: canonical name (`"add"`, `"std_whg"`, ...).
      arity: 1 or 2.
      statistic: `None` for element-wise ops, else one of `STATISTICS`.
      axes: `None` for element-wise ops, else one of `AXES`.
      commutative: whether the two inputs may be swapped.
      template: how the op renders in a formula (`{0}`, `{1}` are inputs).
    """

    name: str
    arity: int
    statistic: str = None
    axes: str = None
    commutative: bool = False
    template: str = ""

    @property
    def is_aggregation(self):
        return self.statistic is not None

    @property
    def uses_batch(self):
        return self.axes == "bwh"


_ELEMENTWISE = (
    Op("add", 2, commutative=True, template="{0} + {1}"),
    Op("mul", 2, commutative=True, template="{0}·{1}"),
    Op("div", 2, template="{0} / {1}"),
    Op("max", 2, commutative=True, template="max({0}, {1})"),
    Op("neg", 1, template="−{0}"),
    Op("sigmoid", 1, template="σ({0})"),
    Op("tanh", 1, template="tanh({0})"),
    Op("exp", 1, template="exp({0})"),
    Op("log", 1, template="slog({0})"),
    Op("abs", 1, template="|{0}|"),
    Op("square", 1, template="{0}²"),
    Op("sqrt", 1, template="ssqrt({0})"),
)

_STATISTIC_TEMPLATES = {"mean": "μ_{axes}({0})", "mean_sq": "μ2_{axes}({0})", "std": "s_{axes}({0})"}

_AGGREGATIONS = tuple(
    Op(f"{statistic}_{axes}", 1, statistic=statistic, axes=axes,
       template=_STATISTIC_TEMPLATES[statistic].replace("{axes}", axes))
    for statistic in STATISTICS
    for axes in AXES
)

OPS = collections.OrderedDict((op.name, op) for op in _ELEMENTWISE + _AGGREGATIONS)


def op_names(batch_statistics=True):
    """Names of the ops of a search: all 24, or 21 without batch statistics (S-series)."""
    return tuple(name for name, op in OPS.items() if batch_statistics or not op.uses_batch)


def get_op(name):
    if name not in OPS:
        raise ValueError(f"unknown op {name!r}; valid ops: {', '.join(OPS)}")
    return OPS[name]


@dataclasses.dataclass(frozen=True)
class Node:
    """An intermediate node: `op` applied to earlier node indices `inputs`."""

    op: str
    inputs: tuple


class Genome:
    """A full node list; the last node is the output.

    Args:
      nodes: a sequence of `Node` (or `(op, inputs)` pairs) for indices
        4, 5, ...; each input index must be smaller than the node's own.
    """

    def __init__(self, nodes):
        self.nodes = tuple(Node(op, tuple(inputs)) for op, inputs in
                           ((n.op, n.inputs) if isinstance(n, Node) else n for n in nodes))
        validate_nodes(self.nodes)

    def __eq__(self, other):
        return isinstance(other, Genome) and self.nodes == other.nodes

    def __hash__(self):
        return hash(self.nodes)

    def __repr__(self):
        return f"Genome({self.to_string()!r})"

    def to_string(self):
        return _nodes_to_string(self.nodes)

    @classmethod
    def from_string(cls, text):
        return cls(_parse_nodes(text))

    def to_graph(self):
        """The canonical pruned graph: only ancestors of the output, renumbered."""
        return Graph(_canonical_nodes(self.nodes))


class Graph:
    """A canonical pruned graph (what gets compiled, hashed and rendered).

    Build one with `Graph.from_string(canonical)` or `Genome.to_graph()`.
    `Graph(nodes)` canonicalises the nodes it is given.
    """

    def __init__(self, nodes):
        nodes = tuple(Node(op, tuple(inputs)) for op, inputs in
                      ((n.op, n.inputs) if isinstance(n, Node) else n for n in nodes))
        validate_nodes(nodes)
        self.nodes = _canonical_nodes(nodes)

    @classmethod
    def from_string(cls, text):
        return cls(_parse_nodes(text))

    @property
    def canonical(self):
        return _nodes_to_string(self.nodes)

    @property
    def uses_batch_statistics(self):
        return any(OPS[node.op].uses_batch for node in self.nodes)

    def used_initial_nodes(self):
        """Names of the initial nodes read by some op."""
        used = {i for node in self.nodes for i in node.inputs if i < NUM_INITIAL}
        return tuple(INITIAL_NODES[i] for i in sorted(used))

    def formula(self):
        """A readable formula, e.g. `x / max(s_bwh(x), (v1·x + s_wh(x)))`."""
        rendered = list(INITIAL_NODES)
        for node in self.nodes:
            template = OPS[node.op].template
            operands = [rendered[i] for i in node.inputs]
            if node.op == "mul":
                operands = [_atom(t) if re.search(r"[+/−]", t) else t for t in operands]
            elif node.op in ("div", "neg", "square"):
                operands = [_atom(t) for t in operands]
            rendered.append(template.format(*operands))
        return rendered[-1]

    def __eq__(self, other):
        return isinstance(other, Graph) and self.nodes == other.nodes

    def __hash__(self):
        return hash(self.nodes)

    def __repr__(self):
        return f"Graph({self.canonical!r})"


def _atom(text):
    """Parenthesises `text` unless it is a name or a call like `σ(...)`."""
    if re.fullmatch(r"[\w.]+", text):
        return text
    if text.endswith(")") and "(" in text:
        opening = text.index("(")
        if re.fullmatch(r"[^\s()+/·−]*", text[:opening]) and _balanced(text[opening + 1:-1]):
            return text
    if text.startswith("|") and text.endswith("|") and text.count("|") == 2:
        return text
    return f"({text})"


def _balanced(text):
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def validate_nodes(nodes):
    if not nodes:
        raise ValueError("a graph needs at least one op node, received none")
    if NUM_INITIAL + len(nodes) > MAX_NODES:
        raise ValueError(
            f"a graph has at most {MAX_NODES} nodes ({MAX_NODES - NUM_INITIAL} ops), "
            f"received {len(nodes)} ops"
        )
    for offset, node in enumerate(nodes):
        index = NUM_INITIAL + offset
        op = get_op(node.op)
        if len(node.inputs) != op.arity:
            raise ValueError(
                f"op {node.op!r} takes {op.arity} input(s), received {node.inputs!r} at node {index}"
            )
        for source in node.inputs:
            if not isinstance(source, int) or not 0 <= source < index:
                raise ValueError(
                    f"node {index} ({node.op}) may read nodes 0..{index - 1}, received input {source!r}"
                )


def _canonical_nodes(nodes):
    """Prunes to the output's ancestors, renumbers, sorts commutative inputs."""
    output = NUM_INITIAL + len(nodes) - 1
    needed = set()
    stack = [output]
    while stack:
        index = stack.pop()
        if index < NUM_INITIAL or index in needed:
            continue
        needed.add(index)
        stack.extend(nodes[index - NUM_INITIAL].inputs)
    renumber = {i: i for i in range(NUM_INITIAL)}
    kept = []
    for index in sorted(needed):
        node = nodes[index - NUM_INITIAL]
        inputs = tuple(renumber[i] for i in node.inputs)
        if OPS[node.op].commutative:
            inputs = tuple(sorted(inputs))
        renumber[index] = NUM_INITIAL + len(kept)
        kept.append(Node(node.op, inputs))
    return tuple(kept)


def _nodes_to_string(nodes):
    return ";".join(f"{node.op}({','.join(map(str, node.inputs))})" for node in nodes)


_NODE_PATTERN = re.compile(r"^([a-z_]+)\((\d+(?:,\d+)?)\)$")


def _parse_nodes(text):
    if not isinstance(text, str):
        raise TypeError(f"a graph string must be a str, received {text!r}")
    nodes = []
    for part in text.strip().split(";"):
        match = _NODE_PATTERN.match(part.strip().replace(" ", ""))
        if not match:
            raise ValueError(
                f"cannot parse node {part!r} of graph {text!r}; expected e.g. 'add(0,3)'"
            )
        nodes.append(Node(match.group(1), tuple(int(i) for i in match.group(2).split(","))))
    return tuple(nodes)


# The six EvoNorms in this space (see tests/search/test_search_space.py and docs/search.md).
# `exp(zero)` is the constant 1 of B1; `v1` (initialised to 1) is B0's and S0's v.
EVONORM_GRAPHS = {
    "evonorm_b0": "std_bwh(0);mul(0,3);std_wh(0);add(5,6);max(4,7);div(0,8)",
    "evonorm_b1": "std_bwh(0);exp(1);add(0,5);mean_sq_wh(0);sqrt(7);mul(6,8);max(4,9);div(0,10)",
    "evonorm_b2": "std_bwh(0);mean_sq_wh(0);sqrt(5);neg(0);add(6,7);max(4,8);div(0,9)",
    "evonorm_s0": "mul(0,3);sigmoid(4);mul(0,5);std_whg(0);div(6,7)",
    "evonorm_s1": "sigmoid(0);mul(0,4);std_whg(0);div(5,6)",
    "evonorm_s2": "sigmoid(0);mul(0,4);mean_sq_whg(0);sqrt(6);div(5,7)",
}

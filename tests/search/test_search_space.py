"""The search space as data: ops, genomes, canonical graphs, formulas."""

import pytest

from evonorm_tf.search import space


def test_the_paper_primitive_set():
    elementwise = [name for name, op in space.OPS.items() if not op.is_aggregation]
    aggregations = [name for name, op in space.OPS.items() if op.is_aggregation]
    assert elementwise == ["add", "mul", "div", "max", "neg", "sigmoid", "tanh", "exp", "log",
                           "abs", "square", "sqrt"]
    assert len(aggregations) == 12
    assert {(space.OPS[n].statistic, space.OPS[n].axes) for n in aggregations} == {
        (s, a) for s in ("mean", "mean_sq", "std") for a in ("bwh", "whc", "wh", "whg")
    }
    assert [space.OPS[n].arity for n in elementwise] == [2, 2, 2, 2] + [1] * 8
    assert space.INITIAL_NODES == ("x", "zero", "v0", "v1") and space.MAX_NODES == 14


def test_s_series_search_has_no_batch_statistics():
    names = space.op_names(batch_statistics=False)
    assert len(names) == 21 and not any(name.endswith("_bwh") for name in names)
    assert len(space.op_names()) == 24


def test_canonical_graph_prunes_renumbers_and_sorts_commutative_inputs():
    genome = space.Genome([
        ("exp", (0,)),        # 4: dead
        ("sigmoid", (0,)),    # 5
        ("tanh", (4,)),       # 6: dead
        ("mul", (5, 0)),      # 7 -> inputs sorted (0, 5) -> renumbered (0, 4)
        ("std_whg", (0,)),    # 8
        ("div", (7, 8)),      # 9: output
    ])
    graph = genome.to_graph()
    assert graph.canonical == "sigmoid(0);mul(0,4);std_whg(0);div(5,6)"
    assert graph == space.Graph.from_string(space.EVONORM_GRAPHS["evonorm_s1"])
    assert space.Graph.from_string(graph.canonical).canonical == graph.canonical
    # Non-commutative inputs keep their order.
    assert space.Graph.from_string("div(3,0)").canonical == "div(3,0)"
    assert space.Genome.from_string(genome.to_string()) == genome


def test_graph_strings_render_as_formulas():
    formulas = {name: space.Graph.from_string(text).formula()
                for name, text in space.EVONORM_GRAPHS.items()}
    assert formulas["evonorm_b0"] == "x / max(s_bwh(x), x·v1 + s_wh(x))"
    assert formulas["evonorm_s1"] == "(x·σ(x)) / s_whg(x)"
    assert formulas["evonorm_s2"] == "(x·σ(x)) / ssqrt(μ2_whg(x))"
    assert space.Graph.from_string("add(0,3);neg(4);square(5)").formula() == "(−(x + v1))²"


def test_batch_statistics_and_used_nodes_are_reported():
    b0 = space.Graph.from_string(space.EVONORM_GRAPHS["evonorm_b0"])
    s0 = space.Graph.from_string(space.EVONORM_GRAPHS["evonorm_s0"])
    assert b0.uses_batch_statistics and not s0.uses_batch_statistics
    assert b0.used_initial_nodes() == ("x", "v1")
    assert space.Graph.from_string("exp(1)").used_initial_nodes() == ("zero",)


@pytest.mark.parametrize(
    "text, message",
    [
        ("add(0)", "takes 2 input"),
        ("sigmoid(4)", "may read nodes 0..3"),
        ("bogus(0)", "unknown op 'bogus'"),
        ("add(0,1", "cannot parse node"),
        (";".join(["neg(0)"] * 11), "at most 14 nodes"),
    ],
)
def test_invalid_graphs_raise_value_errors_quoting_the_input(text, message):
    with pytest.raises(ValueError, match=message):
        space.Graph.from_string(text)


def test_graph_string_must_be_a_string():
    with pytest.raises(TypeError, match="received 3"):
        space.Graph.from_string(3)

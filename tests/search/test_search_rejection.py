"""Each rejection rule on known-bad layers, and known-good layers passing."""

import pytest

from evonorm_tf.search import config as search_config
from evonorm_tf.search import evaluation, proxy, rejection, space

TINY = dict(anchors=("resnet",), num_train=256, num_test=128, width=8, train_steps=10,
            batch_size=32, quality_steps=5, stability_steps=2, max_candidates=1, workers=0)


@pytest.fixture(scope="module")
def data():
    return proxy.textures(num_train=256, num_test=128, noise=0.2)


def test_numerical_rule_rejects_nan_and_inf_layers():
    assert not rejection.numerically_finite(space.Graph.from_string("div(0,1)"))   # x / 0
    assert not rejection.numerically_finite(space.Graph.from_string("exp(0);exp(4);exp(5)"))
    assert rejection.numerically_finite(space.Graph.from_string(space.EVONORM_GRAPHS["evonorm_b0"]))


def test_sample_independent_layers_are_rejected_for_quality_without_training():
    for text in ("neg(1)", "exp(3)", "std_bwh(0)", "mean_whc(2);sigmoid(4)"):
        assert not rejection.depends_on_sample(space.Graph.from_string(text)), text
    for text in ("max(0,1)", space.EVONORM_GRAPHS["evonorm_s0"]):
        assert rejection.depends_on_sample(space.Graph.from_string(text)), text


def test_stability_rule_rejects_a_layer_without_normalization(data):
    config = rejection.StabilityConfig(steps=3)
    passed, worst = rejection.stability_test("graph:max(0,1)", data, config)   # plain ReLU
    assert not passed and worst > config.threshold
    passed, worst = rejection.stability_test("graph:" + space.EVONORM_GRAPHS["evonorm_s1"], data, config)
    assert passed and worst < 1e3


def test_stress_tests_of_many_candidates_log_no_retracing_warning(data, caplog):
    config = rejection.StabilityConfig(steps=1)
    for text in ("max(0,1)", "tanh(0)", "sigmoid(0)", "neg(0)", "abs(0)", "max(0,2)", "tanh(0);neg(4)"):
        rejection.stability_test("graph:" + text, data, config)
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]


def test_quality_rule_rejects_a_constant_layer_that_reaches_training():
    # exp(v0) is 1 at initialisation and sample-independent: rejected before training.
    result = evaluation.evaluate_candidate("exp(2)", search_config.SearchConfig(**TINY).evaluation())
    assert result["rejected"] == "quality" and result["scores"] is None
    # A layer that passes the cheap checks but cannot learn in the quality budget:
    # the threshold is above what 5 steps reach, so the short training itself rejects it.
    config = search_config.SearchConfig(**{**TINY, "quality_threshold": 0.99}).evaluation()
    result = evaluation.evaluate_candidate(space.EVONORM_GRAPHS["evonorm_s1"], config)
    assert result["rejected"] == "quality" and len(result["quality_scores"]) == 1
    assert result["cost"] == 3 * TINY["stability_steps"] + TINY["quality_steps"]


def test_a_good_layer_is_accepted_and_scored_on_every_anchor():
    config = search_config.SearchConfig(**{**TINY, "quality_threshold": 0.0}).evaluation()
    result = evaluation.evaluate_candidate(space.EVONORM_GRAPHS["evonorm_s1"], config)
    assert result["rejected"] is None and len(result["scores"]) == 1
    assert 0.0 <= result["scores"][0] <= 1.0
    assert result["cost"] == 3 * TINY["stability_steps"] + TINY["train_steps"]


@pytest.mark.slow
def test_without_rejection_an_unstable_layer_is_trained_and_scored():
    config = search_config.SearchConfig(**{**TINY, "method": "random", "train_steps": 5}).evaluation()
    result = evaluation.evaluate_candidate("div(0,1)", config)
    assert result["rejected"] is None and result["scores"] == [0.0]   # diverged: scored 0

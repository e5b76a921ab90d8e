"""Evaluating one candidate: the rejection tests, then the proxy training on every anchor.

`evaluate_candidate` is a plain function of plain data (a canonical graph
string and `SearchConfig.evaluation()`), so the in-process loop, a local
process pool and Ray workers run the same code (`executors`).
"""

import functools
import math
import time

from evonorm_tf.search import proxy, rejection, space


@functools.lru_cache(maxsize=2)
def _data(name, data_dir, num_train, num_test, image_size, noise, seed):
    return proxy.load_data(name, data_dir, seed=seed, num_train=num_train, num_test=num_test,
                           image_size=image_size, noise=noise)


def evaluate_candidate(graph_text, evaluation):
    """Evaluates one canonical graph; returns a plain dict.

    Steps (with `evaluation["rejection"]`): numerical check → output differs
    between samples → stability stress test on every stability anchor → per
    anchor, train `quality_steps`, check accuracy ≥ `quality_threshold` →
    continue to `train_steps`. Without rejection only the full training runs
    (a diverged run scores 0).

    Returns:
      `{"scores": [accuracy per anchor] or None, "rejected": reason or None,
      "cost": compute units, "seconds": wall time, "max_gradient_norm": ...,
      "quality_scores": [accuracy per anchor after quality_steps] or None}`.
      `quality_scores` of a candidate rejected for quality lists the anchors
      trained up to the one that failed.
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
        worst_overall = 0.0
        for anchor in e["stability_anchors"]:
            config = rejection.StabilityConfig(
                steps=e["stability_steps"], learning_rate=e["stability_learning_rate"],
                threshold=e["stability_threshold"], anchor=anchor)
            passed, worst, steps = rejection.run_stress_test(name, data, config, e["width"], e["seed"])
            result["cost"] += 3 * steps
            worst_overall = max(worst_overall, worst)
            result["max_gradient_norm"] = worst_overall if math.isfinite(worst_overall) else "inf"
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
    for index, trainer in enumerate(trainers):
        before = trainer.steps_done
        finite = trainer.train(e["train_steps"] - trainer.steps_done)
        result["cost"] += trainer.steps_done - before
        if not finite and e["rejection"]:
            result["rejected"] = "numerical"
            return finish()
        if trainer.steps_done == before and quality:      # quality test at the full budget
            scores.append(quality[index])
        else:
            scores.append(trainer.accuracy() if finite else 0.0)
    result["scores"] = scores
    return finish()

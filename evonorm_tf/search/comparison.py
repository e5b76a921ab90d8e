"""The multi-seed comparison of methods: Random, Random + rejection, Evolution + rejection.

A comparison directory holds one search per method and seed:
`<root>/<method>/seed<N>/` (`python -m evonorm_tf.search search --method M
--seed N --output <root>/<method>/seed<N>`). `summarize` compares them at an
equal budget (the smallest compute and the smallest candidate count reached by
every search), so searches stopped by a wall clock compare fairly.
"""

import os
import statistics

from evonorm_tf.search import report, store

LABELS = {"random": "Random", "random_rejection": "Random + rejection",
          "evolution": "Evolution + rejection"}


def directories(root):
    """`{method: [search directories, by seed]}` found under `root`."""
    found = {}
    for method in LABELS:
        base = os.path.join(root, method)
        if not os.path.isdir(base):
            continue
        runs = sorted(os.path.join(base, name) for name in os.listdir(base)
                      if os.path.isfile(os.path.join(base, name, "config.json")))
        if runs:
            found[method] = runs
    if not found:
        raise ValueError(f"{root!r} holds no searches (<method>/seed<N>/config.json), "
                         f"methods: {', '.join(LABELS)}")
    return found


def _best_within(records, limit, by):
    xs, ys = report.best_so_far(records, by)
    best = 0.0
    for x, y in zip(xs, ys):
        if x > limit:
            break
        best = y
    return best


def summarize(root):
    """Rows (one per search) and per-method means at an equal budget.

    Returns:
      `{"equal_compute": steps, "equal_candidates": count, "runs": [row per
      search], "methods": {method: means over seeds}}`. A row holds the
      method, seed, candidates evaluated, duplicates, compute, rejection
      counts, the candidate at which the first mutated child was evaluated,
      children (accepted), and the best accepted mean accuracy overall, at
      the equal compute and at the equal candidate count, with its graph.
    """
    found = directories(root)
    loaded = {(method, path): store.Store(path).load()
              for method, paths in found.items() for path in paths}
    compute = min(sum(r.get("cost", 0) for r in report.evaluated(records))
                  for records in loaded.values())
    candidates = min(len(report.evaluated(records)) for records in loaded.values())
    rows = []
    for (method, path), records in loaded.items():
        config = store.read_json(os.path.join(path, "config.json"))
        summary = report.write_outputs(path)
        rows.append({
            "method": method, "seed": config["seed"], "evaluated": summary["evaluated"],
            "duplicates": summary["duplicates"], "compute_steps": summary["compute_steps"],
            "rejections": summary["rejections"],
            "first_child_at_candidate": summary["first_child_at_candidate"],
            "children": summary["children"], "children_accepted": summary["children_accepted"],
            "best": summary["best"]["mean_accuracy"] if summary["best"] else 0.0,
            "best_graph": summary["best"]["graph"] if summary["best"] else None,
            "best_at_equal_compute": _best_within(records, compute, "cost"),
            "best_at_equal_candidates": _best_within(records, candidates, "count"),
        })
    methods = {}
    for method in found:
        mine = [row for row in rows if row["method"] == method]
        methods[method] = {
            key: statistics.mean(row[key] for row in mine)
            for key in ("evaluated", "compute_steps", "best", "best_at_equal_compute",
                        "best_at_equal_candidates")
        }
        methods[method]["seeds"] = sorted(row["seed"] for row in mine)
    return {"equal_compute": compute, "equal_candidates": candidates, "runs": rows,
            "methods": methods}

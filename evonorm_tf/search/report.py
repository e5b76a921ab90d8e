"""Outputs of a search: leaderboard, Pareto front, rejection counts, progress plot, re-ranking."""

import collections
import csv
import os

from evonorm_tf.search import evolution, proxy, store


def evaluated(records):
    """Records of candidates that were actually evaluated (duplicates left out)."""
    return [record for record in records if not record.get("duplicate")]


def mean_score(record):
    scores = record.get("scores")
    return sum(scores) / len(scores) if scores else None


def rejection_counts(records):
    """`{reason: count}` over evaluated candidates, plus `accepted` and `total`."""
    counts = collections.Counter(record.get("rejected") or "accepted" for record in evaluated(records))
    counts["total"] = len(evaluated(records))
    return dict(counts)


def leaderboard(records, anchors):
    """Rows sorted by mean accuracy (rejected candidates last)."""
    rows = []
    for record in evaluated(records):
        row = {
            "proposal_id": record["proposal_id"],
            "graph": record["graph"],
            "formula": record["formula"],
            "mean_accuracy": mean_score(record),
            "rejected": record.get("rejected") or "",
            "cost": record.get("cost", 0),
            "max_gradient_norm": record.get("max_gradient_norm"),
        }
        for index, anchor in enumerate(anchors):
            row[anchor] = record["scores"][index] if record.get("scores") else None
        rows.append(row)
    rows.sort(key=lambda row: (row["mean_accuracy"] is None, -(row["mean_accuracy"] or 0.0)))
    return rows


def pareto_rows(rows, anchors):
    scored = [row for row in rows if row["mean_accuracy"] is not None]
    front = evolution.pareto_front([tuple(row[a] for a in anchors) for row in scored])
    return [scored[i] for i in front]


def best_so_far(records, by="cost"):
    """`(x, best mean accuracy)` steps over evaluated records in proposal order."""
    xs, ys = [], []
    best, spent = 0.0, 0
    for count, record in enumerate(evaluated(records), start=1):
        spent += record.get("cost", 0)
        score = mean_score(record)
        if score is not None and not record.get("rejected"):
            best = max(best, score)
        xs.append(spent if by == "cost" else count)
        ys.append(best)
    return xs, ys


def _write_csv(path, rows):
    if not rows:
        return
    temporary = path + ".partial"
    with open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, path)


def write_outputs(directory):
    """Writes leaderboard.csv/.json, pareto_front.json and summary.json for one search."""
    config = store.read_json(os.path.join(directory, "config.json"))
    records = store.Store(directory).load()
    anchors = config["anchors"]
    rows = leaderboard(records, anchors)
    _write_csv(os.path.join(directory, "leaderboard.csv"), rows)
    store.write_json_atomic(os.path.join(directory, "leaderboard.json"), rows)
    store.write_json_atomic(os.path.join(directory, "pareto_front.json"), pareto_rows(rows, anchors))
    counts = rejection_counts(records)
    summary = {
        "method": config["method"],
        "evaluated": counts["total"],
        "duplicates": len(records) - counts["total"],
        "rejections": counts,
        "rejection_rate": 1.0 - counts.get("accepted", 0) / max(1, counts["total"]),
        "compute_steps": sum(record.get("cost", 0) for record in records),
        "best": rows[0] if rows and rows[0]["mean_accuracy"] is not None else None,
    }
    store.write_json_atomic(os.path.join(directory, "summary.json"), summary)
    return summary


def plot_progress(directories, path, labels=None):
    """Best mean accuracy vs compute (left) and vs candidates evaluated (right), one line per search."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for index, directory in enumerate(directories):
        records = store.Store(directory).load()
        label = labels[index] if labels else os.path.basename(os.path.normpath(directory))
        for axis, by in zip(axes, ("cost", "count")):
            xs, ys = best_so_far(records, by)
            axis.step(xs, ys, where="post", label=label)
    axes[0].set_xlabel("compute (anchor training steps, incl. rejection tests)")
    axes[1].set_xlabel("candidates evaluated")
    for axis in axes:
        axis.axhline(1.0 / proxy.NUM_CLASSES, color="grey", linestyle=":", label="chance")
        axis.set_ylabel("best mean accuracy over anchors (0: none accepted)")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    temporary = path + ".partial.png"
    figure.savefig(temporary, dpi=110)
    plt.close(figure)
    os.replace(temporary, path)


def rerank(names, config, steps, seeds=(0,), progress=print):
    """Trains each norm-act `name` on every anchor for `steps` steps per seed.

    Returns rows `{name, anchor accuracies (mean over seeds), mean_accuracy}`
    sorted by mean accuracy; used to re-rank the best searched layers against
    BN-ReLU and the EvoNorms with a longer schedule than the search's.
    """
    data = proxy.load_data(config.data, config.data_dir, seed=10_000 + config.seed,
                           **({"num_train": config.num_train, "num_test": config.num_test,
                               "image_size": config.image_size, "noise": config.noise}
                              if config.data == "textures" else {"num_train": config.num_train}))
    train_config = proxy.TrainConfig(steps=steps, batch_size=config.batch_size,
                                     optimizer=config.optimizer, learning_rate=config.learning_rate)
    rows = []
    for name in names:
        row = {"name": name}
        for anchor in config.anchors:
            accuracies = [proxy.train_anchor(name, anchor, data, train_config, config.width, seed)
                          for seed in seeds]
            row[anchor] = sum(accuracies) / len(accuracies)
        row["mean_accuracy"] = sum(row[a] for a in config.anchors) / len(config.anchors)
        progress(f"rerank {name}: {row['mean_accuracy']:.4f}")
        rows.append(row)
    rows.sort(key=lambda row: -row["mean_accuracy"])
    return rows


def write_rerank(rows, directory):
    os.makedirs(directory, exist_ok=True)
    _write_csv(os.path.join(directory, "rerank.csv"), rows)
    store.write_json_atomic(os.path.join(directory, "rerank.json"), rows)

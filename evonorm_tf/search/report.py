"""Outputs of a search: leaderboard, Pareto front, rejection counts, re-ranking (plots: `plots`)."""

import collections
import concurrent.futures
import csv
import functools
import multiprocessing
import os
import statistics

from evonorm_tf.search import evolution, executors, proxy, store


def evaluated(records):
    """Records of candidates that were actually evaluated (duplicates left out)."""
    return [record for record in records if not record.get("duplicate")]


def mean_score(record):
    scores = record.get("scores")
    return sum(scores) / len(scores) if scores else None


def first_candidates(records, count):
    """Records (in proposal order) up to the `count`-th evaluated candidate; all if `count` is None.

    Compares searches at an equal candidate budget when one of them ran longer.
    """
    if count is None:
        return list(records)
    kept, seen = [], 0
    for record in sorted(records, key=lambda record: record["proposal_id"]):
        if not record.get("duplicate"):
            if seen == count:
                break
            seen += 1
        kept.append(record)
    return kept


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


def first_child(records):
    """How many candidates were evaluated when the first mutated child was (1-based), or None."""
    for count, record in enumerate(evaluated(records), start=1):
        if not record.get("initial_population", True):
            return count
    return None


def _write_csv(path, rows):
    if not rows:
        return
    temporary = path + ".partial"
    with open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, path)


def write_outputs(directory, first=None):
    """Writes leaderboard.csv/.json, pareto_front.json and summary.json for one search.

    `first`: only the first `first` evaluated candidates (see `first_candidates`).
    """
    config = store.read_json(os.path.join(directory, "config.json"))
    records = first_candidates(store.Store(directory).load(), first)
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
        "seconds": round(sum(record.get("seconds") or 0.0 for record in evaluated(records)), 1),
        "best": rows[0] if rows and rows[0]["mean_accuracy"] is not None else None,
        "first_child_at_candidate": first_child(records),
        "children": sum(1 for r in evaluated(records) if not r.get("initial_population", True)),
        "children_accepted": sum(1 for r in evaluated(records)
                                 if not r.get("initial_population", True) and not r.get("rejected")),
    }
    store.write_json_atomic(os.path.join(directory, "summary.json"), summary)
    return summary


def _rerank_job(name, anchor, seed, data_spec, train_spec, width):
    data = _rerank_data(*data_spec)
    return proxy.train_anchor(name, anchor, data, proxy.TrainConfig(**train_spec), width, seed)


@functools.lru_cache(maxsize=1)
def _rerank_data(name, data_dir, seed, num_train, num_test, image_size, noise):
    return proxy.load_data(name, data_dir, seed=seed, num_train=num_train, num_test=num_test,
                           image_size=image_size, noise=noise)


def rerank(names, config, steps, seeds=(0,), progress=print, workers=0):
    """Trains each norm-act `name` on every anchor for `steps` steps per seed.

    The data are a fresh draw of the search's proxy (`seed = 10,000 + search
    seed`: new texture images, or a new train/held-out split of digits), so
    the layers are not scored on the images that selected them. `workers > 0`
    trains the (name, anchor, seed) runs in a spawn process pool, one
    TensorFlow thread each (as the search's `executors.Executor`).

    Returns rows sorted by mean accuracy: `{name, <anchor>: mean over seeds,
    <anchor>_sd, mean_accuracy: mean over seeds of the anchor mean,
    mean_accuracy_sd: its standard deviation over seeds (0 for one seed),
    seeds, per_seed: [anchor mean per seed]}`.
    """
    data_spec = (config.data, config.data_dir, 10_000 + config.seed, config.num_train,
                 config.num_test, config.image_size, config.noise)
    train_spec = {"steps": steps, "batch_size": config.batch_size, "optimizer": config.optimizer,
                  "learning_rate": config.learning_rate}
    jobs = [(name, anchor, seed) for name in names for anchor in config.anchors for seed in seeds]
    if workers > 0:
        pool = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=executors.init_worker)
        with pool:
            futures = {job: pool.submit(_rerank_job, *job, data_spec, train_spec, config.width)
                       for job in jobs}
            accuracy = {job: future.result() for job, future in futures.items()}
    else:
        accuracy = {job: _rerank_job(*job, data_spec, train_spec, config.width) for job in jobs}
    rows = []
    for name in names:
        row = {"name": name}
        for anchor in config.anchors:
            values = [accuracy[name, anchor, seed] for seed in seeds]
            row[anchor] = statistics.mean(values)
            row[anchor + "_sd"] = _sd(values)
        per_seed = [statistics.mean(accuracy[name, a, seed] for a in config.anchors) for seed in seeds]
        row.update(mean_accuracy=statistics.mean(per_seed), mean_accuracy_sd=_sd(per_seed),
                   seeds=len(seeds), per_seed=per_seed)
        progress(f"rerank {name}: {row['mean_accuracy']:.4f} ± {row['mean_accuracy_sd']:.4f}")
        rows.append(row)
    rows.sort(key=lambda row: -row["mean_accuracy"])
    return rows


def _sd(values):
    return statistics.stdev(values) if len(values) > 1 else 0.0


def write_rerank(rows, directory):
    os.makedirs(directory, exist_ok=True)
    flat = [{key: (" ".join(f"{v:.4f}" for v in value) if isinstance(value, list) else value)
             for key, value in row.items()} for row in rows]
    _write_csv(os.path.join(directory, "rerank.csv"), flat)
    store.write_json_atomic(os.path.join(directory, "rerank.json"), rows)

"""Command line of the layer search: `python -m evonorm_tf.search {search,compare,rerank,report}`.

    # one search (resumable: run the same command again to continue)
    python -m evonorm_tf.search search --output runs/b_evo --method evolution --series B \\
        --budget-steps 20000 --workers 2
    # Random, Random+rejection and Evolution+rejection at the same compute budget, plus the plot
    python -m evonorm_tf.search compare --output runs/compare --budget-steps 20000
    # re-rank the best searched layers against BN-ReLU, EvoNorm-B0 and -S0 on held-out data
    python -m evonorm_tf.search rerank --runs runs/compare/evolution_rejection --top 10 --steps 1500

See docs/search.md.
"""

import argparse
import dataclasses
import json
import os
import sys

from evonorm_tf.search import evolution, report

_COMPARE_METHODS = (("random", "Random"), ("random_rejection", "Random + rejection"),
                    ("evolution", "Evolution + rejection"))


def _add_config_arguments(parser):
    defaults = evolution.SearchConfig(max_candidates=1)
    parser.add_argument("--series", choices=("B", "S"), default=defaults.series,
                        help="B: all 24 ops; S: no batch statistics")
    parser.add_argument("--rule", choices=evolution.RULES, default=defaults.rule)
    parser.add_argument("--population-size", type=int, default=defaults.population_size)
    parser.add_argument("--tournament-size", type=int, default=defaults.tournament_size)
    parser.add_argument("--max-candidates", type=int, default=None)
    parser.add_argument("--budget-steps", type=int, default=None,
                        help="compute budget in anchor training steps (rejection tests included)")
    parser.add_argument("--anchors", default=",".join(defaults.anchors))
    parser.add_argument("--data", choices=("textures", "cifar10"), default=defaults.data)
    parser.add_argument("--data-dir", default=None, help="TFDS data_dir holding cifar10 (never downloaded)")
    for name in ("num_train", "num_test", "image_size", "width", "train_steps", "batch_size",
                 "quality_steps", "stability_steps", "seed", "workers"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    for name in ("noise", "learning_rate", "quality_threshold", "stability_threshold",
                 "stability_learning_rate"):
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default=defaults.optimizer)
    parser.add_argument("--ray-address", default=None,
                        help="run evaluations on a Ray cluster (e.g. 'auto'); needs `pip install ray`")
    parser.add_argument("--no-progress", action="store_true")


def _config(arguments, method):
    fields = {field.name for field in dataclasses.fields(evolution.SearchConfig)}
    values = {name: value for name, value in vars(arguments).items() if name in fields}
    values["anchors"] = tuple(arguments.anchors.split(","))
    values["method"] = method
    return evolution.SearchConfig(**values)


def _search(arguments):
    config = _config(arguments, arguments.method)
    evolution.run_search(arguments.output, config, progress=not arguments.no_progress)
    summary = report.write_outputs(arguments.output)
    print(json.dumps(summary, indent=1))


def _compare(arguments):
    directories, labels = [], []
    for method, label in _COMPARE_METHODS:
        directory = os.path.join(arguments.output, method)
        config = _config(arguments, method)
        print(f"== {label} -> {directory}", flush=True)
        evolution.run_search(directory, config, progress=not arguments.no_progress)
        summary = report.write_outputs(directory)
        best = summary["best"]["mean_accuracy"] if summary["best"] else None
        print(f"{label}: evaluated {summary['evaluated']}, rejection rate "
              f"{summary['rejection_rate']:.3f}, best mean accuracy {best}", flush=True)
        directories.append(directory)
        labels.append(label)
    report.plot_progress(directories, os.path.join(arguments.output, "progress.png"), labels)


def _rerank(arguments):
    names = []
    for directory in arguments.runs:
        report.write_outputs(directory)
        rows = [row for row in report.leaderboard(
            evolution.store.Store(directory).load(),
            evolution.store.read_json(os.path.join(directory, "config.json"))["anchors"])
            if row["mean_accuracy"] is not None and not row["rejected"]]
        names += ["graph:" + row["graph"] for row in rows[: arguments.top]]
    names = list(dict.fromkeys(names)) + arguments.baselines.split(",")
    saved = evolution.store.read_json(os.path.join(arguments.runs[0], "config.json"))
    fields = {field.name for field in dataclasses.fields(evolution.SearchConfig)}
    config = evolution.SearchConfig(**{k: v for k, v in saved.items() if k in fields})
    rows = report.rerank(names, config, arguments.steps, tuple(range(arguments.seeds)))
    report.write_rerank(rows, arguments.output)
    for row in rows:
        print(f"{row['mean_accuracy']:.4f}  {row['name']}")


def _report(arguments):
    for directory in arguments.runs:
        print(json.dumps(report.write_outputs(directory), indent=1))
    if arguments.plot:
        report.plot_progress(arguments.runs, arguments.plot)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m evonorm_tf.search", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    search = commands.add_parser("search", help="run or resume one search")
    search.add_argument("--output", required=True)
    search.add_argument("--method", choices=evolution.METHODS, default="evolution")
    _add_config_arguments(search)
    compare = commands.add_parser("compare", help="Random vs Random+rejection vs Evolution+rejection")
    compare.add_argument("--output", required=True)
    _add_config_arguments(compare)
    rerank = commands.add_parser("rerank", help="re-rank the best layers against baselines")
    rerank.add_argument("--runs", nargs="+", required=True)
    rerank.add_argument("--output", required=True)
    rerank.add_argument("--top", type=int, default=10)
    rerank.add_argument("--steps", type=int, default=1500)
    rerank.add_argument("--seeds", type=int, default=1)
    rerank.add_argument("--baselines", default="bn_relu,evonorm_b0,evonorm_s0")
    summary = commands.add_parser("report", help="rewrite leaderboards (and a plot) of searches")
    summary.add_argument("--runs", nargs="+", required=True)
    summary.add_argument("--plot", default=None)
    arguments = parser.parse_args(argv)
    if getattr(arguments, "max_candidates", 1) is None and getattr(arguments, "budget_steps", 1) is None:
        parser.error("set --max-candidates or --budget-steps")
    {"search": _search, "compare": _compare, "rerank": _rerank, "report": _report}[arguments.command](arguments)
    return 0


if __name__ == "__main__":
    sys.exit(main())

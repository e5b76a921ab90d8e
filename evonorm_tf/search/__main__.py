"""Command line of the layer search: `python -m evonorm_tf.search {search,compare,rerank,report}`.

    # one search (resumable: run the same command again to continue)
    python -m evonorm_tf.search search --output runs/evo --method evolution --series B \
        --max-candidates 300 --workers 2
    # Random, Random+rejection and Evolution+rejection one after the other, plus the plot
    python -m evonorm_tf.search compare --output runs/compare --max-candidates 100
    # leaderboards and the plot of several searches at an equal candidate budget
    python -m evonorm_tf.search report --runs runs/compare/* --first 100 --plot progress.png
    # re-rank the best searched layers against baselines (names separated by spaces)
    python -m evonorm_tf.search rerank --runs runs/compare/evolution runs/compare/random_rejection \
        --top 3 1 --steps 200 --seeds 3 --workers 2 --output runs/rerank \
        --baselines bn_relu evonorm_b0 evonorm_s0 "graph:sigmoid(0);mul(0,4);std_whg(0);div(5,6)"

See docs/search.md.
"""

import argparse
import dataclasses
import json
import os
import sys

from evonorm_tf.search import evolution, proxy, report

_DEFAULT_BASELINES = ("bn_relu", "evonorm_b0", "evonorm_s0")
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
    parser.add_argument("--data", choices=proxy.DATA, default=defaults.data,
                        help="proxy data: digits (sklearn, offline), textures (generated), cifar10 (TFDS)")
    parser.add_argument("--data-dir", default=None, help="TFDS data_dir holding cifar10 (never downloaded)")
    for name in ("num_train", "num_test", "image_size", "width", "train_steps", "batch_size",
                 "quality_steps", "stability_steps", "seed", "workers"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    for name in ("noise", "learning_rate", "quality_threshold", "stability_threshold",
                 "stability_learning_rate"):
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default=defaults.optimizer)
    parser.add_argument("--ray-address", default=None,
                        help="run evaluations as Ray tasks: 'local' starts a private Ray on this "
                             "machine, 'auto' or host:port joins a cluster; needs `pip install ray` "
                             "(the search-ray extra)")
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
    tops = arguments.top if len(arguments.top) > 1 else arguments.top * len(arguments.runs)
    if len(tops) != len(arguments.runs):
        raise SystemExit(f"--top takes one count, or one per run ({len(arguments.runs)}), "
                         f"received {arguments.top}")
    names = []
    for directory, top in zip(arguments.runs, tops):
        report.write_outputs(directory)
        rows = [row for row in report.leaderboard(
            evolution.store.Store(directory).load(),
            evolution.store.read_json(os.path.join(directory, "config.json"))["anchors"])
            if row["mean_accuracy"] is not None and not row["rejected"]]
        names += ["graph:" + row["graph"] for row in rows[:top]]
    baselines = [] if arguments.no_baselines else arguments.baselines or list(_DEFAULT_BASELINES)
    names = list(dict.fromkeys(names + baselines))
    if not names:
        raise SystemExit("nothing to re-rank: no accepted layer in --runs and no baselines")
    saved = evolution.store.read_json(os.path.join(arguments.runs[0], "config.json"))
    fields = {field.name for field in dataclasses.fields(evolution.SearchConfig)}
    config = evolution.SearchConfig(**{k: v for k, v in saved.items() if k in fields})
    rows = report.rerank(names, config, arguments.steps, tuple(range(arguments.seeds)),
                         workers=arguments.workers)
    report.write_rerank(rows, arguments.output)
    for row in rows:
        print(f"{row['mean_accuracy']:.4f} ± {row['mean_accuracy_sd']:.4f}  {row['name']}")


def _report(arguments):
    if arguments.labels and len(arguments.labels) != len(arguments.runs):
        raise SystemExit(f"--labels needs one label per run ({len(arguments.runs)}), "
                         f"received {arguments.labels}")
    for directory in arguments.runs:
        print(json.dumps(report.write_outputs(directory, arguments.first), indent=1))
    if arguments.plot:
        report.plot_progress(arguments.runs, arguments.plot, arguments.labels, arguments.first,
                             arguments.title)


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
    rerank.add_argument("--top", type=int, nargs="+", default=[10],
                        help="best accepted layers taken from each run: one count, or one per run")
    rerank.add_argument("--steps", type=int, default=1500)
    rerank.add_argument("--no-baselines", action="store_true", help="re-rank only the searched layers")
    rerank.add_argument("--seeds", type=int, default=1, help="training seeds 0..N-1 per layer and anchor")
    rerank.add_argument("--workers", type=int, default=0,
                        help="train the runs in a process pool of this size (0: in-process)")
    rerank.add_argument("--baselines", nargs="+", action="extend", default=None, metavar="NAME",
                        help="norm-act names to compare against, separated by spaces (graph: names "
                             "contain commas and semicolons); repeatable. Default: "
                             + " ".join(_DEFAULT_BASELINES))
    summary = commands.add_parser("report", help="rewrite leaderboards (and a plot) of searches")
    summary.add_argument("--runs", nargs="+", required=True)
    summary.add_argument("--plot", default=None, help="write the progress plot (PNG) here")
    summary.add_argument("--labels", nargs="+", default=None, help="one plot label per run")
    summary.add_argument("--title", default=None, help="plot title")
    summary.add_argument("--first", type=int, default=None,
                         help="only the first N evaluated candidates of each run (equal candidate budget)")
    arguments = parser.parse_args(argv)
    if getattr(arguments, "max_candidates", 1) is None and getattr(arguments, "budget_steps", 1) is None:
        parser.error("set --max-candidates or --budget-steps")
    {"search": _search, "compare": _compare, "rerank": _rerank, "report": _report}[arguments.command](arguments)
    return 0


if __name__ == "__main__":
    sys.exit(main())

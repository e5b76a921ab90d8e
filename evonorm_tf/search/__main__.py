"""Command line of the layer search: `python -m evonorm_tf.search {search,compare,rerank,report,comparison}`.

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
    # several seeds per method (<root>/<method>/seed<N>): summary at an equal budget, plot
    python -m evonorm_tf.search comparison --root runs/comparison --output summary.json \
        --plot comparison.png

See docs/search.md.
"""

import argparse
import dataclasses
import json
import os
import sys

from evonorm_tf.search import config as search_config
from evonorm_tf.search import loop, plots, proxy, report, store

_DEFAULT_BASELINES = ("bn_relu", "evonorm_b0", "evonorm_s0")
_DISPLAY_NAMES = {"bn_relu": "BN-ReLU", "evonorm_b0": "EvoNorm-B0", "evonorm_s0": "EvoNorm-S0"}
_COMPARE_METHODS = (("random", "Random"), ("random_rejection", "Random + rejection"),
                    ("evolution", "Evolution + rejection"))


class _Parser(argparse.ArgumentParser):
    """Reports a usage error as one line on stderr (no usage block), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    return value


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, received {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, received {text!r}")
    return value


def _add_config_arguments(parser):
    defaults = search_config.SearchConfig(max_candidates=1)
    parser.add_argument("--series", choices=("B", "S"), default=defaults.series,
                        help="B: all 24 ops; S: no batch statistics")
    parser.add_argument("--rule", choices=search_config.RULES, default=defaults.rule)
    parser.add_argument("--population-size", type=_positive_int, default=defaults.population_size)
    parser.add_argument("--tournament-size", type=_positive_int, default=defaults.tournament_size)
    parser.add_argument("--feedback-delay", type=_positive_int, default=defaults.feedback_delay,
                        help="proposal k sees the results of proposals 1..k-D (D: this value), "
                             "so the records do not depend on the number of workers")
    parser.add_argument("--max-candidates", type=_positive_int, default=None)
    parser.add_argument("--budget-steps", type=_positive_int, default=None,
                        help="compute budget in anchor training steps (rejection tests included)")
    parser.add_argument("--anchors", default=",".join(defaults.anchors),
                        help="comma-separated: " + ",".join(proxy.ANCHORS))
    parser.add_argument("--stability-anchors", default=None,
                        help="anchors stress-tested, comma-separated (default: every anchor)")
    parser.add_argument("--data", choices=proxy.DATA, default=defaults.data,
                        help="proxy data: digits (sklearn, offline), textures (generated), cifar10 (TFDS)")
    parser.add_argument("--data-dir", default=None, help="TFDS data_dir holding cifar10 (never downloaded)")
    for name in ("num_train", "num_test", "image_size", "width", "train_steps", "batch_size",
                 "quality_steps"):
        parser.add_argument("--" + name.replace("_", "-"), type=_positive_int,
                            default=getattr(defaults, name))
    for name in ("stability_steps", "seed", "workers"):
        parser.add_argument("--" + name.replace("_", "-"), type=_non_negative_int,
                            default=getattr(defaults, name))
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
    fields = {field.name for field in dataclasses.fields(search_config.SearchConfig)}
    values = {name: value for name, value in vars(arguments).items() if name in fields}
    values["anchors"] = tuple(arguments.anchors.split(","))
    if arguments.stability_anchors:
        values["stability_anchors"] = tuple(arguments.stability_anchors.split(","))
    values["method"] = method
    return search_config.SearchConfig(**values)


def _check_runs(runs):
    for directory in runs:
        if not os.path.isfile(os.path.join(directory, "config.json")):
            raise ValueError(f"--runs: {directory!r} is not a search directory (no config.json)")


def _search(arguments):
    config = _config(arguments, arguments.method)
    loop.run_search(arguments.output, config, progress=not arguments.no_progress)
    summary = report.write_outputs(arguments.output)
    print(json.dumps(summary, indent=1))


def _compare(arguments):
    directories, labels = [], []
    for method, label in _COMPARE_METHODS:
        directory = os.path.join(arguments.output, method)
        config = _config(arguments, method)
        print(f"== {label} -> {directory}", flush=True)
        loop.run_search(directory, config, progress=not arguments.no_progress)
        summary = report.write_outputs(directory)
        best = summary["best"]["mean_accuracy"] if summary["best"] else None
        print(f"{label}: evaluated {summary['evaluated']}, rejection rate "
              f"{summary['rejection_rate']:.3f}, best mean accuracy {best}", flush=True)
        directories.append(directory)
        labels.append(label)
    plots.plot_progress(directories, os.path.join(arguments.output, "progress.png"), labels)


def _rerank(arguments):
    tops = arguments.top if len(arguments.top) > 1 else arguments.top * len(arguments.runs)
    if len(tops) != len(arguments.runs):
        raise ValueError(f"--top takes one count, or one per run ({len(arguments.runs)}), "
                         f"received {arguments.top}")
    _check_runs(arguments.runs)
    names = []
    for directory, top in zip(arguments.runs, tops):
        report.write_outputs(directory)
        rows = [row for row in report.leaderboard(
            store.Store(directory).load(),
            store.read_json(os.path.join(directory, "config.json"))["anchors"])
            if row["mean_accuracy"] is not None and not row["rejected"]]
        names += ["graph:" + row["graph"] for row in rows[:top]]
    baselines = [] if arguments.no_baselines else arguments.baselines or list(_DEFAULT_BASELINES)
    names = list(dict.fromkeys(names + baselines))
    if not names:
        raise ValueError("nothing to re-rank: no accepted layer in --runs and no baselines")
    config = search_config.SearchConfig.from_dict(
        store.read_json(os.path.join(arguments.runs[0], "config.json")))
    _check_baselines(baselines)
    rows = report.rerank(names, config, arguments.steps, tuple(range(arguments.seeds)),
                         workers=arguments.workers)
    report.write_rerank(rows, arguments.output)
    for row in rows:
        print(f"{row['mean_accuracy']:.4f} ± {row['mean_accuracy_sd']:.4f}  {row['name']}")


def _check_baselines(names):
    import evonorm_tf  # the core's norm-act names (imports TensorFlow)

    for name in names:
        if name.startswith("graph:"):
            from evonorm_tf.search import space

            try:
                space.Graph.from_string(name[len("graph:"):])
            except (ValueError, KeyError, IndexError) as error:
                raise ValueError(f"--baselines: {name!r} is not a valid graph ({error})") from None
        elif name not in evonorm_tf.NORM_ACT_NAMES:
            raise ValueError(f"--baselines: unknown norm-act {name!r}; valid: "
                             f"{', '.join(sorted(evonorm_tf.NORM_ACT_NAMES))} or graph:<canonical>")


def _report(arguments):
    _check_runs(arguments.runs)
    if arguments.labels and len(arguments.labels) != len(arguments.runs):
        raise ValueError(f"--labels needs one label per run ({len(arguments.runs)}), "
                         f"received {arguments.labels}")
    for directory in arguments.runs:
        print(json.dumps(report.write_outputs(directory, arguments.first), indent=1))
    if arguments.plot:
        plots.plot_progress(arguments.runs, arguments.plot, arguments.labels, arguments.first,
                             arguments.title)


def _comparison(arguments):
    from evonorm_tf.search import comparison

    result = comparison.summarize(arguments.root)
    baselines = {}
    if arguments.baselines_from:
        for row in store.read_json(arguments.baselines_from):
            baselines[row["name"]] = row["mean_accuracy"]
        result["baselines"] = baselines
    store.write_json_atomic(arguments.output, result)
    if arguments.plot:
        groups = {comparison.LABELS[m]: paths for m, paths in comparison.directories(arguments.root).items()}
        lines = {_DISPLAY_NAMES.get(name, name): value for name, value in baselines.items()
                 if not name.startswith("graph:")}
        plots.plot_comparison(groups, arguments.plot, arguments.title, lines)
    print(json.dumps(result["methods"], indent=1))


def main(argv=None):
    parser = _Parser(prog="python -m evonorm_tf.search", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="{search,compare,rerank,report,comparison}")
    search = commands.add_parser("search", help="run or resume one search")
    search.add_argument("--output", required=True)
    search.add_argument("--method", choices=search_config.METHODS, default="evolution")
    _add_config_arguments(search)
    compare = commands.add_parser("compare", help="Random vs Random+rejection vs Evolution+rejection")
    compare.add_argument("--output", required=True)
    _add_config_arguments(compare)
    rerank = commands.add_parser("rerank", help="re-rank the best layers against baselines")
    rerank.add_argument("--runs", nargs="+", required=True)
    rerank.add_argument("--output", required=True)
    rerank.add_argument("--top", type=_non_negative_int, nargs="+", default=[10],
                        help="best accepted layers taken from each run: one count, or one per run")
    rerank.add_argument("--steps", type=_positive_int, default=1500)
    rerank.add_argument("--no-baselines", action="store_true", help="re-rank only the searched layers")
    rerank.add_argument("--seeds", type=_positive_int, default=1, help="training seeds 0..N-1 per layer and anchor")
    rerank.add_argument("--workers", type=_non_negative_int, default=0,
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
    summary.add_argument("--first", type=_positive_int, default=None,
                         help="only the first N evaluated candidates of each run (equal candidate budget)")
    compared = commands.add_parser("comparison", help="summarise and plot <root>/<method>/seed<N> searches")
    compared.add_argument("--root", required=True, help="directory of <method>/seed<N> searches")
    compared.add_argument("--output", required=True, help="the summary JSON to write")
    compared.add_argument("--plot", default=None, help="write the comparison plot (PNG) here")
    compared.add_argument("--title", default=None, help="plot title")
    compared.add_argument("--baselines-from", default=None,
                          help="a rerank.json whose layers are drawn as horizontal lines")
    arguments = parser.parse_args(argv)
    if arguments.command is None:
        parser.error("choose a subcommand: search (run or resume one search), compare (the three "
                     "methods), rerank (best layers against baselines), report (leaderboards, plot), "
                     "comparison (several seeds per method)")
    if getattr(arguments, "max_candidates", 1) is None and getattr(arguments, "budget_steps", 1) is None:
        parser.error("set --max-candidates or --budget-steps")
    command = {"search": _search, "compare": _compare, "rerank": _rerank, "report": _report,
               "comparison": _comparison}
    try:
        command[arguments.command](arguments)
    except loop.SearchStopped as stopped:
        print(stopped, file=sys.stderr)
        return 130 if stopped.signal_name == "SIGINT" else 143
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError) as error:
        print(f"{parser.prog} {arguments.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

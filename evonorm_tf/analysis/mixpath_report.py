"""The report of the MixPath supernet experiment: summary over seeds, plot, merging runs.

Reads and writes the JSON of `evonorm_tf.analysis.mixpath_supernet` (keys
`settings`, `summary`, `runs`); needs only NumPy and matplotlib.
"""

import json

import numpy as np

__all__ = ["combine", "mean_kendall_tau_pvalue", "plot", "summarize", "write_report"]


def mean_kendall_tau_pvalue(mean_tau, items, samples):
    """Exact two-sided p-value of the mean of `samples` independent Kendall τ, each over `items` untied pairs.

    Under no association every ranking of `items` is equally likely, so the
    number of discordant pairs follows the Mahonian distribution; the sum over
    `samples` independent rankings is its `samples`-fold convolution. Returns
    P(|mean τ| ≥ |mean_tau|).
    """
    counts = np.ones(1)
    for size in range(2, items + 1):
        counts = np.convolve(counts, np.ones(size))  # inversions of a permutation of `size` items
    total = counts.copy()
    for _ in range(samples - 1):
        total = np.convolve(total, counts)
    pairs = items * (items - 1) / 2
    means = 1.0 - 2.0 * np.arange(len(total)) / (pairs * samples)
    return float(total[np.abs(means) >= abs(mean_tau) - 1e-9].sum() / total.sum())


def summarize(results):
    """Means over seeds of every reported figure."""
    def mean_of(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    summary = {"seeds": [r["seed"] for r in results]}
    for key in ("cosine", "variance_ratio"):
        summary[f"{key}_at_init"] = mean_of([np.mean(r["similarity_at_init"][key]) for r in results])
    for name in ("shadow_bn", "shared_bn"):
        part = {}
        for label in ("kendall_tau", "kendall_tau_without_recalibration", "kendall_tau_by_loss"):
            part[label] = [r[name].get(label) for r in results]
            part[f"{label}_pvalue"] = [r[name].get(f"{label}_pvalue") for r in results]
            part[f"mean_{label}"] = mean_of(part[label])
        # Test losses have no ties, so the exact null distribution of their τ applies.
        losses = part["kendall_tau_by_loss"]
        part["mean_kendall_tau_by_loss_pvalue"] = None if None in losses else mean_kendall_tau_pvalue(
            part["mean_kendall_tau_by_loss"], len(results[0]["children"]), len(losses))
        for key in ("cosine", "variance_ratio"):
            part[f"{key}_after_training"] = mean_of(
                [np.mean(r[name]["similarity_after_training"][key]) for r in results])
        for key in ("supernet_accuracy_recalibrated", "supernet_accuracy"):
            part[f"mean_{key}"] = mean_of([np.mean(r[name][key]) for r in results])
        summary[name] = part
    summary["mean_standalone_accuracy"] = mean_of([np.mean(r["standalone_accuracy"]) for r in results])
    summary["standalone_accuracy_range"] = [float(np.min([r["standalone_accuracy"] for r in results])),
                                            float(np.max([r["standalone_accuracy"] for r in results]))]
    return summary


def plot(results, path):
    """Four panels: cosine similarity and variance ratio per block; supernet vs stand-alone accuracy and loss."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(2, 2, figsize=(13, 9.5), constrained_layout=True)
    axes = axes.ravel()
    blocks = np.arange(1, len(results[0]["similarity_at_init"]["cosine"]) + 1)
    series = (("at init", lambda r: r["similarity_at_init"]),
              ("Shadow BN supernet, trained", lambda r: r["shadow_bn"]["similarity_after_training"]),
              ("shared-BN supernet, trained", lambda r: r["shared_bn"]["similarity_after_training"]))
    for axis, key, ylabel, references in (
            (axes[0], "cosine", "cosine similarity of f_i + f_j and f_i", (0.7071, 1.0)),
            (axes[1], "variance_ratio", "Var(f_i + f_j) / Var(f_i)", (2.0, 4.0))):
        for offset, (label, get) in enumerate(series):
            values = np.array([get(r)[key] for r in results])
            axis.errorbar(blocks + 0.12 * (offset - 1), values.mean(0), yerr=values.std(0), marker="o",
                          linestyle="", capsize=3, label=label)
        for value, text in zip(references, ("independent paths", "identical paths")):
            axis.axhline(value, color="grey", linestyle=":", linewidth=1)
            axis.text(blocks[-1] + 0.3, value, text, fontsize=7, va="center")
        axis.set_xticks(blocks)
        axis.set_xlabel("block")
        axis.set_ylabel(ylabel)
        axis.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[0].set_title("summed (m = 2) vs single-path features (mean ± std over seeds)")
    axes[1].set_title("variance ratio (mean ± std over seeds)")
    children = len(results[0]["children"])
    for axis, supernet_key, standalone_key, tau_key, quantity in (
            (axes[2], "supernet_accuracy_recalibrated", "standalone_accuracy", "kendall_tau", "accuracy"),
            (axes[3], "supernet_loss_recalibrated", "standalone_loss", "kendall_tau_by_loss", "cross-entropy")):
        for name, marker in (("shadow_bn", "o"), ("shared_bn", "s")):
            taus = [r[name][tau_key] for r in results]
            label = "Shadow BN" if name == "shadow_bn" else "shared BN"
            xs = np.concatenate([r[standalone_key] for r in results])
            ys = np.concatenate([r[name][supernet_key] for r in results])
            tau_text = ", ".join("n/a" if t is None else f"{t:.2f}" for t in taus)
            axis.scatter(xs, ys, marker=marker, alpha=0.7, label=f"{label} (Kendall τ per seed: {tau_text})")
        axis.set_xlabel(f"stand-alone test {quantity} of the child")
        axis.set_ylabel(f"supernet test {quantity} (BN recalibrated)")
        axis.set_title(f"children ranked by test {quantity}: {children} children × {len(results)} seeds")
        axis.legend(fontsize=8)
        axis.grid(True, alpha=0.3)
    figure.suptitle("MixPath supernet on the digits: M = 2 of n = 4 paths per block")
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


def write_report(settings, results, output, plot_path=None):
    """Writes `{settings, summary, runs}` as JSON (and the plot), and prints the summary."""
    summary = summarize(results)
    with open(output, "w") as file:
        json.dump({"settings": settings, "summary": summary, "runs": results}, file, indent=1)
    print(json.dumps(summary, indent=1))
    print(f"wrote {output}")
    if plot_path:
        print(f"wrote {plot(results, plot_path)}")


def combine(paths, output, plot_path=None):
    """Merges the runs of several output files (e.g. one per seed) into one report.

    Raises ValueError for an unreadable file or one run with other settings.
    """
    reports = []
    for path in paths:
        try:
            with open(path) as file:
                reports.append(json.load(file))
        except (OSError, ValueError) as error:
            raise ValueError(f"--combine: cannot read {path!r} ({error})") from None
    settings = reports[0]["settings"]
    for path, report in zip(paths, reports):
        if report["settings"] != settings:
            raise ValueError(f"--combine: {path!r} was run with other settings than {paths[0]!r}")
    results = sorted((run for report in reports for run in report["runs"]), key=lambda run: run["seed"])
    write_report(settings, results, output, plot_path)
    return 0



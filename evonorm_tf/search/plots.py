"""Plots of searches: best accuracy so far against compute and against candidates evaluated.

Every figure uses a constrained layout, so axis labels and titles stay inside
the figure and do not overlap (`tests/search/test_search_plots.py` checks it).
"""

import os

import numpy as np

from evonorm_tf.search import proxy, store
from evonorm_tf.search.report import best_so_far, first_candidates


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path, plt):
    temporary = path + ".partial.png"
    figure.savefig(temporary, dpi=110)
    plt.close(figure)
    os.replace(temporary, path)


_Y_LABEL = "best mean accuracy\n(accepted candidates; 0: none yet)"


def plot_progress(directories, path, labels=None, first=None, title=None):
    """Writes `progress_figure(...)` to the PNG `path`."""
    plt = _pyplot()
    _save(progress_figure(directories, labels, first, title), path, plt)


def progress_figure(directories, labels=None, first=None, title=None):
    """Best mean accuracy vs compute (left) and vs candidates evaluated (right), one line per search.

    `first`: plot only the first `first` evaluated candidates of each search.
    """
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.4), layout="constrained")
    for index, directory in enumerate(directories):
        records = first_candidates(store.Store(directory).load(), first)
        label = labels[index] if labels else os.path.basename(os.path.normpath(directory))
        for axis, by in zip(axes, ("cost", "count")):
            xs, ys = best_so_far(records, by)
            axis.step(xs, ys, where="post", label=label)
    axes[0].set_xlabel("compute (anchor training steps, incl. rejection tests)")
    axes[1].set_xlabel("candidates evaluated")
    axes[1].xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    for axis in axes:
        axis.axhline(1.0 / proxy.NUM_CLASSES, color="grey", linestyle=":", label="chance")
        axis.set_ylabel(_Y_LABEL)
        axis.set_ylim(0.0, 1.0)
        axis.grid(alpha=0.3)
    axes[1].legend(loc="lower right", fontsize="small")
    if title:
        figure.suptitle(title)
    return figure


def plot_comparison(groups, path, title=None, baselines=None):
    """Writes `comparison_figure(...)` to the PNG `path`."""
    plt = _pyplot()
    _save(comparison_figure(groups, title, baselines), path, plt)


def comparison_figure(groups, title=None, baselines=None):
    """Best-so-far curves of several seeds per method: median line, min–max band.

    Args:
      groups: `{label: [search directories, one per seed]}`.
      title: figure title.
      baselines: optional `{label: mean accuracy}` drawn as horizontal lines
        (layers evaluated under the same protocol).
    """
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.4), layout="constrained")
    for label, directories in groups.items():
        for axis, by in zip(axes, ("cost", "count")):
            curves = [best_so_far(store.Store(d).load(), by) for d in directories]
            curves = [(xs, ys) for xs, ys in curves if xs]
            if not curves:
                continue
            end = min(xs[-1] for xs, _ in curves)
            grid = np.linspace(0, end, 200) if by == "cost" else np.arange(1, end + 1)
            values = np.array([[ys[max(0, np.searchsorted(xs, x, side="right") - 1)] if x >= xs[0] else 0.0
                                for x in grid] for xs, ys in curves])
            line, = axis.step(grid, np.median(values, axis=0), where="post",
                              label=f"{label} (median of {len(curves)})")
            axis.fill_between(grid, values.min(axis=0), values.max(axis=0), step="post",
                              color=line.get_color(), alpha=0.2)
    for name, value in (baselines or {}).items():
        for axis in axes:
            axis.axhline(value, linestyle="--", linewidth=1, color="black" if "B0" in name else "dimgrey")
            axis.annotate(name, (1.0, value), xycoords=("axes fraction", "data"), ha="right",
                          va="bottom", fontsize="small")
    axes[0].set_xlabel("compute (anchor training steps, incl. rejection tests)")
    axes[1].set_xlabel("candidates evaluated")
    axes[1].xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    for axis in axes:
        axis.axhline(1.0 / proxy.NUM_CLASSES, color="grey", linestyle=":")
        axis.set_ylabel(_Y_LABEL)
        axis.set_ylim(0.0, 1.0)
        axis.grid(alpha=0.3)
    axes[1].legend(loc="upper left", fontsize="small")
    if title:
        figure.suptitle(title)
    return figure

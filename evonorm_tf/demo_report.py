"""The main job's report: mean ± std per norm-act and batch size, the table, the PNG."""

import numpy as np


def summarize(results):
    """Groups runs by (norm-act, batch size): mean and sample standard deviation over seeds."""
    groups = {}
    for result in results:
        groups.setdefault((result.norm_act, result.batch_size), []).append(result)
    summary = {}
    for key, runs in groups.items():
        accuracy = np.array([run.test_accuracy for run in runs])
        step_ms = np.array([run.mean_step_ms for run in runs])
        summary[key] = {
            "accuracy_mean": float(accuracy.mean()),
            "accuracy_std": float(accuracy.std(ddof=1)) if len(runs) > 1 else 0.0,
            "step_ms_mean": float(step_ms.mean()),
            "seeds": len(runs),
        }
    return summary


def format_table(results, norm_acts, batch_sizes):
    """A plain-text table: one row per norm-act, accuracy and ms/step per batch size."""
    summary = summarize(results)
    several = any(entry["seeds"] > 1 for entry in summary.values())
    header = ["norm-act"]
    for batch_size in batch_sizes:
        header += [f"acc @bs{batch_size}", f"ms/step @bs{batch_size}"]
    rows = [header]
    for name in norm_acts:
        row = [name]
        for batch_size in batch_sizes:
            entry = summary[(name, batch_size)]
            accuracy = f"{entry['accuracy_mean']:.3f}"
            if several:
                accuracy += f" ± {entry['accuracy_std']:.3f}"
            row += [accuracy, f"{entry['step_ms_mean']:.1f}"]
        rows.append(row)
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def plot(results, norm_acts, batch_sizes, path, title):
    """Writes the accuracy bars and the training curves to a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    summary = summarize(results)
    colors = {name: plt.get_cmap("tab10")(index % 10) for index, name in enumerate(norm_acts)}
    figure = plt.figure(figsize=(4.2 * max(2, len(batch_sizes)), 11), constrained_layout=True)
    grid = figure.add_gridspec(3, len(batch_sizes))

    bars = figure.add_subplot(grid[0, :])
    bar_width = 0.8 / len(batch_sizes)
    hatches = ["", "//", "..", "xx"]
    positions = np.arange(len(norm_acts))
    for index, batch_size in enumerate(batch_sizes):
        means = [summary[(name, batch_size)]["accuracy_mean"] for name in norm_acts]
        stds = [summary[(name, batch_size)]["accuracy_std"] for name in norm_acts]
        offset = (index - (len(batch_sizes) - 1) / 2) * bar_width
        drawn = bars.bar(positions + offset, means, bar_width, yerr=stds, capsize=3,
                         color=[colors[name] for name in norm_acts], edgecolor="black",
                         hatch=hatches[index % len(hatches)])
        bars.bar_label(drawn, fmt="%.2f", fontsize=8, padding=2)
    bars.set_xticks(positions, norm_acts)
    bars.set_ylim(0, 1.1)
    bars.axhline(0.1, color="grey", linestyle=":", linewidth=1)
    bars.set_ylabel("test accuracy")
    bars.set_title(title)
    from matplotlib.patches import Patch

    bars.legend(handles=[Patch(facecolor="white", edgecolor="black", hatch=hatches[i % len(hatches)],
                               label=f"batch size {b}") for i, b in enumerate(batch_sizes)],
                loc="lower right", fontsize=8)

    for column, batch_size in enumerate(batch_sizes):
        loss_axes = figure.add_subplot(grid[1, column])
        accuracy_axes = figure.add_subplot(grid[2, column], sharex=loss_axes)
        for name in norm_acts:
            runs = [r for r in results if r.norm_act == name and r.batch_size == batch_size]
            seen = runs[0].images_seen
            loss_axes.plot(seen, np.mean([r.train_loss for r in runs], axis=0),
                           color=colors[name], label=name)
            accuracy_axes.plot(seen, np.mean([r.curve_accuracy for r in runs], axis=0),
                               color=colors[name], marker="o", markersize=3, label=name)
        loss_axes.set_title(f"training loss, batch size {batch_size}")
        loss_axes.set_yscale("log")
        # Plain numbers ("0.3", not "3×10⁻¹"); minor ticks labelled only within one decade.
        plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
        low, high = loss_axes.get_ylim()
        loss_axes.yaxis.set_major_formatter(plain)
        loss_axes.yaxis.set_minor_formatter(plain if high / low < 10 else matplotlib.ticker.NullFormatter())
        loss_axes.tick_params(axis="y", which="minor", labelsize=7)
        accuracy_axes.set_title(f"test accuracy, batch size {batch_size}")
        accuracy_axes.set_ylim(0, 1.02)
        accuracy_axes.set_xlabel("training images seen")
        for axes in (loss_axes, accuracy_axes):
            axes.grid(alpha=0.3)
        accuracy_axes.legend(fontsize=8, loc="lower right")
    figure.savefig(path, dpi=110)
    plt.close(figure)



"""Progress plots: labelled axes, labels inside the figure, the title clear of the axes."""

import concurrent.futures

import pytest

from evonorm_tf.search import config as search_config
from evonorm_tf.search import loop, plots


class _Executor:
    workers = 1

    def submit(self, graph_text, evaluation):
        future = concurrent.futures.Future()
        accepted = len(graph_text) % 3 == 0
        future.set_result({"scores": [0.3, len(graph_text) % 7 / 10] if accepted else None,
                           "rejected": None if accepted else "quality", "cost": 5})
        return future

    def shutdown(self, cancel=False):
        pass


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    directories = []
    for method in ("random_rejection", "evolution"):
        for seed in (0, 1):
            directory = str(tmp_path_factory.mktemp(f"{method}{seed}"))
            config = search_config.SearchConfig(method=method, max_candidates=12, seed=seed,
                                                population_size=2, tournament_size=2,
                                                anchors=("resnet", "mobilenet"))
            loop.run_search(directory, config, progress=False, executor=_Executor())
            directories.append(directory)
    return directories


def _check_layout(figure):
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    box = figure.bbox
    axes = [axis for axis in figure.axes]
    for axis in axes:
        assert axis.get_xlabel() and axis.get_ylabel()
        for label in (axis.xaxis.label, axis.yaxis.label):
            extent = label.get_window_extent(renderer)
            assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1, label.get_text()
            assert box.y0 - 1 <= extent.y0 and extent.y1 <= box.y1 + 1, label.get_text()
    if figure._suptitle is not None:
        title = figure._suptitle.get_window_extent(renderer)
        assert title.y1 <= box.y1 + 1
        for axis in axes:
            assert not title.overlaps(axis.get_tightbbox(renderer)), "title overlaps an axis"


def test_progress_figure_fits_its_labels(runs):
    figure = plots.progress_figure(runs[:2], ["Random + rejection", "Evolution + rejection"],
                                   title="digits proxy, 3 anchors, seed 0")
    _check_layout(figure)


def test_comparison_figure_fits_its_labels_and_writes_a_png(runs, tmp_path):
    groups = {"Random + rejection": runs[:2], "Evolution + rejection": runs[2:]}
    figure = plots.comparison_figure(groups, title="3 seeds", baselines={"EvoNorm-B0": 0.8})
    _check_layout(figure)
    path = str(tmp_path / "comparison.png")
    plots.plot_comparison(groups, path, title="3 seeds")
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"

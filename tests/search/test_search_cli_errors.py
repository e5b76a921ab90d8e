"""`python -m evonorm_tf.search` answers bad input with one line on stderr and a non-zero exit."""

import os
import subprocess
import sys

import pytest

from evonorm_tf.search import __main__ as cli
from evonorm_tf.search import config as search_config
from evonorm_tf.search import store

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(argv, capsys):
    try:
        status = cli.main(argv)
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().err


@pytest.fixture
def run_directory(tmp_path):
    directory = str(tmp_path / "run")
    config = search_config.SearchConfig(max_candidates=2, anchors=("resnet",))
    store.Store(directory).check_or_write_config(config.to_dict(), search_config.RESUME_KEYS)
    return directory


BAD_INPUTS = {
    "negative population": (["search", "--output", "{tmp}/a", "--population-size", "-5",
                             "--max-candidates", "3"], "'-5'"),
    "abbreviated negative population": (["search", "--output", "{tmp}/a", "--population", "-5",
                                         "--max-candidates", "3"], "'-5'"),
    "negative max candidates": (["search", "--output", "{tmp}/a", "--max-candidates", "-3"], "'-3'"),
    "zero budget": (["search", "--output", "{tmp}/a", "--budget-steps", "0"], "'0'"),
    "no budget": (["search", "--output", "{tmp}/a"], "--max-candidates or --budget-steps"),
    "not a number": (["search", "--output", "{tmp}/a", "--max-candidates", "ten"], "'ten'"),
    "unknown method": (["search", "--output", "{tmp}/a", "--method", "annealing",
                        "--max-candidates", "3"], "'annealing'"),
    "unknown anchor": (["search", "--output", "{tmp}/a", "--anchors", "resnet,vgg",
                        "--max-candidates", "3"], "'vgg'"),
    "tournament above population": (["search", "--output", "{tmp}/a", "--population-size", "3",
                                     "--tournament-size", "5", "--max-candidates", "3"],
                                    "tournament_size=5"),
    "resume with other settings": (["search", "--output", "{run}", "--method", "random",
                                    "--max-candidates", "3"], "method='random'"),
    "missing runs (report)": (["report", "--runs", "{tmp}/missing"], "missing"),
    "missing runs (rerank)": (["rerank", "--runs", "{tmp}/missing", "--output", "{tmp}/r"],
                              "missing"),
    "unknown baseline": (["rerank", "--runs", "{run}", "--output", "{tmp}/r", "--top", "0",
                          "--baselines", "evonorm_z9"], "'evonorm_z9'"),
    "malformed graph baseline": (["rerank", "--runs", "{run}", "--output", "{tmp}/r", "--top", "0",
                                  "--baselines", "graph:frobnicate(0)"], "graph:frobnicate(0)"),
    "labels do not match runs": (["report", "--runs", "{run}", "--labels", "a", "b"], "--labels"),
    "no subcommand": ([], "search"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_gives_one_line_and_a_non_zero_exit(name, tmp_path, run_directory, capsys):
    argv, expected = BAD_INPUTS[name]
    argv = [a.format(tmp=tmp_path, run=run_directory) for a in argv]
    status, error = _run(argv, capsys)
    assert status not in (0, None), (name, status)
    lines = error.strip().splitlines()
    assert len(lines) == 1, error
    assert expected in lines[0] and "Traceback" not in error


def test_bare_module_names_its_subcommands_without_a_traceback():
    result = subprocess.run([sys.executable, "-m", "evonorm_tf.search"], cwd=ROOT, text=True,
                            capture_output=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    for command in ("search", "compare", "rerank", "report"):
        assert command in lines[0]

"""Drill: a search killed with SIGKILL resumes from its store to the uninterrupted records."""

import os
import signal
import subprocess
import sys
import time

import pytest

from evonorm_tf.search import store

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--method", "evolution", "--anchors", "resnet", "--num-train", "128", "--num-test", "64",
        "--train-steps", "3", "--quality-steps", "3", "--quality-threshold", "0",
        "--stability-steps", "2", "--population-size", "2", "--tournament-size", "2",
        "--max-candidates", "8", "--workers", "0", "--no-progress", "--seed", "1"]
ENVIRONMENT = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3",
               "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}


def _command(directory):
    return [sys.executable, "-m", "evonorm_tf.search", "search", "--output", directory, *TINY]


def _records(directory):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in store.Store(directory).load()]


@pytest.mark.slow
def test_sigkill_then_resume_ends_with_the_uninterrupted_records(tmp_path):
    killed = str(tmp_path / "killed")
    process = subprocess.Popen(_command(killed), cwd=ROOT, env=ENVIRONMENT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        if len(os.listdir(os.path.join(killed, "candidates"))
               if os.path.isdir(os.path.join(killed, "candidates")) else []) >= 3:
            break
        time.sleep(0.2)
    assert process.poll() is None, "the search ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = _records(killed)
    assert 3 <= len([r for r in partial if not r["duplicate"]]) < 8
    resumed = subprocess.run(_command(killed), cwd=ROOT, env=ENVIRONMENT, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    reference = str(tmp_path / "reference")
    subprocess.run(_command(reference), cwd=ROOT, env=ENVIRONMENT, capture_output=True, check=True,
                   timeout=600)
    assert _records(killed) == _records(reference)
    assert _records(killed)[:len(partial)] != [] and all(r in _records(killed) for r in partial)

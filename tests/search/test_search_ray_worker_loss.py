"""A search on Ray loses no candidate and evaluates none twice when a worker dies mid-evaluation."""

import os
import signal
import threading
import time

import pytest

from evonorm_tf.search import config as search_config
from evonorm_tf.search import loop, store

ray = pytest.importorskip("ray", reason="ray is not installed (the `search-ray` extra)")


def _evaluating_workers():
    """PIDs of Ray workers running `evaluate_candidate` (Ray sets their process title)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                command = handle.read()
        except OSError:
            continue
        if command.startswith(b"ray::evaluate_candidate"):
            pids.append(int(name))
    return pids


def _kill_the_first_evaluating_worker(killed, stop):
    while not stop.is_set():
        pids = _evaluating_workers()
        if pids:
            time.sleep(0.5)       # let it get into the evaluation
            try:
                os.kill(pids[0], signal.SIGKILL)
            except ProcessLookupError:
                continue
            killed.append(pids[0])
            return
        time.sleep(0.05)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds Ray workers through /proc")
def test_a_worker_killed_mid_evaluation_loses_and_repeats_nothing(tmp_path):
    config = search_config.SearchConfig(
        method="random", max_candidates=4, anchors=("resnet",), train_steps=30, quality_steps=30,
        num_train=128, num_test=64, workers=2, ray_address="local", seed=0)
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=_kill_the_first_evaluating_worker, args=(killed, stop))
    killer.start()
    try:
        records = loop.run_search(str(tmp_path), config, progress=False)
    finally:
        stop.set()
        killer.join()
    assert killed, "no Ray worker was seen evaluating"
    evaluated = [r for r in records if not r["duplicate"]]
    assert len(evaluated) == 4                                        # none lost
    ids = [r["proposal_id"] for r in records]
    assert ids == list(range(1, len(records) + 1))                    # no gap, none twice
    assert all(len(r["scores"]) == 1 for r in evaluated)              # each has its one result
    stored = store.Store(str(tmp_path)).load()
    assert [r["proposal_id"] for r in stored] == ids

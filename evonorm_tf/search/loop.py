"""The search loop: propose, evaluate in parallel, persist, resume, stop cleanly on a signal.

One loop serves the three methods (`evolution.propose`). Determinism:
proposal `k` is made only once the records of proposals `1 .. k -
feedback_delay` are stored, and sees exactly those, so neither the number of
workers nor the order in which evaluations finish changes the records. A
resumed search replays its stored records and first re-proposes the
proposals that were in flight when it stopped (they get the same index, so
the same genome); the records it ends with equal those of the uninterrupted
search with the same seed.

Functionally equivalent candidates (`mutation.functional_hash`) are trained
once: a later proposal with the hash of an earlier one is recorded as a
duplicate of it (`duplicate_of`) and reuses its result. Evolution mutates a
child again until it is new (`evolution.propose`), so its duplicates are
rare: children of proposals still in flight, or of a parent whose
neighbourhood is exhausted.
"""

import concurrent.futures
import signal

import pyglove as pg

from evonorm_tf.search import encoding, evolution, mutation, store
from evonorm_tf.search.config import RESUME_KEYS
from evonorm_tf.search.executors import Executor

MAX_DUPLICATES_IN_A_ROW = 1000


class SearchStopped(Exception):
    """A search stopped by SIGINT or SIGTERM; its store holds every finished record."""

    def __init__(self, signal_name, evaluated, in_flight):
        self.signal_name, self.evaluated, self.in_flight = signal_name, evaluated, in_flight
        super().__init__(
            f"stopped by {signal_name}: {evaluated} candidates evaluated and stored; "
            f"{len(in_flight)} in flight (proposals {', '.join(map(str, in_flight)) or 'none'}) "
            "will be evaluated again on resume (run the same command)")


def _progress(total, initial, enabled):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm comes with tensorflow-datasets; the bar is optional
        return None
    return tqdm(total=total, initial=initial, unit="cand", dynamic_ncols=True)


def _mean(scores):
    return sum(scores) / len(scores)


class _Counts:
    """What the progress bar shows: evaluated, rejected (duplicates apart), duplicates, best."""

    def __init__(self):
        self.evaluated = self.rejected = self.duplicates = self.spent = 0
        self.best = 0.0

    def add(self, record):
        if record.get("duplicate"):
            self.duplicates += 1
            return
        self.evaluated += 1
        self.spent += record.get("cost", 0)
        if record.get("rejected"):
            self.rejected += 1
        elif record.get("scores"):
            self.best = max(self.best, _mean(record["scores"]))

    def postfix(self):
        return {"best": f"{self.best:.3f}", "rejected": self.rejected,
                "duplicates": self.duplicates, "steps": self.spent}


class _Signalled(BaseException):
    """Raised in the main thread by SIGINT/SIGTERM (a BaseException: evaluations do not catch it)."""

    def __init__(self, signal_name):
        super().__init__(signal_name)
        self.signal_name = signal_name


class _StopSignals:
    """Turns the first SIGINT/SIGTERM into `_Signalled` while the loop runs (main thread only).

    Stopping anywhere is safe: records are written atomically, and the
    in-memory state is rebuilt from the store on resume.
    """

    def __init__(self):
        self._previous = {}
        self._received = False

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(number) is not signal.SIG_IGN:   # e.g. SIGINT under nohup
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number, frame):
        if not self._received:       # later signals are ignored while stopping
            self._received = True
            raise _Signalled(signal.Signals(number).name)

    def __exit__(self, *exc):
        for number, handler in self._previous.items():
            signal.signal(number, handler)


def _resolved(record, by_id):
    """A duplicate carries its original's result (for the population); others as they are."""
    if not record.get("duplicate"):
        return record
    original = by_id[record["duplicate_of"]]
    return {**record, "scores": original.get("scores"), "rejected": original.get("rejected"),
            "quality_scores": original.get("quality_scores")}


def run_search(directory, config, progress=True, stop_after=None, executor=None):
    """Runs (or resumes) a search in `directory`; returns all records in proposal order.

    Args:
      directory: the search directory (see `store`); records already there are
        replayed and the search continues from them.
      config: a `SearchConfig`.
      progress: show a progress bar (tqdm).
      stop_after: stop after this many new evaluations in this call (simulates
        a kill in tests); None runs to the budget.
      executor: an `executors.Executor` (default: built from `config.workers`,
        `config.ray_address`).

    Raises:
      SearchStopped: on SIGINT or SIGTERM, after the finished records are stored.
    """
    records_store = store.Store(directory)
    records_store.check_or_write_config(config.to_dict(), RESUME_KEYS)
    by_id = {record["proposal_id"]: record for record in records_store.load()}
    dna_spec = pg.dna_spec(encoding.hyper_space(list(config.ops)))
    evaluation = config.evaluation()
    first_by_hash = {}
    for record in sorted(by_id.values(), key=lambda record: record["proposal_id"]):
        first_by_hash.setdefault(record["hash"], record["proposal_id"])
    counts = _Counts()
    for record in by_id.values():
        counts.add(record)

    own_executor = executor is None
    executor = executor or Executor(config.workers, config.ray_address)
    bar = _progress(config.max_candidates, counts.evaluated, progress)
    in_flight = {}          # future -> record
    proposed = dict(by_id)  # proposal id -> record (finished or in flight)
    new_evaluations = 0
    duplicates_in_a_row = 0
    next_id = 1

    def history_until(last_id):
        return [_resolved(by_id[i], by_id) for i in range(1, last_id + 1)]

    def ready(proposal_id):
        """Whether every record proposal `proposal_id` may see is stored."""
        return all(i in by_id for i in range(1, proposal_id - config.feedback_delay + 1))

    def budget_left(proposal_id):
        if stop_after is not None and new_evaluations + len(in_flight) >= stop_after:
            return False
        evaluations = sum(1 for r in proposed.values()
                          if r["proposal_id"] < proposal_id and not r.get("duplicate"))
        if config.max_candidates is not None and evaluations >= config.max_candidates:
            return False
        if config.budget_steps is not None:
            visible = history_until(max(0, proposal_id - config.feedback_delay))
            return sum(r.get("cost", 0) for r in visible if not r.get("duplicate")) < config.budget_steps
        return True

    def finish(record):
        records_store.save(record)
        by_id[record["proposal_id"]] = record
        counts.add(record)
        if bar is not None:
            if not record.get("duplicate"):
                bar.update(1)
            bar.set_postfix(counts.postfix())

    hashes = {record["graph"]: record["hash"] for record in by_id.values()}

    def hash_of(graph):
        if graph.canonical not in hashes:      # equal canonical graphs are common: hash once
            hashes[graph.canonical] = mutation.functional_hash(graph)
        return hashes[graph.canonical]

    def make_record(proposal_id):
        history = history_until(max(0, proposal_id - config.feedback_delay))
        genome, lineage = evolution.propose(config, proposal_id, history, dna_spec, hash_of)
        graph = genome.to_graph()
        hash_of(graph)
        record = {"proposal_id": proposal_id, "genome": genome.to_string(),
                  "graph": graph.canonical, "formula": graph.formula(),
                  "hash": hashes[graph.canonical], "method": config.method, **lineage}
        earlier = first_by_hash.get(record["hash"])
        if earlier is not None and earlier < proposal_id:
            record.update(duplicate=True, duplicate_of=earlier, cost=0)
        else:
            first_by_hash[record["hash"]] = proposal_id
            record["duplicate"] = False
        return record

    try:
        with _StopSignals():
            while True:
                while len(in_flight) < executor.workers:
                    while next_id in proposed:
                        next_id += 1
                    if not ready(next_id) or not budget_left(next_id):
                        break
                    record = make_record(next_id)
                    proposed[next_id] = record
                    if record["duplicate"]:
                        duplicates_in_a_row += 1
                        if duplicates_in_a_row > MAX_DUPLICATES_IN_A_ROW:
                            raise RuntimeError(f"{MAX_DUPLICATES_IN_A_ROW} proposals in a row were "
                                               "duplicates; the search is stuck")
                        finish(record)
                        continue
                    duplicates_in_a_row = 0
                    in_flight[executor.submit(record["graph"], evaluation)] = record
                if not in_flight:
                    break
                done, _ = concurrent.futures.wait(in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: in_flight[f]["proposal_id"]):
                    record = in_flight.pop(future)
                    record.update(future.result(), duplicate=False)
                    new_evaluations += 1
                    finish(record)
    except _Signalled as signalled:
        if own_executor:
            executor.shutdown(cancel=True)
            own_executor = False
        unfinished = sorted(set(proposed) - set(by_id))
        raise SearchStopped(signalled.signal_name, counts.evaluated, unfinished) from None
    except BaseException:
        if own_executor:
            executor.shutdown(cancel=True)
            own_executor = False
        raise
    finally:
        if bar is not None:
            bar.close()
        if own_executor:
            executor.shutdown()
    return [by_id[i] for i in sorted(by_id)]

"""Where candidates are evaluated: in-process, a local process pool, or Ray tasks.

`Executor.submit` returns a `concurrent.futures.Future` in all three cases,
so the search loop has one code path. Workers run TensorFlow on one thread
each (`WORKER_ENVIRONMENT`): parallelism comes from the workers.
"""

import concurrent.futures
import multiprocessing
import os
import signal

from evonorm_tf.search.evaluation import evaluate_candidate

WORKER_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_NUM_INTRAOP_THREADS": "1",
                      "TF_NUM_INTEROP_THREADS": "1"}

# A Ray task whose worker process dies is run again this many times (Ray's `max_retries`).
RAY_TASK_RETRIES = 3


def init_worker():
    """Initialiser of pool workers: one TensorFlow thread; Ctrl-C is the parent's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for key, value in WORKER_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)


class Executor:
    """Submits `evaluate_candidate` in-process (workers=0), to a process pool, or to Ray.

    Args:
      workers: evaluations run at the same time (0: in-process, one at a time).
      ray_address: run them as Ray tasks: `"local"` starts a private Ray on
        this machine, `"auto"` or `host:port` joins a cluster. A task whose
        worker dies is retried by Ray (`RAY_TASK_RETRIES`), so a lost worker
        loses no candidate.
    """

    def __init__(self, workers, ray_address=None):
        if workers < 0:
            raise ValueError(f"workers must be 0 or more, received {workers!r}")
        self.workers = max(1, workers)
        self._pool = None
        self._remote = None
        self._ray = None
        if ray_address:
            import ray  # optional dependency (extra `search-ray`): only needed for --ray-address

            ray.init(address=ray_address, ignore_reinit_error=True, include_dashboard=False,
                     runtime_env={"env_vars": dict(WORKER_ENVIRONMENT)},
                     **({"num_cpus": self.workers} if ray_address == "local" else {}))
            self._ray = ray
            self._remote = ray.remote(num_cpus=1, max_retries=RAY_TASK_RETRIES)(evaluate_candidate)
        elif workers > 0:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"), initializer=init_worker)

    def submit(self, graph_text, evaluation):
        if self._remote is not None:
            return self._remote.remote(graph_text, evaluation).future()
        if self._pool is not None:
            return self._pool.submit(evaluate_candidate, graph_text, evaluation)
        future = concurrent.futures.Future()
        try:
            future.set_result(evaluate_candidate(graph_text, evaluation))
        except Exception as error:  # surfaced by future.result()
            future.set_exception(error)
        return future

    def shutdown(self, cancel=False):
        """Releases the workers; `cancel=True` abandons running evaluations (stop on a signal)."""
        if self._pool is not None:
            if cancel:
                # Running evaluations are not cancellable: end their processes (re-run on resume).
                for process in list((getattr(self._pool, "_processes", None) or {}).values()):
                    process.terminate()
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._ray is not None:
            self._ray.shutdown()

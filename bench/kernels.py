"""Times the EvoNorm kernels of the cpu path against another version of them and BatchNorm+ReLU.

For a before/after comparison of kernel changes measured in one run:

    git show <rev>:evonorm_tf/kernels/cpu_s_series.py > /tmp/s_series_before.py
    python bench/kernels.py --before /tmp/s_series_before.py --kinds s0 --dtype bfloat16 --cpu-time

`--before` takes a file of any of `kernels/cpu.py` (before it was split: both
series), `kernels/cpu_b_series.py` or `kernels/cpu_s_series.py`; the kinds
the file has are timed in both versions. Each EvoNorm is called through
`b_series` / `s_series` (training mode, channels_last, 32 groups) of this
checkout ("after") and of the given file; the reference is TensorFlow's fused
batch norm op followed by ReLU. x and dy are in `--dtype` (bfloat16 or
float16: what the kernels receive under a mixed policy; the weights stay
float32). fwd is `y` in one `tf.function`; fwd+bwd adds `tape.gradient` with
a fixed random `dy` for x and the weights. All variants of one shape are timed
interleaved (`--repeats` rounds of `--iters` calls each), the median reported
with its ratio to BatchNorm+ReLU. `--cpu-time` times each call in CPU time of
this process (all its threads) instead of wall time: on a shared machine the
work done is steadier than the time it takes. The load average is printed with
the numbers.
"""

import argparse
import importlib.util
import os
import statistics as pystats
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

from evonorm_tf.kernels import cpu_b_series, cpu_s_series  # noqa: E402

DEFAULT_SHAPES = ("32,56,56,256", "32,28,28,512", "32,14,14,1024")
KINDS = ("b0", "b1", "b2", "s0", "s1", "s2")


def load_kernels(path):
    spec = importlib.util.spec_from_file_location("fused_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def has_kind(kernels, kind):
    return hasattr(kernels, "b_series" if kind.startswith("b") else "s_series")


def norm_act(kernels, kind, gamma, beta, v):
    def call(x):
        if kind.startswith("b"):
            return kernels.b_series(kind, x, gamma, beta, v if kind == "b0" else None, None, 1e-5,
                                    "channels_last")[0]
        return kernels.s_series(x, gamma, beta, v if kind == "s0" else None, 32, 1e-5, "channels_last",
                                centered=kind != "s2")
    return call


class After:
    """This checkout's kernels, both series."""
    b_series = staticmethod(cpu_b_series.b_series)
    s_series = staticmethod(cpu_s_series.s_series)


def batch_norm_relu(gamma, beta):
    def call(x):
        y = tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, epsilon=1e-5, is_training=True)[0]
        return tf.nn.relu(y)
    return call


def both_directions(function, weights, dy):
    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = function(x)
        return y, tape.gradient(y, [x] + weights, output_gradients=dy)
    return tf.function(function), tf.function(forward_backward)


def timed(function, x, iters, clock=time.perf_counter):
    times = []
    for _ in range(iters):
        start = clock()
        # One value read (synchronous anyway): `.numpy()` of every output would copy x-sized ones.
        tf.reshape([t for t in tf.nest.flatten(function(x)) if t is not None][-1], [-1])[:1].numpy()
        times.append((clock() - start) * 1e3)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default=None,
                        help="another kernels/cpu.py, cpu_b_series.py or cpu_s_series.py to time alongside")
    parser.add_argument("--shapes", default=";".join(DEFAULT_SHAPES))
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="dtype of x and dy")
    parser.add_argument("--cpu-time", action="store_true", help="time calls in this process's CPU time")
    args = parser.parse_args()
    versions = {"after": After}
    if args.before:
        versions = {"before": load_kernels(args.before), "after": After}
    kinds = [k for k in args.kinds.split(",") if k]
    clock = time.process_time if args.cpu_time else time.perf_counter
    load = os.getloadavg()
    print(f"# tensorflow {tf.__version__}; x in {args.dtype}; {args.repeats} interleaved rounds of {args.iters} calls; "
          f"{'CPU' if args.cpu_time else 'wall'} time; load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for text in args.shapes.split(";"):
        shape = [int(d) for d in text.split(",")]
        channels = shape[-1]
        x = tf.cast(tf.random.normal(shape, mean=0.3, stddev=1.5, seed=1), args.dtype)
        dy = tf.cast(tf.random.normal(shape, seed=2), args.dtype)
        gamma, beta = tf.Variable(tf.ones([channels])), tf.Variable(tf.zeros([channels]))
        v = tf.Variable(tf.fill([channels], 0.7))
        variants = {"bn_relu": both_directions(batch_norm_relu(gamma, beta), [gamma, beta], dy)}
        for kind in kinds:
            for version, kernels in versions.items():
                if not has_kind(kernels, kind):
                    continue
                variants[f"evonorm_{kind} {version}"] = both_directions(
                    norm_act(kernels, kind, gamma, beta, v), [gamma, beta, v], dy)
        for functions in variants.values():
            for function in functions:
                for _ in range(args.warmup):
                    timed(function, x, 1)
        times = {name: ([], []) for name in variants}
        for _ in range(args.repeats):
            for name, functions in variants.items():
                for function, store in zip(functions, times[name]):
                    store.extend(timed(function, x, args.iters, clock))
        medians = {name: [pystats.median(t) for t in pair] for name, pair in times.items()}
        reference = medians["bn_relu"]
        print(f"\n## x = {shape} {args.dtype}\n")
        print("| variant | fwd ms | fwd / bn_relu | fwd+bwd ms | f+b / bn_relu |")
        print("|---|---:|---:|---:|---:|")
        for name, (fwd, fb) in medians.items():
            print(f"| {name} | {fwd:.1f} | {fwd / reference[0]:.2f} | {fb:.1f} | {fb / reference[1]:.2f} |",
                  flush=True)
    load = os.getloadavg()
    print(f"\n# load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()

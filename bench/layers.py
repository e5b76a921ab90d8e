"""Times every evonorm_tf norm-act layer against BatchNorm+ReLU on ResNet-50 shapes.

For each shape, layer and XLA setting it times, in training mode:

* fwd: `y = layer(x, training=True)` inside one `tf.function`;
* fwd+bwd: the same under a `tf.GradientTape` in the same `tf.function`,
  `tape.gradient(y, [x, *trainable weights], output_gradients=dy)` with a
  fixed random `dy`; `y` is returned too, so it is materialised.

Each call is warmed up (tracing, XLA compilation), then the median of
`--iters` calls is reported, as ratios to the tf_keras fused BatchNorm+ReLU
(`bn_fused`, no XLA) and to a memory-bandwidth bound measured in the same
run: one TF `x * 1.5` pass (read x, write y) takes `t`, so an x-sized pass
costs `t / 2`; the bound is 3 passes forward (read x for the statistics,
read x again, write y) and 8 passes forward+backward.

    python bench/layers.py                          # everything (minutes)
    python bench/layers.py --quick                  # BN vs the six EvoNorms, no XLA (~5 min)
    python bench/layers.py --shapes 32,28,28,512 --layers evonorm_b0,bn_fused --xla off

The layers of one shape and XLA setting are timed interleaved: `--repeats`
rounds, each timing `--iters` calls of every layer in turn, so drifting
machine load hits them alike; the median over all calls is reported, and each
ratio to `bn_fused` as the median of its per-round ratios with their range
`[min, max]` over the rounds (the spread). The machine is shared: the load
average is printed with the numbers.

`--policy mixed_bfloat16` (or `mixed_float16`) sets the Keras 3 and tf_keras
global dtype policy before the layers are built: x and dy are then in the
compute dtype, weights and statistics float32, for every layer including
`bn_fused`. The memory bound's pass is then timed on x in that dtype.
"""

import argparse
import json
import os
import statistics as pystats
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

import evonorm_tf  # noqa: E402
from evonorm_tf import kernels  # noqa: E402
from evonorm_tf import tf_keras as evonorm_tf_keras  # noqa: E402

DEFAULT_SHAPES = ("32,56,56,256", "32,28,28,512", "32,14,14,1024")
REFERENCE = "bn_fused"


class _WithReLU:
    """A baseline normalisation layer followed by ReLU; exposes the layer's weights."""

    def __init__(self, layer):
        self.layer = layer

    def __call__(self, x, training):
        return tf.nn.relu(self.layer(x, training=training))

    @property
    def trainable_variables(self):
        return self.layer.trainable_variables


def _ours(name, front_end=evonorm_tf):
    def build():
        return front_end.get_norm_act(name, epsilon=1e-5)
    return build


LAYERS = {
    "bn_fused": lambda: _WithReLU(tf_keras.layers.BatchNormalization(epsilon=1e-5, fused=True)),
    "bn_keras3": lambda: _WithReLU(keras.layers.BatchNormalization(epsilon=1e-5)),
    "gn_keras3": lambda: _WithReLU(keras.layers.GroupNormalization(groups=32, epsilon=1e-5)),
    "evonorm_b0": _ours("evonorm_b0"),
    "evonorm_b1": _ours("evonorm_b1"),
    "evonorm_b2": _ours("evonorm_b2"),
    "evonorm_s0": _ours("evonorm_s0"),
    "evonorm_s1": _ours("evonorm_s1"),
    "evonorm_s2": _ours("evonorm_s2"),
    "gn_relu": _ours("gn_relu"),
    "frn_tlu": _ours("frn_tlu"),
    "tfk_evonorm_b0": _ours("evonorm_b0", evonorm_tf_keras),
    "tfk_evonorm_s0": _ours("evonorm_s0", evonorm_tf_keras),
}
# `<name>@<path>`: the same layer built on kernel path `<path>` (`evonorm_tf.kernels`:
# cpu, portable, reference); without a suffix, the path of EVONORM_TF_KERNELS (default auto).
PATH_SEPARATOR = "@"


def split_path(name):
    """`("evonorm_s0", "portable")` for `"evonorm_s0@portable"`; the path is None without a suffix."""
    base, _, path = name.partition(PATH_SEPARATOR)
    return base, path or None


def median_ms(function, args, iters, warmup):
    for _ in range(warmup):
        _block(function(*args))
    times = timed_calls(function, args, iters)
    return pystats.median(times), min(times)


def timed_calls(function, args, iters):
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        _block(function(*args))
        times.append((time.perf_counter() - start) * 1e3)
    return times


def _block(outputs):
    # CPU tf.function calls are synchronous; reading one value makes it explicit. One value,
    # not the whole of y: `.numpy()` copies, and a copy of y costs about a pass over x.
    tf.reshape(tf.nest.flatten(outputs)[-1], [-1])[:1].numpy()


def pass_ms(x, iters, warmup):
    """Median time of one x-sized pass, from a `x * 1.5` read+write (no XLA)."""
    scale = tf.function(lambda t: t * 1.5)
    return median_ms(scale, (x,), iters, warmup)[0] / 2.0


def make_functions(layer, x, dy, xla):
    layer(x, training=True)  # build the weights outside tf.function
    weights = list(layer.trainable_variables)

    def forward(inputs):
        return layer(inputs, training=True)

    def forward_backward(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = layer(inputs, training=True)
        gradients = tape.gradient(outputs, [inputs] + weights, output_gradients=dy)
        return outputs, gradients

    return (tf.function(forward, jit_compile=xla), tf.function(forward_backward, jit_compile=xla))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default=";".join(DEFAULT_SHAPES),
                        help="';'-separated NHWC shapes, e.g. '32,56,56,256;32,14,14,1024'")
    parser.add_argument("--layers", default=",".join(LAYERS),
                        help="comma-separated, from: " + ", ".join(LAYERS) + f"; add {PATH_SEPARATOR!r} and a kernel path "
                        "(cpu, portable, reference) to an evonorm_tf layer to build it on that path")
    parser.add_argument("--iters", type=int, default=5, help="timed calls per layer and round")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds over the layers")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--xla", choices=("on", "off", "both"), default="both")
    parser.add_argument("--quick", action="store_true",
                        help="bn_fused and the six EvoNorms, XLA off, 3 rounds of 5 calls, 2 warm-up calls")
    parser.add_argument("--json", default=None, help="append one JSON line per measurement")
    parser.add_argument("--policy", choices=("float32", "mixed_bfloat16", "mixed_float16"), default="float32",
                        help="Keras 3 and tf_keras global dtype policy of every layer")
    args = parser.parse_args()
    if args.quick:
        args.layers = ",".join(["bn_fused"] + [f"evonorm_{k}" for k in ("b0", "b1", "b2", "s0", "s1", "s2")])
        args.xla, args.iters, args.repeats, args.warmup = "off", 5, 3, 2

    keras.mixed_precision.set_global_policy(args.policy)
    tf_keras.mixed_precision.set_global_policy(args.policy)
    dtype = tf.as_dtype(keras.mixed_precision.global_policy().compute_dtype)
    names = [n.strip() for n in args.layers.split(",") if n.strip()]
    unknown = [n for n in names if split_path(n)[0] not in LAYERS]
    if unknown:
        raise SystemExit(f"unknown layers {unknown}; choose from {list(LAYERS)}")
    if REFERENCE not in names:
        names.insert(0, REFERENCE)
    xla_settings = {"on": [True], "off": [False], "both": [False, True]}[args.xla]
    shapes = [tuple(int(d) for d in s.split(",")) for s in args.shapes.replace(" ", "").split(";") if s]

    load_before = os.getloadavg()
    threads = tf.config.threading.get_intra_op_parallelism_threads()
    print(f"# tensorflow {tf.__version__}, keras {keras.__version__}; policy {args.policy}; "
          f"{args.repeats} interleaved rounds of "
          f"{args.iters} calls, warm-up {args.warmup}; intra-op threads {threads} (0: all {os.cpu_count()} cores); "
          f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    sink = open(args.json, "a") if args.json else None
    for shape in shapes:
        x = tf.cast(tf.random.normal(shape, mean=0.3, stddev=1.5, seed=1), dtype)
        dy = tf.cast(tf.random.normal(shape, seed=2), dtype)
        one_pass = pass_ms(x, max(args.iters, 10), args.warmup)
        bound_forward, bound_backward = 3 * one_pass, 8 * one_pass
        megabytes = x.numpy().nbytes / 1e6
        print(f"\n## x = {list(shape)} {dtype.name} ({megabytes:.1f} MB); one pass {one_pass:.2f} ms "
              f"({megabytes / one_pass:.1f} GB/s); bound fwd (3 passes) {bound_forward:.2f} ms, "
              f"fwd+bwd (8 passes) {bound_backward:.2f} ms\n")
        print("| layer | XLA | fwd ms | fwd / bn_fused [min, max] | fwd / bound | fwd+bwd ms | "
              "f+b / bn_fused [min, max] | f+b / bound |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for xla in xla_settings if False in xla_settings else [False] + xla_settings:
            run = [n for n in names if xla in xla_settings or n == REFERENCE]
            functions = {}
            for name in run:
                base, path = split_path(name)
                with kernels.use(path or kernels.get_path()):  # the layer is built on its first call
                    layer = LAYERS[base]()
                    forward, forward_backward = make_functions(layer, x, dy, xla)
                    for function in (forward, forward_backward):
                        for _ in range(args.warmup):
                            _block(function(x))
                functions[name] = (forward, forward_backward)
            times = {name: ([], []) for name in run}
            rounds = {name: ([], []) for name in run}  # per-round medians
            for _ in range(args.repeats):
                for name in run:
                    for function, store, per_round in zip(functions[name], times[name], rounds[name]):
                        calls = timed_calls(function, (x,), args.iters)
                        store.extend(calls)
                        per_round.append(pystats.median(calls))
            if not xla:  # ratios are to the tf_keras fused BatchNorm without XLA
                reference = [pystats.median(t) for t in times[REFERENCE]]
                reference_rounds = rounds[REFERENCE]
            for name in run:
                (fwd, fb), (fwd_min, fb_min) = ([f(t) for t in times[name]] for f in (pystats.median, min))
                # Ratios per round (to the reference's median of the same round; without XLA, the
                # reference ran interleaved in the same rounds): median and range over the rounds.
                ratio_rounds = [np.array(mine) / np.array(ref) for mine, ref in zip(rounds[name], reference_rounds)]
                ratios = [(float(np.median(r)), float(r.min()), float(r.max())) for r in ratio_rounds]
                print(f"| {name} | {'yes' if xla else 'no'} | {fwd:.2f} | {_ratio(ratios[0])} | "
                      f"{fwd / bound_forward:.2f} | {fb:.2f} | {_ratio(ratios[1])} | {fb / bound_backward:.2f} |",
                      flush=True)
                if sink:
                    sink.write(json.dumps({
                        "shape": list(shape), "layer": name, "xla": xla, "fwd_ms": fwd, "fwd_min_ms": fwd_min,
                        "fwd_bwd_ms": fb, "fwd_bwd_min_ms": fb_min, "pass_ms": one_pass,
                        "fwd_ratio_bn_fused": fwd / reference[0], "fwd_bwd_ratio_bn_fused": fb / reference[1],
                        "policy": args.policy, "rounds": args.repeats,
                        "fwd_round_ratios": [float(r) for r in ratio_rounds[0]],
                        "fwd_bwd_round_ratios": [float(r) for r in ratio_rounds[1]],
                        "fwd_ratio_bound": fwd / bound_forward, "fwd_bwd_ratio_bound": fb / bound_backward,
                        "load": os.getloadavg()[0],
                    }) + "\n")
                    sink.flush()
            del functions
    load_after = os.getloadavg()
    print(f"\n# load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    if sink:
        sink.close()


def _ratio(stats):
    median, low, high = stats
    return f"{median:.2f} [{low:.2f}, {high:.2f}]"


if __name__ == "__main__":
    main()

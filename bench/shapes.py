"""Forward+backward over many input shapes: time and resident memory against fused BN.

Detection and multi-resolution evaluation feed a layer a new spatial size at
nearly every call. For each layer this runs `--rounds` rounds over `--sizes`
distinct spatial sizes (batch `--batch`, `--channels` channels, float32),
forward and backward with a gradient tape, in two modes:

* eager: the layer called directly;
* graph: one `tf.function` with `None` batch and spatial dimensions
  (reported with its trace count, which should be 1).

Two measurements, with ratios to tf_keras's fused BatchNormalization + ReLU
(`bn_fused`) in the same run:

* Rounds, each layer in its own process, so its resident-memory growth
  (VmRSS after the rounds minus before the first new size) is its own: the
  time of round 1 (every size new) and of all rounds together.
* Steady state, all layers in one process: after three warm-up rounds (a
  recurring shape's eager kernels compile on their third call), `--repeats`
  rounds over the sizes of each layer in turn, in a rotating order; the
  median round per layer. Drifting machine load hits the layers alike,
  where the rounds of separate processes can differ by 10-20% from one
  process to the next. As in training, each call meets inputs not touched
  since the layer's previous round.

    python bench/shapes.py                                   # bn_fused, EvoNorm-B0, -S0
    python bench/shapes.py --layers bn_fused,evonorm_s0@portable --rounds 2
"""

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _rss_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def spatial_sizes(count):
    """`count` distinct (H, W), from 16×19 upwards in steps of 2."""
    return [(16 + 2 * i, 19 + 2 * i) for i in range(count)]


def _inputs(args):
    import tensorflow as tf

    return [(tf.random.normal([args.batch, h, w, args.channels], 0.3, 1.5, seed=i),
             tf.random.normal([args.batch, h, w, args.channels], seed=100 + i))
            for i, (h, w) in enumerate(spatial_sizes(args.sizes))]


def _functions(name, args):
    """`(layer, eager forward+backward, graph with None dims)` of one layer, built and traced once."""
    import tensorflow as tf

    from evonorm_tf import kernels
    from layers import LAYERS, split_path  # bench/layers.py

    base, path = split_path(name)
    with kernels.use(path or kernels.get_path()):
        layer = LAYERS[base]()

        def forward_backward(x, dy):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
            return y, tape.gradient(y, [x] + list(layer.trainable_variables), output_gradients=dy)

        spec = tf.TensorSpec([None, None, None, args.channels])
        graph = tf.function(forward_backward, input_signature=[spec, spec])
        warm_x = tf.random.normal([args.batch, 7, 9, args.channels])
        for function in (forward_backward, graph):  # builds the layer, traces the graph once
            [t.numpy() for t in tf.nest.flatten(function(warm_x, warm_x))]
    return layer, forward_backward, graph


def _run(function, x, dy):
    """One call, finished: eager execution is synchronous, and the last output (a `[C]` gradient) is read.

    The x-sized outputs are not copied to NumPy: at 62×65 two such copies
    took 5.5 ms, as long as fused BN's whole forward and backward.
    """
    import tensorflow as tf

    tf.nest.flatten(function(x, dy))[-1].numpy()


def measure(name, args):
    """The rounds of one layer in this process; returns a dict of results."""
    inputs = _inputs(args)
    layer, forward_backward, graph = _functions(name, args)
    result = {"layer": name, "path": getattr(getattr(layer, "_kernels", None), "path", None)}
    rss_before = _rss_mb()
    for mode, function in (("eager", forward_backward), ("graph", graph)):
        rounds = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            for x, dy in inputs:
                _run(function, x, dy)
            rounds.append(time.perf_counter() - start)
        result[mode] = rounds
    result["graph_traces"] = graph.experimental_get_tracing_count()
    result["rss_growth_mb"] = _rss_mb() - rss_before
    return result


def steady_state(names, args):
    """Each layer's median round over the sizes, layers in turn; `{name: {mode: s}}`."""
    import statistics

    inputs = _inputs(args)
    functions = {name: _functions(name, args)[1:] for name in names}
    result = {name: {} for name in names}
    for index, mode in enumerate(("eager", "graph")):
        rounds = {name: [] for name in names}
        for repeat in range(3 + args.repeats):
            for name in names[repeat % len(names):] + names[:repeat % len(names)]:
                start = time.perf_counter()
                for x, dy in inputs:
                    _run(functions[name][index], x, dy)
                if repeat >= 3:
                    rounds[name].append(time.perf_counter() - start)
        for name in names:
            result[name][mode] = statistics.median(rounds[name])
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", default="bn_fused,evonorm_b0,evonorm_s0",
                        help="comma-separated names of bench/layers.py, optionally with @cpu/@portable/@reference")
    parser.add_argument("--sizes", type=int, default=24, help="distinct spatial sizes per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7, help="steady-state rounds per layer and mode")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.sizes, args.rounds, args.batch, args.repeats) < 1 or args.channels < 32 or args.channels % 32:
        print(f"error: --sizes, --rounds, --batch, --repeats must be >= 1 and --channels a multiple of 32; "
              f"received {args.sizes}, {args.rounds}, {args.batch}, {args.repeats}, {args.channels}", file=sys.stderr)
        sys.exit(2)
    if args.child:
        print(json.dumps(measure(args.child, args)))
        return
    names = args.layers.split(",")
    if "bn_fused" not in names:
        names.insert(0, "bn_fused")
    from layers import LAYERS, split_path  # noqa: E402 (bench/layers.py)

    unknown = [n for n in names if split_path(n)[0] not in LAYERS]
    if unknown:
        print(f"error: unknown layer {unknown[0]!r}; valid: {', '.join(LAYERS)}", file=sys.stderr)
        sys.exit(2)
    load = os.getloadavg()
    print(f"# fwd+bwd over {args.sizes} spatial sizes {spatial_sizes(args.sizes)[0]}..{spatial_sizes(args.sizes)[-1]}, "
          f"batch {args.batch}, {args.channels} channels, float32, {args.rounds} rounds, "
          f"steady state: median of {args.repeats} rounds, layers in turn; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    results = []
    for name in names:
        command = [sys.executable, os.path.abspath(__file__), "--child", name] + [
            f"--{k}={getattr(args, k)}" for k in ("sizes", "rounds", "batch", "channels")]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
    steady = steady_state(names, args)
    base = results[0]
    print("\n| layer | path | eager s (round 1, all rounds, steady) | / bn_fused | graph s (round 1, all rounds, "
          "steady) | / bn_fused | graph traces | RSS growth MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        cells = []
        for mode in ("eager", "graph"):
            times = (r[mode][0], sum(r[mode]), steady[r["layer"]][mode])
            bn = (base[mode][0], sum(base[mode]), steady[base["layer"]][mode])
            cells.append(", ".join(f"{t:.3f}" for t in times))
            cells.append(", ".join(f"{t / b:.2f}" for t, b in zip(times, bn)))
        print(f"| {r['layer']} | {r['path'] or '-'} | " + " | ".join(cells) +
              f" | {r['graph_traces']} | {r['rss_growth_mb']:.0f} |")
    load = os.getloadavg()
    print(f"\n# load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()

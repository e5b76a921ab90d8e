"""Forward+backward over many input shapes: time and resident memory against fused BN.

Detection and multi-resolution evaluation feed a layer a new spatial size at
nearly every call. For each layer this runs `--rounds` rounds over `--sizes`
distinct spatial sizes (batch `--batch`, `--channels` channels, float32),
forward and backward with a gradient tape, in two modes:

* eager: the layer called directly;
* graph: one `tf.function` with `None` batch and spatial dimensions
  (reported with its trace count, which should be 1).

Times are given for round 1, the last round and all rounds together.

Each layer runs in its own process, so its resident-memory growth (VmRSS
after the rounds minus before the first new size) is its own. Ratios are to
tf_keras's fused BatchNormalization + ReLU (`bn_fused`) in the same run.

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


def measure(name, args):
    """Times one layer in this process; returns a dict of results."""
    import tensorflow as tf

    from evonorm_tf import kernels
    from layers import LAYERS, split_path  # bench/layers.py

    base, path = split_path(name)
    sizes = spatial_sizes(args.sizes)
    inputs = [(tf.random.normal([args.batch, h, w, args.channels], 0.3, 1.5, seed=i),
               tf.random.normal([args.batch, h, w, args.channels], seed=100 + i)) for i, (h, w) in enumerate(sizes)]
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
    result = {"layer": name, "path": getattr(getattr(layer, "_kernels", None), "path", None)}
    rss_before = _rss_mb()
    for mode, function in (("eager", forward_backward), ("graph", graph)):
        rounds = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            for x, dy in inputs:
                [t.numpy() for t in tf.nest.flatten(function(x, dy))]
            rounds.append(time.perf_counter() - start)
        result[mode] = rounds
    result["graph_traces"] = graph.experimental_get_tracing_count()
    result["rss_growth_mb"] = _rss_mb() - rss_before
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", default="bn_fused,evonorm_b0,evonorm_s0",
                        help="comma-separated names of bench/layers.py, optionally with @cpu/@portable/@reference")
    parser.add_argument("--sizes", type=int, default=24, help="distinct spatial sizes per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sizes < 1 or args.rounds < 1 or args.batch < 1 or args.channels < 32 or args.channels % 32:
        print(f"error: --sizes, --rounds, --batch must be >= 1 and --channels a multiple of 32; received "
              f"{args.sizes}, {args.rounds}, {args.batch}, {args.channels}", file=sys.stderr)
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
          f"batch {args.batch}, {args.channels} channels, float32, {args.rounds} rounds; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    results = []
    for name in names:
        command = [sys.executable, os.path.abspath(__file__), "--child", name] + [
            f"--{k}={getattr(args, k)}" for k in ("sizes", "rounds", "batch", "channels")]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
    base = results[0]
    print("\n| layer | path | eager s (round 1, last, all) | / bn_fused | graph s (round 1, last, all) | / bn_fused "
          "| graph traces | RSS growth MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        cells = []
        for mode in ("eager", "graph"):
            times, bn = (r[mode][0], r[mode][-1], sum(r[mode])), (base[mode][0], base[mode][-1], sum(base[mode]))
            cells.append(", ".join(f"{t:.3f}" for t in times))
            cells.append(", ".join(f"{t / b:.2f}" for t, b in zip(times, bn)))
        print(f"| {r['layer']} | {r['path'] or '-'} | " + " | ".join(cells) +
              f" | {r['graph_traces']} | {r['rss_growth_mb']:.0f} |")
    load = os.getloadavg()
    print(f"\n# load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()

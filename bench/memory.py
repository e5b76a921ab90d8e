"""Peak host memory of a TensorFlow computation on CPU, and a per-layer report.

What works on this CPU build (TF 2.20): `tf.config.experimental.get_memory_info("CPU:0")`
returns `{"current", "peak"}` bytes of TF's CPU allocator, and
`tf.config.experimental.reset_memory_stats("CPU:0")` resets the peak, so the
peak of one call is measured in-process, counting only tensors (not Python or
library memory). The process-wide fallback is the RSS high-water mark `VmHWM`
from `/proc/self/status`, reset by writing `5` to `/proc/self/clear_refs`
(Linux >= 4.0); it also counts memory TF's allocator keeps cached, so it is
coarser.

    python bench/memory.py --shape 8,56,56,256       # peak of fwd+bwd for each layer
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

DEVICE = "CPU:0"


def _tf_stats_available():
    try:
        tf.config.experimental.get_memory_info(DEVICE)
        return True
    except (ValueError, RuntimeError):
        return False


def _rss_high_water():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def peak_bytes(function, *args):
    """Runs `function(*args)` once; returns `(peak, before)` bytes.

    `peak` is the allocator's high-water mark during the call and `before`
    what was allocated when it started (weights, inputs), so `peak - before`
    is the memory the call itself needed.
    """
    if _tf_stats_available():
        tf.config.experimental.reset_memory_stats(DEVICE)
        before = tf.config.experimental.get_memory_info(DEVICE)["current"]
        result = function(*args)
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, result)
        return tf.config.experimental.get_memory_info(DEVICE)["peak"], before
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    before = _rss_high_water()
    function(*args)
    return _rss_high_water(), before


def main():
    import layers as layer_bench  # bench/layers.py

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="8,56,56,256")
    parser.add_argument("--layers", default=",".join(layer_bench.LAYERS))
    args = parser.parse_args()
    shape = [int(d) for d in args.shape.split(",")]
    x = tf.random.normal(shape, seed=1)
    dy = tf.random.normal(shape, seed=2)
    size = x.numpy().nbytes
    print(f"# peak memory of one fwd+bwd call (training), x = {shape} ({size / 1e6:.1f} MB); "
          f"TF allocator stats: {_tf_stats_available()}")
    print("| layer | peak − before (MB) | in x-sized buffers | vs bn_fused |")
    print("|---|---:|---:|---:|")
    reference = None
    for name in ["bn_fused"] + [n for n in args.layers.split(",") if n != "bn_fused"]:
        layer = layer_bench.LAYERS[name]()
        _, forward_backward = layer_bench.make_functions(layer, x, dy, xla=False)
        forward_backward(x)  # trace
        peak, before = peak_bytes(forward_backward, x)
        used = peak - before
        reference = reference or used
        print(f"| {name} | {used / 1e6:.1f} | {used / size:.2f} | {used / reference:.2f} |", flush=True)


if __name__ == "__main__":
    main()

"""Training-step time and peak memory of a pre-activation ResNet-50 per norm-act layer.

Builds a compact pre-activation (v2) ResNet-50 with tf_keras layers and
`evonorm_tf.tf_keras.get_norm_act` (bottleneck blocks [3, 4, 6, 3]; one
norm-act at each block input, feeding the projection shortcut too, one after
each inner conv except the last, one after the last stage; no norm in the
stem), then times `--iters` SGD steps on random 224×224 images (median, after
`--warmup` steps) for each norm, interleaving the norms over `--repeats`
rounds so drifting machine load hits them alike, and measures the peak
allocator memory of one step above what was allocated before it (weights,
optimizer state, inputs of every model built so far; see bench/memory.py). Ratios are to `bn_relu`
(tf_keras's fused BatchNormalization + ReLU) in the same run: the median of the
per-round ratios (each norm's median step of a round over bn_relu's of the
same round) with their range `[min, max]`, the spread.

`--policy mixed_bfloat16` or `mixed_float16` sets tf_keras's global dtype
policy before the models are built (convolutions and activations in the
compute dtype, weights and every norm's statistics float32; float16 steps use
a `LossScaleOptimizer`). `--size 64` for the smaller images.

    python bench/resnet50.py --norms bn_relu,evonorm_b0,evonorm_s0 --batch 8
    python bench/resnet50.py --norms bn_relu,evonorm_b0,evonorm_b0@reference   # and on the reference path
    python bench/resnet50.py --iters 2 --repeats 10   # finer interleaving on a noisy machine
    python bench/resnet50.py --inter-op 1   # one op at a time (TensorFlow's default runs independent ops side by side)
    python bench/resnet50.py --policy mixed_bfloat16 --iters 2 --repeats 8
    python bench/resnet50.py --cpu-kernels xla   # the cpu path's XLA kernels at static shapes (not the default)
"""

import argparse
import os
import statistics as pystats
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

import memory  # noqa: E402  (bench/memory.py)
from evonorm_tf import kernels  # noqa: E402
from evonorm_tf.kernels import cpu_launch  # noqa: E402
from evonorm_tf import tf_keras as evonorm  # noqa: E402

# `<norm>@<path>`: the model built on kernel path `<path>` (cpu, portable, reference).
PATH_SEPARATOR = "@"

STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (width, blocks, first stride)


def _conv(filters, size, stride, name):
    return tf_keras.layers.Conv2D(filters, size, strides=stride, padding="same", use_bias=False, name=name)


def preact_resnet50(norm, size=224, classes=1000):
    """Pre-activation ResNet-50 whose every norm-act is `get_norm_act(norm)`."""
    inputs = tf_keras.Input((size, size, 3))
    x = _conv(64, 7, 2, "stem_conv")(inputs)
    x = tf_keras.layers.MaxPooling2D(3, 2, padding="same")(x)
    in_channels = 64
    for stage, (width, blocks, stride) in enumerate(STAGES):
        for block in range(blocks):
            name = f"stage{stage + 1}_block{block + 1}"
            block_stride = stride if block == 0 else 1
            preact = evonorm.get_norm_act(norm, name=f"{name}_preact")(x)
            if block_stride != 1 or in_channels != 4 * width:
                shortcut = _conv(4 * width, 1, block_stride, f"{name}_shortcut")(preact)
            else:
                shortcut = x
            h = _conv(width, 1, 1, f"{name}_conv1")(preact)
            h = evonorm.get_norm_act(norm, name=f"{name}_norm1")(h)
            h = _conv(width, 3, block_stride, f"{name}_conv2")(h)
            h = evonorm.get_norm_act(norm, name=f"{name}_norm2")(h)
            h = _conv(4 * width, 1, 1, f"{name}_conv3")(h)
            x = tf_keras.layers.Add()([h, shortcut])
            in_channels = 4 * width
    x = evonorm.get_norm_act(norm, name="final_norm")(x)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf_keras.layers.Dense(classes, dtype="float32")(x)  # float32 logits under a mixed policy
    return tf_keras.Model(inputs, outputs, name=f"preact_resnet50_{norm}")


def make_step(model, xla):
    optimizer = tf_keras.optimizers.SGD(0.01)
    scaled = tf_keras.mixed_precision.global_policy().compute_dtype == "float16"
    if scaled:
        optimizer = tf_keras.mixed_precision.LossScaleOptimizer(optimizer)

    @tf.function(jit_compile=xla)
    def step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
            objective = optimizer.get_scaled_loss(loss) if scaled else loss
        gradients = tape.gradient(objective, model.trainable_variables)
        if scaled:
            gradients = optimizer.get_unscaled_gradients(gradients)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--norms", default="bn_relu,evonorm_b0,evonorm_s0")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--iters", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--xla", choices=("on", "off"), default="off")
    parser.add_argument("--inter-op", type=int, default=0,
                        help="TensorFlow inter-op threads (0: TensorFlow's default, one per core)")
    parser.add_argument("--policy", choices=("float32", "mixed_bfloat16", "mixed_float16"), default="float32",
                        help="tf_keras global dtype policy of the models")
    parser.add_argument("--cpu-kernels", choices=("native", "xla"), default="native",
                        help="the cpu path at static shapes: the native ops where they serve the layout "
                             "(evonorm_tf.kernels.native, the default), or its XLA kernels, for comparison")
    args = parser.parse_args()
    cpu_launch.NATIVE = args.cpu_kernels == "native"
    tf_keras.mixed_precision.set_global_policy(args.policy)
    if args.inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)
    norms = [n for n in args.norms.split(",") if n]
    if "bn_relu" not in norms:
        norms.insert(0, "bn_relu")

    images = tf.random.normal([args.batch, args.size, args.size, 3], seed=1)
    labels = tf.random.uniform([args.batch], 0, 1000, dtype=tf.int32, seed=2)
    load = os.getloadavg()
    print(f"# pre-activation ResNet-50, batch {args.batch}, {args.size}², policy {args.policy}, XLA {args.xla}, "
          f"inter-op threads {tf.config.threading.get_inter_op_parallelism_threads() or 'default'}, "
          f"cpu kernels {args.cpu_kernels}; "
          f"{args.repeats}×{args.iters} timed steps per norm; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    steps, times, peaks, losses = {}, {n: [] for n in norms}, {}, {}
    round_medians = {n: [] for n in norms}
    for norm in norms:
        tf_keras.utils.set_random_seed(0)
        base, _, path = norm.partition(PATH_SEPARATOR)
        with kernels.use(path or kernels.get_path()):  # layers are built here, on this path
            model = preact_resnet50(base, args.size)
            steps[norm] = make_step(model, args.xla == "on")
            first = float(steps[norm](images, labels))
        for _ in range(args.warmup):
            steps[norm](images, labels)
        peak, before = memory.peak_bytes(steps[norm], images, labels)
        peaks[norm] = (peak, before)
        losses[norm] = [first]
    for _ in range(args.repeats):
        for norm in norms:
            this_round = []
            for _ in range(args.iters):
                start = time.perf_counter()
                loss = steps[norm](images, labels).numpy()
                this_round.append(time.perf_counter() - start)
            times[norm].extend(this_round)
            round_medians[norm].append(pystats.median(this_round))
            losses[norm].append(float(loss))
    print("\n| norm | median s/step | [p25, p75] | vs bn_relu: median of rounds [min, max] | "
          "step peak MB (peak − before) | step peak vs bn_relu | loss first → last |")
    print("|---|---:|---|---:|---:|---:|---|")
    ref_peak, ref_before = peaks["bn_relu"]
    for norm in norms:
        quartiles = pystats.quantiles(times[norm], n=4)
        median = pystats.median(times[norm])
        peak, before = peaks[norm]
        ratios = [mine / ref for mine, ref in zip(round_medians[norm], round_medians["bn_relu"])]
        spread = f"{pystats.median(ratios):.3f} [{min(ratios):.3f}, {max(ratios):.3f}]"
        print(f"| {norm} | {median:.3f} | [{quartiles[0]:.3f}, {quartiles[2]:.3f}] | {spread} | "
              f"{(peak - before) / 1e6:.0f} | {(peak - before) / (ref_peak - ref_before):.3f} | "
              f"{losses[norm][0]:.3f} → {losses[norm][-1]:.3f} |")
    load = os.getloadavg()
    print(f"\n# load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()

"""GPU figures: the portable kernel path against cuDNN BatchNorm, and a mixed_float16 ResNet-50 step.

Two tables, each naming the device it ran on:

1. Layer forward+backward (`tf.function`, XLA off and on) at ResNet shapes in
   the policy's compute dtype: tf_keras's fused BatchNormalization + ReLU
   (cuDNN on a GPU) against EvoNorm-B0 and -S0 on the `portable` path.
2. Pre-activation ResNet-50 train step (`bench/resnet50.py`'s model) under
   the policy, with loss scaling for `mixed_float16`, XLA off and on; ratios
   to the BatchNorm model.

Medians of `--iters` timed calls after `--warmup`; a GPU call is timed to
the end of its computation (a value is read back). On a CPU-only machine it
runs the same (slowly); `--tiny` shrinks it to a smoke test.

    python bench/gpu.py                       # on a machine with a GPU
    python bench/gpu.py --tiny                # anywhere, a few seconds
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

from evonorm_tf import kernels  # noqa: E402
from evonorm_tf import tf_keras as evonorm  # noqa: E402

LAYER_SHAPES = ("32,56,56,256", "32,28,28,512", "32,14,14,1024")
NORMS = ("bn_relu", "evonorm_b0", "evonorm_s0")
POLICIES = ("mixed_float16", "mixed_bfloat16", "float32")


def device_name():
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU only (no GPU visible)"
    details = tf.config.experimental.get_device_details(gpus[0])
    return f"{details.get('device_name', gpus[0].name)} (compute capability {details.get('compute_capability')})"


def median_ms(function, args, iters, warmup):
    for _ in range(warmup):
        tf.nest.flatten(function(*args))[0].numpy()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        tf.nest.flatten(function(*args))[0].numpy()
        times.append(1e3 * (time.perf_counter() - start))
    return pystats.median(times), min(times), max(times)


def _norm_layer(norm):
    if norm == "bn_relu":  # tf_keras's fused BatchNormalization: cuDNN on a GPU
        bn = tf_keras.layers.BatchNormalization(epsilon=1e-5, fused=True)
        return lambda x, training: tf.nn.relu(bn(x, training=training)), bn
    layer = evonorm.get_norm_act(norm, epsilon=1e-5)
    return layer, layer


def layer_table(args, dtype):
    print(f"\n## layer forward+backward, compute dtype {dtype.name}, kernel path {args.path}\n")
    print("| shape | layer | XLA | median ms | [min, max] | / bn_relu |")
    print("|---|---|---|---:|---|---:|")
    for shape_text in args.shapes.split(";"):
        shape = [int(s) for s in shape_text.split(",")]
        x = tf.cast(tf.random.normal(shape, 0.3, 1.5, seed=1), dtype)
        dy = tf.cast(tf.random.normal(shape, seed=2), dtype)
        for xla in (False, True):
            base = None
            for norm in NORMS:
                with kernels.use(args.path):
                    call, layer = _norm_layer(norm)
                    call(x, training=True)
                weights = list(layer.trainable_variables)

                def forward_backward(x, call=call, weights=weights):
                    with tf.GradientTape() as tape:
                        tape.watch(x)
                        y = call(x, training=True)
                    return y, tape.gradient(y, [x] + weights, output_gradients=dy)

                med, low, high = median_ms(tf.function(forward_backward, jit_compile=xla), (x,), args.iters,
                                           args.warmup)
                base = base or med
                print(f"| {shape_text} | {norm} | {'on' if xla else 'off'} | {med:.2f} | [{low:.2f}, {high:.2f}] "
                      f"| {med / base:.2f} |")


def step_table(args):
    from resnet50 import preact_resnet50  # bench/resnet50.py

    print(f"\n## pre-activation ResNet-50 train step, {args.size}², batch {args.batch}, policy {args.policy}, "
          f"kernel path {args.path}\n")
    print("| norm | XLA | median s/step | [min, max] | / bn_relu |")
    print("|---|---|---:|---|---:|")
    images = tf.random.normal([args.batch, args.size, args.size, 3], seed=1)
    labels = tf.random.uniform([args.batch], 0, 1000, dtype=tf.int32, seed=2)
    for xla in (False,) if args.tiny else (False, True):
        base = None
        for norm in NORMS:
            tf_keras.utils.set_random_seed(0)
            with kernels.use(args.path):
                model = preact_resnet50(norm, args.size)
            optimizer = tf_keras.optimizers.SGD(0.01)
            if args.policy == "mixed_float16":
                optimizer = tf_keras.mixed_precision.LossScaleOptimizer(optimizer)

            @tf.function(jit_compile=xla)
            def step(images, labels, model=model, optimizer=optimizer):
                with tf.GradientTape() as tape:
                    logits = tf.cast(model(images, training=True), tf.float32)
                    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
                    scaled = optimizer.get_scaled_loss(loss) if args.policy == "mixed_float16" else loss
                gradients = tape.gradient(scaled, model.trainable_variables)
                if args.policy == "mixed_float16":
                    gradients = optimizer.get_unscaled_gradients(gradients)
                optimizer.apply_gradients(zip(gradients, model.trainable_variables))
                return loss

            med, low, high = median_ms(step, (images, labels), args.iters, args.warmup)
            base = base or med
            print(f"| {norm} | {'on' if xla else 'off'} | {med / 1e3:.3f} | [{low / 1e3:.3f}, {high / 1e3:.3f}] "
                  f"| {med / base:.2f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default="mixed_float16", help="one of " + ", ".join(POLICIES))
    parser.add_argument("--path", default="portable", help="kernel path of the EvoNorms: " + ", ".join(kernels.PATHS))
    parser.add_argument("--shapes", default=";".join(LAYER_SHAPES), help="';'-separated NHWC layer shapes")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--tiny", action="store_true",
                        help="a smoke test: small shapes, a 32² step without XLA, 1 timed call")
    args = parser.parse_args()
    if args.policy not in POLICIES:
        print(f"error: --policy must be one of {', '.join(POLICIES)}; received {args.policy!r}", file=sys.stderr)
        sys.exit(2)
    if args.path not in kernels.PATHS:
        print(f"error: --path must be one of {', '.join(kernels.PATHS)}; received {args.path!r}", file=sys.stderr)
        sys.exit(2)
    if args.tiny:
        args.shapes, args.batch, args.size, args.iters, args.warmup = "2,8,8,64", 2, 32, 1, 0
    tf_keras.mixed_precision.set_global_policy(args.policy)
    print(f"# device: {device_name()}; TensorFlow {tf.__version__}; policy {args.policy}")
    layer_table(args, tf.dtypes.as_dtype(tf_keras.mixed_precision.global_policy().compute_dtype))
    step_table(args)


if __name__ == "__main__":
    main()

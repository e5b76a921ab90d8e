"""Main job: train a small convnet on the bundled digits once per norm-act, at two batch sizes.

    python -m evonorm_tf.demo                               # defaults, a few minutes on 2 CPU cores
    python -m evonorm_tf.demo --norm-acts evonorm_s0,bn_relu --batch-sizes 2 --seeds 0,1,2
    python -m evonorm_tf.demo --quick                       # seconds: 1 epoch on a subset

For every (norm-act, batch size, seed) it trains the model from
`MODEL_BUILDERS[--model]` on scikit-learn's 8x8 digits upsampled to
`--image-size` (no download), then prints a table of test accuracy and mean
training-step time and writes to `--output-dir`:

* `demo.png`: test accuracy per norm-act at each batch size, and the training
  curves (training loss and test accuracy against images seen);
* `results.json`: every run's numbers and the flags.

Every run sees the same number of images (`--epochs` passes over the training
set) with Adam at the same `--learning-rate`, decayed by a cosine, at every
batch size (plain SGD with the learning rate scaled linearly by the batch size
needs a different rate per norm-act at a 32x batch ratio; Adam does not). At batch size 2 BatchNorm's batch statistics (and so
its moving averages, used at test time) come from two images: the comparison
is meant to show that the batch-independent S-series and GN/FRN do not care.

Models are built with the tf_keras front-end (`evonorm_tf.tf_keras`), the one
Model Garden uses. A model builder is `builder(input_shape, num_classes,
norm_act, groups)` with `norm_act` a name of `NORM_ACT_NAMES`; `--model` picks
one from `MODEL_BUILDERS` (`convnet`, the default, or the pre-activation
`resnet20` of `evonorm_tf.modeling`, slower).
"""

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np
import tensorflow as tf
import tf_keras

from evonorm_tf import command_line, console_logging, factory, registry
from evonorm_tf import tf_keras as evonorm
from evonorm_tf.data import digits
from evonorm_tf.demo_report import format_table, plot, summarize

PROG = "python -m evonorm_tf.demo"
DEFAULT_NORM_ACTS = ("bn_relu", "gn_relu", "frn_tlu", "evonorm_b0", "evonorm_s0")


# -- models -------------------------------------------------------------------


def build_convnet(input_shape, num_classes, norm_act, groups=8, widths=(32, 64)):
    """A small all-convolutional classifier with a norm-act after every conv.

    Per stage: conv3x3 → norm-act → conv3x3 → norm-act, the first conv of each
    stage after the first with stride 2; then the feature map is flattened
    into a dense layer (on 16x16 digits, global average pooling loses where
    strokes are and trains far slower). Convolutions have no bias (the
    norm-act's β replaces it).

    Args:
      input_shape: `(height, width, channels)`.
      num_classes: number of logits.
      norm_act: a name of `evonorm_tf.NORM_ACT_NAMES`; every layer comes from
        `evonorm_tf.tf_keras.get_norm_act`.
      groups: groups of GN and the S-series (must divide every width).
      widths: channels of each stage.
    """
    layer_kwargs = {}
    if "groups" in registry.accepted_arguments(norm_act, "tf_keras"):
        layer_kwargs["groups"] = groups
    inputs = tf_keras.Input(input_shape)
    x = inputs
    for stage, width in enumerate(widths):
        for conv_index in range(2):
            strides = 2 if stage > 0 and conv_index == 0 else 1
            x = tf_keras.layers.Conv2D(width, 3, strides=strides, padding="same", use_bias=False)(x)
            x = evonorm.get_norm_act(norm_act, **layer_kwargs)(x)
    x = tf_keras.layers.Flatten()(x)
    outputs = tf_keras.layers.Dense(num_classes)(x)
    return tf_keras.Model(inputs, outputs, name="convnet")


def build_resnet20(input_shape, num_classes, norm_act, groups=8):
    """The 3-stage pre-activation ResNet-20 of `evonorm_tf.modeling` (group rule for `groups`)."""
    # Imported on use: evonorm_tf.modeling imports Model Garden, which takes seconds.
    from evonorm_tf.modeling import build_resnet

    return build_resnet(20, norm_act, input_shape=input_shape, num_classes=num_classes,
                        norm_act_options={"groups": groups})


# Every builder: builder(input_shape, num_classes, norm_act, groups) -> tf_keras.Model.
MODEL_BUILDERS = {"convnet": build_convnet, "resnet20": build_resnet20}


def build_nf_resnet20(input_shape, num_classes, norm_act=None, groups=None):
    """The normalizer-free ResNet-20 (scaled WS convs, no activation normalization)."""
    from evonorm_tf.modeling import build_nf_resnet

    return build_nf_resnet(20, input_shape=input_shape, num_classes=num_classes)


def build_shadow_bn(input_shape, num_classes, norm_act=None, groups=None):
    """A multi-path convnet (1x1, 3x3, 5x5 paths) normalized by Shadow BatchNorm."""
    from evonorm_tf.modeling.layers import build_shadow_bn_convnet

    return build_shadow_bn_convnet(input_shape, num_classes, widths=(32, 64), kernel_sizes=(1, 3, 5))


# The neighbouring systems are whole models, not norm-acts: naming one in
# `--norm-acts` trains its own model in place of `--model`.
SYSTEM_BUILDERS = {"nf": build_nf_resnet20, "shadow_bn": build_shadow_bn}


# -- one training run ---------------------------------------------------------


@dataclasses.dataclass
class RunResult:
    """The outcome of one (model, norm-act, batch size, seed) run."""

    norm_act: str
    batch_size: int
    seed: int
    test_accuracy: float
    mean_step_ms: float
    images_seen: list  # x-axis of the curves
    train_loss: list  # mean training loss since the previous point
    curve_accuracy: list  # test accuracy at each point


class Progress:
    """One status line per run: rewritten in place on a terminal, else printed at quarters."""

    def __init__(self, label, total, stream=None):
        self.label, self.total = label, total
        self.stream = stream or sys.stdout
        self.interactive = self.stream.isatty()
        self.next_quarter = 1

    def update(self, step, message=""):
        if self.interactive:
            width = 24
            filled = int(width * step / self.total)
            bar = "#" * filled + "." * (width - filled)
            self.stream.write(f"\r{self.label} [{bar}] {step}/{self.total} {message}  ")
            self.stream.flush()
        elif step >= self.total * self.next_quarter / 4:
            while step >= self.total * self.next_quarter / 4:
                self.next_quarter += 1
            print(f"{self.label} {step}/{self.total} {message}", file=self.stream, flush=True)

    def finish(self, message):
        if self.interactive:
            self.stream.write("\r\033[K")
        print(f"{self.label} done: {message}", file=self.stream, flush=True)


def train_once(split, args, norm_act, batch_size, seed, label):
    """Trains one model and returns its `RunResult`."""
    tf_keras.utils.set_random_seed(seed)
    builder = SYSTEM_BUILDERS.get(norm_act, MODEL_BUILDERS[args.model])
    model = builder(split.train_images.shape[1:], digits.NUM_CLASSES, norm_act, groups=args.groups)
    steps_per_epoch = digits.steps_per_epoch(split, batch_size)
    total_steps = steps_per_epoch * args.epochs
    learning_rate = tf_keras.optimizers.schedules.CosineDecay(args.learning_rate, total_steps)
    optimizer = tf_keras.optimizers.Adam(learning_rate)
    loss_fn = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(images, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    @tf.function
    def predict(images):
        return tf.argmax(model(images, training=False), axis=-1, output_type=tf.int32)

    def test_accuracy():
        return float(np.mean(predict(split.test_images).numpy() == split.test_labels))

    evaluate_at = set(np.linspace(0, total_steps, args.curve_points + 1, dtype=int)[1:].tolist())
    result = RunResult(norm_act, batch_size, seed, 0.0, 0.0, [], [], [])
    progress = Progress(label, total_steps)
    step_seconds, losses, step = [], [], 0
    for epoch in range(args.epochs):
        for images, labels in digits.train_batches(split, batch_size, seed, epoch):
            start = time.perf_counter()
            loss = float(train_step(images, labels))  # float() waits for the step
            step_seconds.append(time.perf_counter() - start)
            losses.append(loss)
            step += 1
            if step in evaluate_at:
                result.images_seen.append(step * batch_size)
                result.train_loss.append(float(np.mean(losses)))
                result.curve_accuracy.append(test_accuracy())
                losses = []
                progress.update(step, f"loss {result.train_loss[-1]:.3f} "
                                      f"test acc {result.curve_accuracy[-1]:.3f}")
    result.test_accuracy = result.curve_accuracy[-1]
    # The first step traces the function; leave it out of the mean.
    timed = step_seconds[1:] or step_seconds
    result.mean_step_ms = 1000.0 * float(np.mean(timed))
    progress.finish(f"test accuracy {result.test_accuracy:.3f}, {result.mean_step_ms:.1f} ms/step")
    return result


# -- driver -------------------------------------------------------------------


def _names(text):
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names
               if name not in registry.names() and name not in SYSTEM_BUILDERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated names from {', '.join(factory.NORM_ACT_NAMES)} "
            f"or the neighbouring systems {', '.join(SYSTEM_BUILDERS)}, "
            f"received {text!r}"
        )
    return names


def _ints(text, minimum=None):
    try:
        values = [int(value) for value in text.split(",") if value.strip()]
    except ValueError:
        values = []
    if not values or (minimum is not None and min(values) < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise argparse.ArgumentTypeError(f"expected comma-separated integers{bound}, received {text!r}")
    return values


def _positive_ints(text):
    return _ints(text, minimum=1)


def parse_args(argv=None):
    parser = command_line.ArgumentParser(
        prog=PROG, description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--norm-acts", type=_names, default=list(DEFAULT_NORM_ACTS),
                        help=f"comma-separated names from {', '.join(factory.NORM_ACT_NAMES)}, "
                        f"or {', '.join(SYSTEM_BUILDERS)} (a normalizer-free ResNet-20, a Shadow-BN "
                        "multi-path convnet)")
    parser.add_argument("--batch-sizes", type=_positive_ints, default=[64, 2],
                        help="comma-separated batch sizes")
    parser.add_argument("--seeds", type=_ints, default=[0],
                        help="comma-separated seeds; several give mean ± std")
    parser.add_argument("--model", choices=sorted(MODEL_BUILDERS), default="convnet")
    parser.add_argument("--epochs", type=int, default=3, help="passes over the training set")
    parser.add_argument("--learning-rate", type=float, default=2e-3,
                        help="initial Adam learning rate (cosine decay to 0), every batch size")
    parser.add_argument("--groups", type=int, default=8, help="groups of GN and the S-series")
    parser.add_argument("--image-size", type=int, default=16, help="digits are upsampled from 8x8")
    parser.add_argument("--train-subset", type=int, default=None,
                        help="train on only this many of the 1,437 training images")
    parser.add_argument("--curve-points", type=int, default=10,
                        help="test-accuracy evaluations per run (training curves)")
    parser.add_argument("--output-dir", default=os.path.join("runs", "demo"))
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 1 epoch on 400 training images, 4 curve points")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = 1
        args.train_subset = args.train_subset or 400
        args.curve_points = min(args.curve_points, 4)
    for flag in ("epochs", "groups", "curve_points", "train_subset"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, received {value}")
    if args.image_size < 8:
        parser.error(f"--image-size must be >= 8 (the digits are 8x8), received {args.image_size}")
    if not args.learning_rate > 0:
        parser.error(f"--learning-rate must be > 0, received {args.learning_rate}")
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        parser.error(f"--output-dir must be a folder, received {args.output_dir!r} (an existing file)")
    return args


def main(argv=None):
    """Runs every (norm-act, batch size, seed); prints the table; writes the PNG and JSON.

    Returns the list of `RunResult`s.
    """
    args = parse_args(argv)
    started = time.perf_counter()
    split = digits.load_digits_split(args.image_size, train_subset=args.train_subset)
    print(f"digits: {len(split.train_labels)} train / {len(split.test_labels)} test images, "
          f"{args.image_size}x{args.image_size}; model {args.model}; {args.epochs} epoch(s)", flush=True)
    plan = [(name, batch_size, seed)
            for batch_size in args.batch_sizes for name in args.norm_acts for seed in args.seeds]
    results = []
    for index, (name, batch_size, seed) in enumerate(plan, start=1):
        label = f"[{index}/{len(plan)}] {name:<10} bs={batch_size:<3} seed={seed}"
        results.append(train_once(split, args, name, batch_size, seed, label))

    table = format_table(results, args.norm_acts, args.batch_sizes)
    print()
    print(table)
    os.makedirs(args.output_dir, exist_ok=True)
    png_path = os.path.join(args.output_dir, "demo.png")
    title = (f"{args.model} on digits {args.image_size}x{args.image_size}, {args.epochs} epoch(s), "
             f"{len(args.seeds)} seed(s): test accuracy (dotted: chance)")
    plot(results, args.norm_acts, args.batch_sizes, png_path, title)
    with open(os.path.join(args.output_dir, "results.json"), "w", encoding="utf-8") as handle:
        json.dump({"flags": vars(args), "runs": [dataclasses.asdict(r) for r in results]},
                  handle, indent=1)
    minutes = (time.perf_counter() - started) / 60
    print(f"\nwrote {png_path} and results.json ({minutes:.1f} min)")
    return results


if __name__ == "__main__":
    console_logging.quiet_native_logs()
    command_line.run(main, prog=PROG)

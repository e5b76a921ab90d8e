"""MixPath's Shadow BN claim on the digits: summed-path features and supernet ranking.

MixPath (Chu, Zhou, Zhang, Li, arXiv:2001.05887) observes that in a
multi-path supernet the sum of m active paths has statistics that depend on
m (its features are close to a multiple of one path's), so one BatchNorm
shared by every m sees a mixture; Shadow BN keeps one BN per m, which
stabilises supernet training and improves how well the supernet ranks the
child networks. This module measures both on the bundled digits:

1. **Summed vs single-path features.** For every block and every ordered
   pair of paths (i, j), on test images: the cosine similarity between the
   (channel-centred) pre-normalization sum `f_i + f_j` and the single path
   `f_i`, and the variance ratio `Var(f_i + f_j) / Var(f_i)` (per channel
   over N, H, W, averaged over channels). Two independent paths of equal
   variance give 0.707 and 2; identical paths give 1 and 4. Measured at
   initialization and after supernet training.
2. **Ranking.** Two supernets (Shadow BN / one shared BN) are trained with
   MixPath's sampler (m uniform in 1..M, then m of n paths, per block and
   step). K children (a fixed mask per block, drawn by the same sampler)
   are evaluated with the supernet's weights after BN recalibration, and
   trained stand-alone from one common initialization; Kendall τ (and its
   two-sided p-value) between the two accuracy lists, per seed, and between
   the two lists of test cross-entropy, which separates children whose
   accuracies differ by fewer test images than the test set can resolve.

The supernet: a 3×3 Conv-BN-ReLU6 stem and MixPath inverted-bottleneck
blocks (`MultiPathBlock(path_form="mixpath")`, depthwise kernels 3, 5, 7, 9,
M = 2 of n = 4, Shadow BN after the linear projection), global pooling and a
dense classifier.

    python -m evonorm_tf.analysis.mixpath_supernet --seeds 0 1 2 \\
        --output docs/results/mixpath_supernet_digits.json --plot docs/mixpath_supernet_digits.png
"""

import argparse
import itertools
import sys
import time

import numpy as np
import tensorflow as tf
import tf_keras
from scipy import stats

from evonorm_tf.analysis.mixpath_report import combine, write_report
from evonorm_tf.data import digits
from evonorm_tf.modeling.layers.bn_recalibration import recalibrate_batch_norm
from evonorm_tf.modeling.layers.multipath import MultiPathBlock, sample_path_mask

__all__ = ["MixPathSupernet", "feature_similarity", "main", "run_seed"]

KERNEL_SIZES = (3, 5, 7, 9)
MAX_ACTIVE = 2
BLOCKS = ((16, 1), (24, 2), (32, 2))  # (filters, strides)


class MixPathSupernet(tf_keras.Model):
    """Stem, MixPath blocks, global pooling, logits; `call(images, masks)` with masks `[blocks, n]`.

    Args:
      num_classes: number of logits.
      shadow_bn: Shadow BN (True) or one BN shared by every m (False) in every block.
      blocks: `(filters, strides)` per block.
      kernel_sizes: the n depthwise kernel sizes of every block.
      max_active: M.
      stem_width: channels of the stem.
    """

    def __init__(self, num_classes=10, shadow_bn=True, blocks=BLOCKS, kernel_sizes=KERNEL_SIZES,
                 max_active=MAX_ACTIVE, stem_width=16, **kwargs):
        super().__init__(**kwargs)
        self.num_paths, self.max_active = len(kernel_sizes), max_active
        self.stem = tf_keras.layers.Conv2D(stem_width, 3, padding="same", use_bias=False, name="stem")
        self.stem_norm = tf_keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="stem_norm")
        self.mixed = [
            MultiPathBlock(filters, kernel_sizes, max_active=max_active, path_form="mixpath", strides=strides,
                           shadow_bn=shadow_bn, activation=None, name=f"block{index + 1}")
            for index, (filters, strides) in enumerate(blocks)
        ]
        self.pool = tf_keras.layers.GlobalAveragePooling2D()
        self.logits = tf_keras.layers.Dense(num_classes, name="logits")

    def block_inputs(self, images, masks, training=False):
        """The input of every block, then the last block's output (a list of `blocks + 1` tensors)."""
        x = tf.nn.relu6(self.stem_norm(self.stem(images), training=training))
        inputs = [x]
        for index, block in enumerate(self.mixed):
            x = block(x, masks[index], training=training)
            inputs.append(x)
        return inputs

    def call(self, images, masks, training=None):
        return self.logits(self.pool(self.block_inputs(images, masks, training)[-1]))

    def sample_masks(self, seed=None):
        """One mask per block, by MixPath's sampler; `seed` (an int pair) makes it reproducible."""
        masks = [sample_path_mask(self.num_paths, self.max_active,
                                  None if seed is None else [seed[0], seed[1] * 100 + index])
                 for index in range(len(self.mixed))]
        return tf.stack(masks)


def _centred(x):
    x = np.asarray(x, np.float64)
    return x - x.mean(axis=(0, 1, 2), keepdims=True)


def feature_similarity(model, images, masks):
    """Per block: mean cosine similarity and variance ratio of `f_i + f_j` vs `f_i` over ordered pairs.

    Block inputs come from an inference pass of the child `masks`.
    """
    inputs = model.block_inputs(images, masks, training=False)[:-1]
    cosines, ratios = [], []
    for block, x in zip(model.mixed, inputs):
        features = [_centred(f) for f in block.path_features(x, training=False)]
        block_cosines, block_ratios = [], []
        for i, j in itertools.permutations(range(len(features)), 2):
            summed, single = features[i] + features[j], features[i]
            flat_sum, flat_single = summed.reshape(len(summed), -1), single.reshape(len(single), -1)
            cosine = np.sum(flat_sum * flat_single, 1) / (
                np.linalg.norm(flat_sum, axis=1) * np.linalg.norm(flat_single, axis=1) + 1e-12)
            block_cosines.append(cosine.mean())
            block_ratios.append(np.mean(summed.var(axis=(0, 1, 2))) / np.mean(single.var(axis=(0, 1, 2))))
        cosines.append(float(np.mean(block_cosines)))
        ratios.append(float(np.mean(block_ratios)))
    return {"cosine": cosines, "variance_ratio": ratios}


class _Trainer:
    """SGD with momentum on one model; one traced step serves every mask."""

    def __init__(self, model, learning_rate):
        self.model = model
        self.optimizer = tf_keras.optimizers.SGD(learning_rate, momentum=0.9)
        self.loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.step = tf.function(self._step, reduce_retracing=True)
        self.sampled_step = tf.function(lambda images, labels: self._step(images, labels, model.sample_masks()))

    def _step(self, images, labels, masks):
        with tf.GradientTape() as tape:
            loss = self.loss(labels, self.model(images, masks, training=True))
        variables = self.model.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    def reset(self, weights):
        self.model.set_weights(weights)
        for variable in self.optimizer.variables():
            variable.assign(tf.zeros_like(variable))

    def train(self, split, epochs, batch_size, seed, masks=None):
        """Trains; `masks` None samples fresh masks every step (supernet training)."""
        for epoch in range(epochs):
            for images, labels in digits.train_batches(split, batch_size, seed, epoch):
                if masks is None:
                    self.sampled_step(tf.constant(images), tf.constant(labels))
                else:
                    self.step(tf.constant(images), tf.constant(labels), masks)


def _evaluate(model, split, masks):
    """Test accuracy and mean test cross-entropy of the child `masks`."""
    logits = model(tf.constant(split.test_images), masks, training=False)
    loss = tf_keras.losses.sparse_categorical_crossentropy(split.test_labels, logits, from_logits=True)
    return float(np.mean(np.argmax(logits.numpy(), -1) == split.test_labels)), float(tf.reduce_mean(loss))


def _kendall(first, second):
    """Kendall τ-b and its two-sided p-value; None for both where τ is undefined (a constant list)."""
    result = stats.kendalltau(first, second)
    if np.isnan(result.statistic):
        return None, None
    return float(result.statistic), float(result.pvalue)


def _children(model, count, seed):
    children, seen, index = [], set(), 0
    while len(children) < count:
        masks = model.sample_masks(seed=(seed, index + 1))
        index += 1
        key = masks.numpy().tobytes()
        if key not in seen:
            seen.add(key)
            children.append(masks)
    return children


def run_seed(seed, split, children=8, supernet_epochs=12, child_epochs=5, batch_size=64,
             learning_rate=0.05, recalibration_batches=8, log=print):
    """One seed of the experiment; returns a JSON-ready dict."""
    started = time.time()

    def build(shadow_bn):
        tf_keras.utils.set_random_seed(seed)
        model = MixPathSupernet(digits.NUM_CLASSES, shadow_bn=shadow_bn)
        model(tf.constant(split.test_images[:2]), model.sample_masks(seed=(seed, 0)))
        return model

    reference = build(True)
    child_masks = _children(reference, children, seed)
    analysis_images = tf.constant(split.test_images[:128])
    result = {"seed": seed, "children": [m.numpy().astype(int).tolist() for m in child_masks],
              "similarity_at_init": feature_similarity(reference, analysis_images, child_masks[0])}
    recalibration = [tf.constant(images) for images, _ in
                     itertools.islice(digits.train_batches(split, batch_size, seed, 10_000), recalibration_batches)]
    for name, shadow_bn in (("shadow_bn", True), ("shared_bn", False)):
        model = build(shadow_bn)
        trainer = _Trainer(model, learning_rate)
        trainer.train(split, supernet_epochs, batch_size, seed)
        plain, recalibrated, recalibrated_loss = [], [], []
        for masks in child_masks:
            plain.append(_evaluate(model, split, masks)[0])
            recalibrate_batch_norm(model, recalibration, lambda x, masks=masks: model(x, masks, training=True))
            accuracy, loss = _evaluate(model, split, masks)
            recalibrated.append(accuracy)
            recalibrated_loss.append(loss)
        result[name] = {"similarity_after_training": feature_similarity(model, analysis_images, child_masks[0]),
                        "supernet_accuracy": plain, "supernet_accuracy_recalibrated": recalibrated,
                        "supernet_loss_recalibrated": recalibrated_loss}
        log(f"seed {seed} {name}: supernet accuracy of the children {np.mean(recalibrated):.3f} "
            f"(recalibrated), {np.mean(plain):.3f} (not) [{time.time() - started:.0f} s]")
    standalone_model = build(True)
    trainer = _Trainer(standalone_model, learning_rate)
    initial = standalone_model.get_weights()
    standalone, standalone_loss = [], []
    for masks in child_masks:
        trainer.reset(initial)
        trainer.train(split, child_epochs, batch_size, seed, masks)
        accuracy, loss = _evaluate(standalone_model, split, masks)
        standalone.append(accuracy)
        standalone_loss.append(loss)
    result["standalone_accuracy"], result["standalone_loss"] = standalone, standalone_loss
    for name in ("shadow_bn", "shared_bn"):
        for key, reference, label in (
                ("supernet_accuracy_recalibrated", standalone, "kendall_tau"),
                ("supernet_accuracy", standalone, "kendall_tau_without_recalibration"),
                ("supernet_loss_recalibrated", standalone_loss, "kendall_tau_by_loss")):
            result[name][label], result[name][f"{label}_pvalue"] = _kendall(result[name][key], reference)
    result["seconds"] = round(time.time() - started, 1)
    log(f"seed {seed}: Kendall tau shadow BN {result['shadow_bn']['kendall_tau']}, "
        f"shared BN {result['shared_bn']['kendall_tau']}; by test loss {result['shadow_bn']['kendall_tau_by_loss']}, "
        f"{result['shared_bn']['kendall_tau_by_loss']}; stand-alone accuracies {np.round(standalone, 3).tolist()}")
    return result


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, received {text!r}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--children", type=_positive, default=8, help="K sampled children per seed")
    parser.add_argument("--supernet-epochs", type=_positive, default=12)
    parser.add_argument("--child-epochs", type=_positive, default=5, help="stand-alone training epochs")
    parser.add_argument("--image-size", type=int, default=12)
    parser.add_argument("--train-subset", type=_positive, default=None, help="use only this many training images")
    parser.add_argument("--output", required=True, help="JSON file for every figure")
    parser.add_argument("--plot", help="PNG file for the plot")
    parser.add_argument("--combine", nargs="+", metavar="JSON",
                        help="instead of running, merge the runs of these output files (e.g. one per seed, "
                             "run in parallel) into --output and --plot")
    args = parser.parse_args(argv)
    if args.combine:
        try:
            return combine(args.combine, args.output, args.plot)
        except ValueError as error:
            parser.error(str(error))
    if args.image_size < 8:
        parser.error(f"--image-size must be >= 8, received {args.image_size}")
    if args.children < 2:
        parser.error(f"--children must be >= 2 for a Kendall tau, received {args.children}")
    split = digits.load_digits_split(image_size=args.image_size, train_subset=args.train_subset)
    settings = {key: getattr(args, key) for key in ("children", "supernet_epochs", "child_epochs", "image_size",
                                                    "train_subset")}
    settings.update(kernel_sizes=list(KERNEL_SIZES), max_active=MAX_ACTIVE, blocks=[list(b) for b in BLOCKS])
    results = [run_seed(seed, split, args.children, args.supernet_epochs, args.child_epochs,
                        log=lambda text: print(text, flush=True))
               for seed in args.seeds]
    write_report(settings, results, args.output, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())

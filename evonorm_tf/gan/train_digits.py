"""Class-conditional BigGAN on scikit-learn's digits (32x32 grey), on CPU.

    python -m evonorm_tf.gan.train_digits --model_dir /tmp/digits_gan \\
        --norm_act evonorm_b0 --steps 300 --eval_every 100

Writes to `model_dir`: checkpoints (training resumes from the newest), TensorBoard
summaries (losses, FID, IS) and `samples_<step>.png` grids (one row per class,
EMA generator). FID and IS use `evaluation.digits_feature_network`, trained at
start-up on the digits' training split, and are named after it
(`fid_digits_classifier`, `inception_score_digits_classifier`); FID compares
EMA-generator samples with the held-out test digits. These are monitoring
numbers, not comparable with published FIDs.

Before each evaluation the EMA generator's batch statistics (BN, EvoNorm-B*)
are recomputed from `--standing_samples` of its own samples
(`standing_statistics`; 0 keeps the averaged moving statistics).
`--truncation_curve 1.0,0.5` adds, at the last evaluation, FID/IS with
latents truncated at each threshold (`truncation`);
`--orthogonal_regularization 1e-4` adds BigGAN's orthogonal regularisation
of G's kernels.
"""

import argparse
import dataclasses
import os
import sys

import numpy as np
import tensorflow as tf

from evonorm_tf import command_line
from evonorm_tf.data import digits
from evonorm_tf.factory import NORM_ACT_NAMES
from evonorm_tf.gan import evaluation
from evonorm_tf.gan.discriminator import Discriminator
from evonorm_tf.gan.generator import Generator
from evonorm_tf.gan.standing_statistics import (accumulate_standing_statistics,
                                                snapshot_statistics)
from evonorm_tf.gan.training import GANTrainer
from evonorm_tf.gan.truncation import check_truncation, sample_latents, truncation_curve

IMAGE_SIZE = 32


@dataclasses.dataclass
class DigitsGANConfig:
    model_dir: str
    norm_act: str = "evonorm_b0"
    groups: int = 8  # S-series / GN groups (ch 16 · 4 = 64 channels)
    ch: int = 16
    z_dim: int = 64
    shared_dim: int = 32
    batch_size: int = 32
    discriminator_steps: int = 2
    steps: int = 300
    eval_every: int = 100
    eval_samples: int = 360
    ema_decay: float = 0.99  # BigGAN: 0.9999 over 100k+ steps; a demo runs hundreds
    ema_start_step: int = 50
    standing_samples: int = 2048  # 0: evaluate with the EMA of the moving statistics
    truncation_curve: str = ""  # comma-separated thresholds, evaluated at the last step
    orthogonal_regularization: float = 0.0  # BigGAN: 1e-4
    jit_compile: bool = False
    seed: int = 0


def build_trainer(config):
    norm_act_kwargs = {"groups": config.groups} if config.norm_act.startswith(("evonorm_s", "gn_")) else {}

    def make_generator():
        return Generator(resolution=IMAGE_SIZE, ch=config.ch, z_dim=config.z_dim,
                         shared_dim=config.shared_dim, num_classes=digits.NUM_CLASSES,
                         norm_act=config.norm_act, norm_act_kwargs=norm_act_kwargs,
                         image_channels=1)

    trainer = GANTrainer(
        make_generator(), Discriminator(resolution=IMAGE_SIZE, ch=config.ch,
                                        num_classes=digits.NUM_CLASSES),
        make_generator(), discriminator_steps=config.discriminator_steps,
        ema_decay=config.ema_decay, ema_start_step=config.ema_start_step,
        orthogonal_regularization=config.orthogonal_regularization, seed=config.seed)
    trainer.build((IMAGE_SIZE, IMAGE_SIZE, 1))
    return trainer


def sample(generator, labels, seed, truncation=None):
    if truncation is None:
        z = tf.random.stateless_normal((len(labels), generator.z_dim), [seed, 0])
    else:
        z = sample_latents(np.random.default_rng([seed, 0]), len(labels), generator.z_dim,
                           truncation)
    return generator((z, tf.constant(labels, tf.int32)), training=False).numpy()


def sample_grid(generator, per_class=8, seed=0):
    """uint8 PNG-ready grid `[10·32, per_class·32, 1]`: row k shows class k."""
    labels = np.repeat(np.arange(digits.NUM_CLASSES), per_class)
    images = sample(generator, labels, seed)
    images = images.reshape(digits.NUM_CLASSES, per_class, IMAGE_SIZE, IMAGE_SIZE, 1)
    grid = images.transpose(0, 2, 1, 3, 4).reshape(
        digits.NUM_CLASSES * IMAGE_SIZE, per_class * IMAGE_SIZE, 1)
    return np.clip((grid + 1.0) * 127.5, 0, 255).astype(np.uint8)


def evaluate(generator, feature_network, real_statistics, count, seed, truncation=None,
             standing_samples=0, batch_size=32):
    """FID and IS of `count` samples (labels 0..9 in turn), named after the feature network.

    With `standing_samples` > 0 the generator's batch statistics are first
    recomputed from that many of its own samples (same truncation).
    """
    if standing_samples:
        accumulate_standing_statistics(generator, standing_samples, batch_size,
                                       digits.NUM_CLASSES, seed=seed, truncation=truncation)
    labels = np.arange(count) % digits.NUM_CLASSES
    images = sample(generator, labels, seed, truncation)
    features, logits = evaluation.extract(feature_network, images, batch_size=128)
    fid = evaluation.frechet_distance(*real_statistics, *evaluation.gaussian_statistics(features))
    inception_score, _ = evaluation.inception_score(logits, splits=1)
    names = evaluation.metric_names(feature_network)
    return {names["fid"]: fid, names["inception_score"]: inception_score}


def _format(result):
    return " ".join(f"{name} {value:.2f}" for name, value in result.items())


def parse_thresholds(text):
    """`"1.0,0.5"` → `[1.0, 0.5]`; ValueError naming the text otherwise."""
    if not text.strip():
        return []
    try:
        return [check_truncation(float(part)) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"truncation_curve must be comma-separated positive numbers, "
                         f"received {text!r}") from None


def run(config, log=print):
    """Trains (resuming from `model_dir`) and returns the last evaluation dict."""
    thresholds = parse_thresholds(config.truncation_curve)
    tf.keras.utils.set_random_seed(config.seed)
    split = digits.load_digits_split(image_size=IMAGE_SIZE)
    feature_network = evaluation.digits_feature_network(image_size=IMAGE_SIZE, seed=config.seed)
    real_features, _ = evaluation.extract(feature_network, split.test_images * 2.0 - 1.0)
    real_statistics = evaluation.gaussian_statistics(real_features)
    log(f"digits feature network: test accuracy {feature_network.test_accuracy:.3f}")

    trainer = build_trainer(config)
    manager = tf.train.CheckpointManager(trainer.checkpoint(), config.model_dir, max_to_keep=2)
    if manager.latest_checkpoint:
        trainer.checkpoint().restore(manager.latest_checkpoint).assert_existing_objects_matched()
        log(f"resumed from {manager.latest_checkpoint} at step {int(trainer.step)}")
    step_fn = trainer.make_train_step(jit_compile=config.jit_compile)
    writer = tf.summary.create_file_writer(config.model_dir)
    per_step = config.batch_size * config.discriminator_steps
    images = split.train_images * 2.0 - 1.0  # [0, 1] → [-1, 1], tanh range
    rng = np.random.default_rng([config.seed, int(trainer.step)])
    result = {}
    while int(trainer.step) < config.steps:
        index = rng.choice(len(images), per_step, replace=False)
        metrics = step_fn(tf.constant(images[index]), tf.constant(split.train_labels[index]))
        step = int(trainer.step)
        with writer.as_default(step=step):
            for name, value in metrics.items():
                tf.summary.scalar(f"train/{name}", value)
        if step % config.eval_every == 0 or step == config.steps:
            restore_statistics = snapshot_statistics(trainer.ema_generator)
            scores = evaluate(trainer.ema_generator, feature_network, real_statistics,
                              config.eval_samples, config.seed,
                              standing_samples=config.standing_samples,
                              batch_size=config.batch_size)
            result = {"step": step, **scores}
            grid = sample_grid(trainer.ema_generator, seed=config.seed)
            tf.io.write_file(os.path.join(config.model_dir, f"samples_{step:06d}.png"),
                             tf.io.encode_png(grid))
            restore_statistics()  # checkpoints hold the EMA's own statistics
            with writer.as_default(step=step):
                for name, value in scores.items():
                    tf.summary.scalar(f"eval/{name}", value)
                tf.summary.image("eval/samples", grid[None].astype(np.float32) / 255.0)
            manager.save(checkpoint_number=step)
            log(f"step {step}: d_loss {float(metrics['discriminator_loss']):.3f} "
                f"g_loss {float(metrics['generator_loss']):.3f} {_format(scores)}")
            if step == config.steps and thresholds:
                result["truncation_curve"] = truncation_curve(
                    lambda t: evaluate(trainer.ema_generator, feature_network, real_statistics,
                                       config.eval_samples, config.seed, truncation=t,
                                       standing_samples=config.standing_samples,
                                       batch_size=config.batch_size), thresholds)
                for point in result["truncation_curve"]:
                    scores = {k: v for k, v in point.items() if k != "truncation"}
                    log(f"step {step} truncation {point['truncation']}: {_format(scores)}")
                restore_statistics()
    writer.flush()
    return result


PROG = "python -m evonorm_tf.gan.train_digits"
# Fields that count something: >= 1 (the rest: ema_start_step, seed >= 0).
_POSITIVE_FIELDS = ("groups", "ch", "z_dim", "shared_dim", "batch_size", "discriminator_steps", "steps",
                    "eval_every", "eval_samples")


def parse_args(argv):
    parser = command_line.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    for field in dataclasses.fields(DigitsGANConfig):
        if field.type is bool or field.type == "bool":
            parser.add_argument(f"--{field.name}", action=argparse.BooleanOptionalAction,
                                default=field.default)
        elif field.name == "model_dir":
            parser.add_argument("--model_dir", required=True)
        else:
            kind = {"int": int, "float": float, "str": str}.get(field.type, field.type)
            parser.add_argument(f"--{field.name}", type=kind, default=field.default)
    args = parser.parse_args(argv)
    for name in _POSITIVE_FIELDS:
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, received {getattr(args, name)}")
    if args.ema_start_step < 0:
        parser.error(f"--ema_start_step must be >= 0, received {args.ema_start_step}")
    if not 0.0 <= args.ema_decay < 1.0:
        parser.error(f"--ema_decay must be in [0, 1), received {args.ema_decay}")
    if args.norm_act.strip().lower() not in NORM_ACT_NAMES:
        parser.error(f"--norm_act={args.norm_act!r} is not a norm-act; valid: {', '.join(NORM_ACT_NAMES)}")
    if os.path.exists(args.model_dir) and not os.path.isdir(args.model_dir):
        parser.error(f"--model_dir={args.model_dir!r} is a file, not a folder")
    return DigitsGANConfig(**vars(args))


def main(argv=None):
    run(parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    command_line.run(main, prog=PROG)

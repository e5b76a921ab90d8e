"""Writes ImageNet-format TFRecords from an image folder with one subfolder per class.

    python tpu_scripts/prepare_imagenet.py --image_dir=/data/imagenet/train \
        --output_dir=gs://BUCKET/imagenet-2012-tfrecord --split=train --num_shards=1024
    python tpu_scripts/prepare_imagenet.py --image_dir=/data/imagenet/val \
        --output_dir=gs://BUCKET/imagenet-2012-tfrecord --split=validation --num_shards=128 \
        --labels_file=/data/imagenet/synsets.txt

Each record is a `tf.train.Example` in the layout of tensorflow/tpu's
`imagenet_to_gcs.py`, which Model Garden's classification input reads:
`image/encoded` (JPEG bytes; other formats are re-encoded), `image/format`,
`image/class/label` (int64, 1-based: 0 is left for "background", hence
`num_classes: 1001` for ImageNet), `image/class/synset` (the folder name),
`image/filename`, `image/height`, `image/width`. Files are named
`{split}-00000-of-00128`, matching the experiments' `train*` / `valid*` paths.

Labels: `--labels_file` lists one class folder name per line (label = line
number, from 1); without it the sorted subfolder names of `--image_dir` are
used. Give the validation split the same list as the training split.

`--synthetic_classes=K` first fills `--image_dir` with K folders of random
JPEG images (`--synthetic_images_per_class`, `--synthetic_size`), for smoke runs.
"""

import os
import random
import sys

from absl import flags

import numpy as np
import tensorflow as tf

# Run from a checkout without installing: make `evonorm_tf` importable.
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evonorm_tf.command_line import CommandLineError, run_absl  # noqa: E402

FLAGS = flags.FLAGS

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".gif")


def define_flags():
    flags.DEFINE_string("image_dir", None, "Folder with one subfolder of images per class.")
    flags.DEFINE_string("output_dir", None, "Where the TFRecord files go (local path or gs://).")
    flags.DEFINE_enum("split", "train", ["train", "validation"], "File name prefix of the split.")
    flags.DEFINE_integer("num_shards", 8, "Number of output files.")
    flags.DEFINE_string("labels_file", None, "One class folder name per line; label = line number from 1.")
    flags.DEFINE_integer("seed", 0, "Seed of the training-split shuffle and of synthetic images.")
    flags.DEFINE_integer("synthetic_classes", 0, "If > 0, first write this many classes of random images.")
    flags.DEFINE_integer("synthetic_images_per_class", 8, "Random images per synthetic class.")
    flags.DEFINE_integer("synthetic_size", 40, "Height and width of synthetic images.")
    flags.mark_flags_as_required(["image_dir", "output_dir"])


def write_synthetic_image_folder(image_dir, classes, images_per_class, size, seed=0):
    """Writes `classes` folders (`class_000`, ...) of random JPEGs; returns the folder names."""
    rng = np.random.default_rng(seed)
    names = [f"class_{index:03d}" for index in range(classes)]
    for index, name in enumerate(names):
        folder = os.path.join(image_dir, name)
        tf.io.gfile.makedirs(folder)
        for number in range(images_per_class):
            # a per-class mean colour makes the classes learnable
            base = rng.integers(0, 256, size=3)
            pixels = np.clip(base + rng.normal(0, 40, size=(size, size, 3)), 0, 255).astype(np.uint8)
            if index % 2:
                pixels[:, : size // 2] = 255 - pixels[:, : size // 2]
            jpeg = tf.io.encode_jpeg(pixels).numpy()
            with tf.io.gfile.GFile(os.path.join(folder, f"{name}_{number:04d}.jpg"), "wb") as handle:
                handle.write(jpeg)
    return names


def class_names(image_dir, labels_file=None):
    """The class folder names in label order (label = position + 1)."""
    if labels_file:
        with tf.io.gfile.GFile(labels_file) as handle:
            names = [line.strip() for line in handle if line.strip()]
    else:
        names = sorted(
            entry.rstrip("/") for entry in tf.io.gfile.listdir(image_dir)
            if tf.io.gfile.isdir(os.path.join(image_dir, entry))
        )
    if not names:
        raise ValueError(f"no class folders found in image_dir={image_dir!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate class names in labels_file={labels_file!r}")
    return names


def list_examples(image_dir, names):
    """`(path, label, synset)` for every image, labels 1..len(names)."""
    examples = []
    for label, name in enumerate(names, start=1):
        folder = os.path.join(image_dir, name)
        if not tf.io.gfile.isdir(folder):
            raise ValueError(f"class folder {folder!r} (label {label}) does not exist")
        for filename in sorted(tf.io.gfile.listdir(folder)):
            if filename.lower().endswith(IMAGE_SUFFIXES):
                examples.append((os.path.join(folder, filename), label, name))
    if not examples:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under image_dir={image_dir!r}")
    return examples


def _bytes(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def make_example(path, label, synset):
    """A `tf.train.Example` of one image file; non-JPEG images are re-encoded as JPEG."""
    with tf.io.gfile.GFile(path, "rb") as handle:
        data = handle.read()
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    if not data.startswith(b"\xff\xd8"):
        data = tf.io.encode_jpeg(image, quality=95).numpy()
    height, width = int(image.shape[0]), int(image.shape[1])
    return tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": _bytes(data),
        "image/format": _bytes(b"JPEG"),
        "image/class/label": _int64(label),
        "image/class/synset": _bytes(synset.encode()),
        "image/filename": _bytes(os.path.basename(path).encode()),
        "image/height": _int64(height),
        "image/width": _int64(width),
        "image/colorspace": _bytes(b"RGB"),
        "image/channels": _int64(3),
    }))


def write_tfrecords(examples, output_dir, split, num_shards):
    """Writes `examples` round-robin into `num_shards` files; returns their paths."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, received num_shards={num_shards!r}")
    tf.io.gfile.makedirs(output_dir)
    paths = [
        os.path.join(output_dir, f"{split}-{index:05d}-of-{num_shards:05d}") for index in range(num_shards)
    ]
    writers = [tf.io.TFRecordWriter(path) for path in paths]
    try:
        for number, (path, label, synset) in enumerate(examples):
            writers[number % num_shards].write(make_example(path, label, synset).SerializeToString())
    finally:
        for writer in writers:
            writer.close()
    return paths


def prepare(image_dir, output_dir, split="train", num_shards=8, labels_file=None, seed=0):
    """Lists, shuffles (training split) and writes the images; returns the output paths."""
    examples = list_examples(image_dir, class_names(image_dir, labels_file))
    if split == "train":
        random.Random(seed).shuffle(examples)
    return write_tfrecords(examples, output_dir, split, num_shards)


def check_flags():
    """Counts must be positive; `--image_dir` and `--labels_file` must exist (unless generated)."""
    minimums = {"num_shards": 1, "synthetic_classes": 0}
    if FLAGS.synthetic_classes > 0:
        minimums.update(synthetic_images_per_class=1, synthetic_size=1)
    for name, minimum in minimums.items():
        if getattr(FLAGS, name) < minimum:
            raise CommandLineError(f"--{name} must be >= {minimum}, received {getattr(FLAGS, name)}")
    if FLAGS.synthetic_classes == 0 and not tf.io.gfile.isdir(FLAGS.image_dir):
        raise CommandLineError(
            f"--image_dir={FLAGS.image_dir!r} is not a folder; give a folder with one subfolder of "
            "images per class, or add --synthetic_classes=K to generate one"
        )
    if FLAGS.labels_file and not tf.io.gfile.exists(FLAGS.labels_file):
        raise CommandLineError(f"--labels_file={FLAGS.labels_file!r} does not exist")


def main(_):
    check_flags()
    if FLAGS.synthetic_classes > 0:
        write_synthetic_image_folder(
            FLAGS.image_dir, FLAGS.synthetic_classes, FLAGS.synthetic_images_per_class,
            FLAGS.synthetic_size, FLAGS.seed,
        )
    paths = prepare(
        FLAGS.image_dir, FLAGS.output_dir, FLAGS.split, FLAGS.num_shards, FLAGS.labels_file, FLAGS.seed
    )
    print(f"wrote {len(paths)} files: {paths[0]} ... {paths[-1]}")


if __name__ == "__main__":
    define_flags()
    run_absl(main, prog="prepare_imagenet.py")

"""Writes COCO detection TFRecords (with instance masks) for the Mask R-CNN experiments.

From an extracted COCO 2017 release (`train2017/`, `val2017/`,
`annotations/instances_{train,val}2017.json`):

    python tpu_scripts/prepare_coco.py --coco_dir=/data/coco --output_dir=gs://BUCKET/coco

writes `train-0000i-of-00256.tfrecord`, `val-0000i-of-00032.tfrecord` and a
copy of the validation json, `instances_val2017.json`, into `--output_dir`:
the `task.train_data.input_path` (`.../train*`),
`task.validation_data.input_path` (`.../val*`) and `task.annotation_file` of
`official_configs/maskrcnn_resnet50fpn_*_tpu.yaml`. Records are written by
Model Garden's COCO converter (`evonorm_tf.data.coco_tfrecords`), masks
included.

Offline, `--generate_shapes` first draws the shapes data set of
`evonorm_tf.data.shapes_coco` into `--coco_dir` in the same layout (circles,
squares, triangles; `--shapes_train_images`, `--shapes_val_images`,
`--shapes_image_size`), then converts it the same way:

    python tpu_scripts/prepare_coco.py --generate_shapes \
        --coco_dir=/tmp/evonorm_shapes_coco/raw --output_dir=/tmp/evonorm_shapes_coco

(the data of `official_configs/maskrcnn_resnetfpn_cpu_smoke.yaml`).
"""

import os
import sys

from absl import flags, logging

# Run from a checkout without installing: make `evonorm_tf` importable.
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evonorm_tf.command_line import CommandLineError, run_absl  # noqa: E402

FLAGS = flags.FLAGS

SPLITS = ("train", "val")


def define_flags():
    flags.DEFINE_string("coco_dir", None, "COCO root: {split}{year}/ images and annotations/instances_{split}{year}.json.")
    flags.DEFINE_string("output_dir", None, "Where the TFRecords and the validation json go (local path or gs://).")
    flags.DEFINE_string("year", "2017", "Release year in the folder and json names.")
    flags.DEFINE_integer("train_shards", 256, "Files of the training split.")
    flags.DEFINE_integer("val_shards", 32, "Files of the validation split.")
    flags.DEFINE_bool("instance_masks", True, "Write PNG instance masks (image/object/mask), as Mask R-CNN needs.")
    flags.DEFINE_integer("writer_processes", 0, "Worker processes of Model Garden's writer; 0 converts in-process.")
    flags.DEFINE_bool("generate_shapes", False, "First draw the generated shapes data set into --coco_dir.")
    flags.DEFINE_integer("shapes_train_images", 512, "Generated training images.")
    flags.DEFINE_integer("shapes_val_images", 64, "Generated validation images.")
    flags.DEFINE_integer("shapes_image_size", 128, "Height and width of generated images.")
    flags.DEFINE_integer("seed", 0, "Seed of the generated training images (validation uses seed + 1).")
    flags.mark_flags_as_required(["coco_dir", "output_dir"])


def split_paths(coco_dir, split, year):
    """`(image_dir, annotation_file)` of one split in the COCO release layout."""
    return (
        os.path.join(coco_dir, f"{split}{year}"),
        os.path.join(coco_dir, "annotations", f"instances_{split}{year}.json"),
    )


def generate_shapes(coco_dir, year, train_images, val_images, image_size, seed):
    """Draws the shapes data set into `coco_dir` in the COCO release layout."""
    from evonorm_tf.data import shapes_coco

    for split, count, split_seed in (("train", train_images, seed), ("val", val_images, seed + 1)):
        image_dir, annotation_file = split_paths(coco_dir, split, year)
        shapes_coco.save_shapes_coco(
            image_dir, annotation_file, num_images=count, image_size=(image_size, image_size), seed=split_seed
        )


def prepare(coco_dir, output_dir, year="2017", shards=None, include_masks=True, num_processes=0):
    """Converts both splits; copies the validation json. Returns `{split: (examples, skipped)}`."""
    import tensorflow as tf

    from evonorm_tf.data.coco_tfrecords import write_coco_tfrecords

    shards = shards or {"train": 256, "val": 32}
    tf.io.gfile.makedirs(output_dir)
    counts = {}
    for split in SPLITS:
        image_dir, annotation_file = split_paths(coco_dir, split, year)
        for path in (image_dir, annotation_file):
            if not tf.io.gfile.exists(path):
                raise FileNotFoundError(f"{split} split of coco_dir={coco_dir!r}: {path} does not exist")
        counts[split] = write_coco_tfrecords(
            image_dir, annotation_file, os.path.join(output_dir, split), shards[split],
            include_masks, num_processes,
        )
        logging.info("%s: %d examples, %d annotations skipped by the converter", split, *counts[split])
    _, val_annotation_file = split_paths(coco_dir, "val", year)
    tf.io.gfile.copy(
        val_annotation_file, os.path.join(output_dir, os.path.basename(val_annotation_file)), overwrite=True
    )
    return counts


def check_flags():
    """Counts must be positive and `--coco_dir` must exist unless it is generated."""
    import tensorflow as tf

    positive = ["train_shards", "val_shards"]
    if FLAGS.generate_shapes:
        positive += ["shapes_train_images", "shapes_val_images", "shapes_image_size"]
    for name in positive:
        if getattr(FLAGS, name) < 1:
            raise CommandLineError(f"--{name} must be >= 1, received {getattr(FLAGS, name)}")
    if FLAGS.writer_processes < 0:
        raise CommandLineError(f"--writer_processes must be >= 0, received {FLAGS.writer_processes}")
    if not FLAGS.generate_shapes and not tf.io.gfile.isdir(FLAGS.coco_dir):
        raise CommandLineError(
            f"--coco_dir={FLAGS.coco_dir!r} is not a folder; give an extracted COCO release "
            "(train2017/, val2017/, annotations/) or add --generate_shapes"
        )


def main(_):
    check_flags()
    if FLAGS.generate_shapes:
        generate_shapes(
            FLAGS.coco_dir, FLAGS.year, FLAGS.shapes_train_images, FLAGS.shapes_val_images,
            FLAGS.shapes_image_size, FLAGS.seed,
        )
    counts = prepare(
        FLAGS.coco_dir, FLAGS.output_dir, FLAGS.year,
        {"train": FLAGS.train_shards, "val": FLAGS.val_shards}, FLAGS.instance_masks, FLAGS.writer_processes,
    )
    for split, (examples, skipped) in counts.items():
        print(f"{split}: {examples} examples in {FLAGS.output_dir}/{split}-*.tfrecord "
              f"({skipped} annotations skipped by the converter)")


if __name__ == "__main__":
    define_flags()
    run_absl(main, prog="prepare_coco.py")

"""COCO "instances" data → Model Garden detection TFRecords, with Model Garden's own converter.

`write_coco_tfrecords` reads an images folder and its COCO instances json
(COCO 2017's `train2017/` + `annotations/instances_train2017.json`, or the
generated shapes of `evonorm_tf.data.shapes_coco`) and writes
`{prefix}-0000i-of-0000N.tfrecord` files through
`official.vision.data.create_coco_tf_record.create_tf_example` and
`tfrecord_lib.write_tf_record_dataset`, the functions behind Model Garden's
`create_coco_tf_record` command. With `include_masks=True` each instance
carries its PNG mask (`image/object/mask`), which Mask R-CNN's
`TfExampleDecoder(include_mask=True)` reads. Every image of the json becomes
one example, images without annotations included (as Model Garden's tool).

    examples, skipped = write_coco_tfrecords(
        "/data/coco/val2017", "/data/coco/annotations/instances_val2017.json",
        "gs://BUCKET/coco/val", num_shards=32)
"""

import collections
import json

import tensorflow as tf


def load_instances(annotation_file):
    """The COCO dictionary of `annotation_file`, checked for the keys the converter reads."""
    with tf.io.gfile.GFile(annotation_file, "r") as file:
        coco = json.load(file)
    missing = [key for key in ("images", "annotations", "categories") if key not in coco]
    if missing:
        raise ValueError(
            f"annotation_file={annotation_file!r} is not a COCO instances file: "
            f"it lacks {', '.join(missing)}"
        )
    return coco


def write_coco_tfrecords(image_dir, annotation_file, output_prefix, num_shards=1,
                         include_masks=True, num_processes=0):
    """Converts one COCO split to TFRecords.

    Args:
      image_dir: folder holding every `file_name` of the json's `images`.
      annotation_file: COCO instances json (local path or gs://).
      output_prefix: files are `{output_prefix}-0000i-of-0000N.tfrecord`.
      num_shards: number of files. Default 1.
      include_masks: write each instance's PNG mask (Mask R-CNN needs them).
        Default True.
      num_processes: worker processes of Model Garden's writer; 0 (default)
        converts in this process.

    Returns:
      `(num_examples, num_skipped)`: examples written (one per image) and
      annotations Model Garden's converter left out (boxes of zero size or
      reaching past their image; COCO 2017 has a few).

    Raises:
      ValueError: `num_shards` < 1, or a json without the COCO keys.
    """
    # Imported here: the converter module defines absl flags when imported.
    from official.vision.data import create_coco_tf_record, tfrecord_lib

    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards must be a positive integer, received num_shards={num_shards!r}")
    coco = load_instances(annotation_file)
    image_to_annotations = collections.defaultdict(list)
    for annotation in coco["annotations"]:
        image_to_annotations[annotation["image_id"]].append(annotation)
    id_to_name = {category["id"]: category["name"] for category in coco["categories"]}
    skipped = tfrecord_lib.write_tf_record_dataset(
        output_prefix,
        create_coco_tf_record.generate_annotations(
            images=coco["images"],
            image_dirs=[image_dir],
            img_to_obj_annotation=image_to_annotations,
            id_to_name_map=id_to_name,
            include_masks=include_masks,
        ),
        create_coco_tf_record.create_tf_example,
        num_shards,
        multiple_processes=num_processes,
    )
    return len(coco["images"]), skipped

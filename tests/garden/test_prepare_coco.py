"""tpu_scripts/prepare_coco.py: a COCO-layout folder → Model Garden detection TFRecords with masks.

The input is the generated shapes data set written in the COCO 2017 release
layout (`train2017/`, `val2017/`, `annotations/instances_*2017.json`); the
records are read back with Model Garden's own `TfExampleDecoder(include_mask=True)`
and compared with the json through pycocotools.
"""

import glob
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from official.vision.dataloaders import tf_example_decoder
from pycocotools import mask as mask_utils

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "tpu_scripts", "prepare_coco.py")
IMAGE_SIZE = 64
COUNTS = {"train": 6, "val": 3}


def _load_script():
    spec = importlib.util.spec_from_file_location("prepare_coco", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prepare_coco = _load_script()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    coco_dir, output_dir = str(root / "raw"), str(root / "records")
    prepare_coco.generate_shapes(coco_dir, "2017", COUNTS["train"], COUNTS["val"], IMAGE_SIZE, seed=5)
    counts = prepare_coco.prepare(coco_dir, output_dir, shards={"train": 2, "val": 1})
    return coco_dir, output_dir, counts


def _decoded(pattern, include_mask=True):
    decoder = tf_example_decoder.TfExampleDecoder(include_mask=include_mask)
    files = sorted(glob.glob(pattern))
    return [decoder.decode(record) for record in tf.data.TFRecordDataset(files)]


def test_generated_data_has_the_coco_release_layout(converted):
    coco_dir, _, _ = converted
    for split, count in COUNTS.items():
        images = sorted(os.listdir(os.path.join(coco_dir, f"{split}2017")))
        assert len(images) == count and all(name.endswith(".jpg") for name in images)
        with open(os.path.join(coco_dir, "annotations", f"instances_{split}2017.json")) as file:
            assert [image["file_name"] for image in json.load(file)["images"]] == images
    # Different seeds per split: the validation images are not copies of training images.
    first = [tf.io.read_file(os.path.join(coco_dir, f"{split}2017", "000001.jpg")).numpy() for split in COUNTS]
    assert first[0] != first[1]


def test_records_decode_with_masks_matching_the_json(converted):
    coco_dir, output_dir, counts = converted
    assert counts == {"train": (6, 0), "val": (3, 0)}
    assert sorted(os.path.basename(p) for p in glob.glob(os.path.join(output_dir, "*.tfrecord"))) == [
        "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord", "val-00000-of-00001.tfrecord"
    ]
    for split, count in COUNTS.items():
        with open(os.path.join(coco_dir, "annotations", f"instances_{split}2017.json")) as file:
            coco = json.load(file)
        examples = _decoded(os.path.join(output_dir, f"{split}-*"))
        assert len(examples) == count
        by_image = {image["id"]: [a for a in coco["annotations"] if a["image_id"] == image["id"]]
                    for image in coco["images"]}
        assert sum(len(v) for v in by_image.values()) == len(coco["annotations"]) > count
        for example in examples:
            annotations = by_image[int(example["source_id"].numpy())]
            assert example["image"].shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
            np.testing.assert_array_equal(example["groundtruth_classes"].numpy(),
                                          [a["category_id"] for a in annotations])
            masks = example["groundtruth_instance_masks"].numpy()
            assert masks.shape == (len(annotations), IMAGE_SIZE, IMAGE_SIZE)
            for mask, annotation in zip(masks, annotations):
                rle = mask_utils.merge(mask_utils.frPyObjects(annotation["segmentation"], IMAGE_SIZE, IMAGE_SIZE))
                np.testing.assert_array_equal(mask > 0.5, mask_utils.decode(rle) > 0)
                # Boxes are normalised [ymin, xmin, ymax, xmax] of the json's [x, y, w, h].
            x, y, w, h = np.array([a["bbox"] for a in annotations]).T
            np.testing.assert_allclose(example["groundtruth_boxes"].numpy(),
                                       np.stack([y, x, y + h, x + w], axis=1) / IMAGE_SIZE, atol=1e-6)


def test_validation_json_is_copied_next_to_the_records(converted):
    coco_dir, output_dir, _ = converted
    with open(os.path.join(output_dir, "instances_val2017.json")) as copied, \
            open(os.path.join(coco_dir, "annotations", "instances_val2017.json")) as original:
        assert json.load(copied) == json.load(original)


def test_missing_split_names_the_path(tmp_path):
    os.makedirs(tmp_path / "train2017")
    with pytest.raises(FileNotFoundError, match="instances_train2017.json"):
        prepare_coco.prepare(str(tmp_path), str(tmp_path / "out"))


def test_command_line_generates_and_converts(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    run = subprocess.run(
        [sys.executable, SCRIPT, "--generate_shapes", f"--coco_dir={tmp_path / 'raw'}",
         f"--output_dir={tmp_path / 'out'}", "--shapes_train_images=2", "--shapes_val_images=1",
         "--shapes_image_size=48", "--train_shards=1", "--val_shards=1", "--noinstance_masks"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "train: 2 examples" in run.stdout and "val: 1 examples" in run.stdout
    (example,) = _decoded(str(tmp_path / "out" / "val-*"), include_mask=False)
    assert example["image"].shape == (48, 48, 3)
    # --noinstance_masks: no PNG masks written.
    record = next(iter(tf.data.TFRecordDataset(str(tmp_path / "out" / "val-00000-of-00001.tfrecord"))))
    features = tf.train.Example.FromString(record.numpy()).features.feature
    assert "image/object/mask" not in features and len(features["image/object/class/label"].int64_list.value) >= 1

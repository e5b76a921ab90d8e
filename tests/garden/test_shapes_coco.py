"""The generated shapes data set: a valid COCO json, consistent boxes/masks/pixels, and
TFRecords that Model Garden's own decoder reads back with masks."""

import glob

import numpy as np
import pytest
import tensorflow as tf
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from evonorm_tf.data import shapes_coco

IMAGE_SIZE = (64, 80)


def _load(path):
    coco = COCO(path)
    return coco


@pytest.fixture(scope="module")
def shapes_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("shapes")
    return shapes_coco.write_shapes_coco(str(directory), num_images=4, image_size=IMAGE_SIZE, seed=3)


def test_json_loads_with_pycocotools(shapes_files):
    coco = _load(shapes_files.annotation_file)
    assert sorted(coco.getCatIds()) == [1, 2, 3]
    assert [coco.cats[i]["name"] for i in (1, 2, 3)] == ["circle", "square", "triangle"]
    assert sorted(coco.getImgIds()) == [1, 2, 3, 4]
    for image_id in coco.getImgIds():
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert 1 <= len(annotations) <= 3
        for annotation in annotations:
            assert set(annotation) >= {"bbox", "area", "segmentation", "iscrowd", "category_id"}
            assert annotation["iscrowd"] == 0


def test_box_is_the_mask_extent_and_area_the_mask_area(shapes_files):
    coco = _load(shapes_files.annotation_file)
    for annotation in coco.loadAnns(coco.getAnnIds()):
        binary = coco.annToMask(annotation)
        assert binary.shape == IMAGE_SIZE
        rows = np.flatnonzero(binary.any(axis=1))
        columns = np.flatnonzero(binary.any(axis=0))
        x, y, width, height = annotation["bbox"]
        assert [x, y, width, height] == [
            columns[0], rows[0], columns[-1] + 1 - columns[0], rows[-1] + 1 - rows[0]
        ]
        assert binary.sum() == annotation["area"]
        # The mask is the polygon: its area is close to the polygon's shoelace area.
        vertices = np.reshape(annotation["segmentation"][0], (-1, 2))
        shoelace = 0.5 * abs(
            np.dot(vertices[:, 0], np.roll(vertices[:, 1], -1))
            - np.dot(vertices[:, 1], np.roll(vertices[:, 0], -1))
        )
        assert binary.sum() == pytest.approx(shoelace, rel=0.2)


def test_mask_covers_the_drawn_shape():
    images, coco = shapes_coco.make_shapes_coco(num_images=3, image_size=IMAGE_SIZE, seed=5)
    for annotation in coco["annotations"]:
        pixels = images[annotation["image_id"] - 1].astype(np.float64)
        rle = mask_utils.frPyObjects(annotation["segmentation"], *IMAGE_SIZE)
        binary = mask_utils.decode(mask_utils.merge(rle)).astype(bool)
        inside = pixels[binary].mean(axis=0)
        outside = pixels[~binary].mean(axis=0)
        # Shapes are bright (a channel >= 200); backgrounds are dark (< 85).
        assert inside.max() > 150 and inside.max() - outside.max() > 60


def test_same_seed_same_data_and_bad_arguments():
    first = shapes_coco.make_shapes_coco(num_images=2, image_size=IMAGE_SIZE, seed=1)
    second = shapes_coco.make_shapes_coco(num_images=2, image_size=IMAGE_SIZE, seed=1)
    assert first[1] == second[1]
    np.testing.assert_array_equal(first[0][1], second[0][1])
    with pytest.raises(ValueError, match="num_images=0"):
        shapes_coco.make_shapes_coco(num_images=0)
    with pytest.raises(ValueError, match="max_shapes=5"):
        shapes_coco.make_shapes_coco(max_shapes=5, grid=(2, 2))


def test_tfrecords_decode_with_masks(shapes_files):
    from official.vision.dataloaders import tf_example_decoder

    coco = _load(shapes_files.annotation_file)
    files = glob.glob(shapes_files.tfrecord_pattern)
    assert len(files) == 1
    decoder = tf_example_decoder.TfExampleDecoder(include_mask=True)
    decoded = [decoder.decode(record) for record in tf.data.TFRecordDataset(files)]
    assert len(decoded) == 4
    for example in decoded:
        image_id = int(example["source_id"].numpy())
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert example["image"].shape == IMAGE_SIZE + (3,)
        np.testing.assert_array_equal(
            example["groundtruth_classes"].numpy(), [a["category_id"] for a in annotations]
        )
        height, width = IMAGE_SIZE
        expected_boxes = [
            [y / height, x / width, (y + h) / height, (x + w) / width]
            for x, y, w, h in (a["bbox"] for a in annotations)
        ]
        np.testing.assert_allclose(example["groundtruth_boxes"].numpy(), expected_boxes, atol=1e-5)
        masks = example["groundtruth_instance_masks"].numpy()
        assert masks.shape == (len(annotations),) + IMAGE_SIZE
        for mask, annotation in zip(masks, annotations):
            np.testing.assert_array_equal(mask > 0.5, coco.annToMask(annotation).astype(bool))

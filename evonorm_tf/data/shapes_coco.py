"""A generated detection data set in COCO format: circles, squares and triangles.

Mask R-CNN runs need instance data with boxes and masks, and this machine has
no COCO. `make_shapes_coco` draws small RGB images, each holding a few filled
shapes on a textured background, and returns them with a COCO "instances"
dictionary (images, annotations with bbox/area/segmentation/iscrowd/
category_id, categories) that `pycocotools.coco.COCO` reads. Each shape is
drawn from a polygon (a circle is a 32-gon) and that polygon is its
segmentation; box and area are those of the rasterised mask, so the box, the
mask and the pixels agree. Shapes sit in
disjoint cells of a grid, so they never overlap.

`save_shapes_coco` saves the JPEGs and the json, laid out as a COCO split;
`write_shapes_coco` also converts them into Model Garden detection TFRecords
with Model Garden's own converter (`evonorm_tf.data.coco_tfrecords`, through
`create_coco_tf_record.create_tf_example`), masks included; Model Garden's
`TfExampleDecoder(include_mask=True)` reads them back.

    images, coco = make_shapes_coco(num_images=8, image_size=(128, 160), seed=0)
    paths = write_shapes_coco("/tmp/shapes", num_images=8, seed=0)
    # paths.annotation_file, paths.tfrecord_pattern -> task.annotation_file, input_path
"""

import collections
import json
import math
import os

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

# COCO category ids start at 1; 0 is the background class of Model Garden's heads.
CATEGORIES = (
    {"id": 1, "name": "circle", "supercategory": "shape"},
    {"id": 2, "name": "square", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
)
NUM_CLASSES = len(CATEGORIES) + 1  # Model Garden's `num_classes` counts the background

CIRCLE_VERTICES = 32
SHAPE_COLORS = ((230, 40, 40), (40, 200, 60), (50, 80, 230), (240, 200, 30))

ShapesCocoFiles = collections.namedtuple(
    "ShapesCocoFiles", ["image_dir", "annotation_file", "tfrecord_prefix", "tfrecord_pattern"]
)


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, received {name}={value!r}")
    return value


def _shape_polygon(category_name, center_x, center_y, radius, angle):
    """Vertices (x, y) of a shape inscribed in a circle of `radius`, rotated by `angle`."""
    count = {"circle": CIRCLE_VERTICES, "square": 4, "triangle": 3}[category_name]
    offset = {"circle": 0.0, "square": math.pi / 4, "triangle": -math.pi / 2}[category_name]
    return [
        (
            center_x + radius * math.cos(offset + angle + 2 * math.pi * k / count),
            center_y + radius * math.sin(offset + angle + 2 * math.pi * k / count),
        )
        for k in range(count)
    ]


def make_shapes_coco(num_images=8, image_size=(128, 160), max_shapes=3, grid=(2, 2), seed=0):
    """Draws the images and their COCO "instances" dictionary.

    Args:
      num_images: number of images. Default 8.
      image_size: `(height, width)` in pixels. Default `(128, 160)`.
      max_shapes: each image holds 1…`max_shapes` shapes. Default 3.
      grid: `(rows, columns)` of disjoint cells, one shape at most per cell;
        `max_shapes` must not exceed `rows * columns`. Default `(2, 2)`.
      seed: seed of the generator; equal seeds give equal data.

    Returns:
      `(images, coco)`: a list of `uint8` arrays `[height, width, 3]` and the
      COCO dictionary; image `i` has id `i + 1` and file name `{i+1:06d}.jpg`.
      `segmentation` is a list holding the flat polygon; `bbox`
      (`[x, y, width, height]`, pixels) and `area` are those of the polygon
      rasterised by pycocotools, the mask every COCO tool sees.
    """
    _check_positive_int("num_images", num_images)
    _check_positive_int("max_shapes", max_shapes)
    height, width = (_check_positive_int("image_size[i]", int(v)) for v in image_size)
    rows, columns = (_check_positive_int("grid[i]", int(v)) for v in grid)
    if max_shapes > rows * columns:
        raise ValueError(f"max_shapes={max_shapes} exceeds the {rows}x{columns} grid cells")
    cell_height, cell_width = height / rows, width / columns
    if min(cell_height, cell_width) < 16:
        raise ValueError(f"image_size={tuple(image_size)} is too small for grid={tuple(grid)}")

    rng = np.random.default_rng(seed)
    images, image_infos, annotations = [], [], []
    for image_index in range(num_images):
        image_id = image_index + 1
        background = rng.integers(0, 60, size=3)
        noise = rng.integers(0, 25, size=(height, width, 1))
        canvas = Image.fromarray(np.clip(background + noise, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(canvas)
        cells = rng.permutation(rows * columns)[: rng.integers(1, max_shapes + 1)]
        for cell in cells:
            row, column = divmod(int(cell), columns)
            radius = rng.uniform(0.25, 0.45) * min(cell_height, cell_width)
            margin = radius + 1.0  # keeps the polygon inside its cell and the image
            center_x = column * cell_width + rng.uniform(margin, cell_width - margin)
            center_y = row * cell_height + rng.uniform(margin, cell_height - margin)
            category = CATEGORIES[rng.integers(len(CATEGORIES))]
            vertices = _shape_polygon(
                category["name"], center_x, center_y, radius, rng.uniform(0, 2 * math.pi)
            )
            color = SHAPE_COLORS[rng.integers(len(SHAPE_COLORS))]
            draw.polygon(vertices, fill=tuple(int(c) for c in color))
            polygon = [float(c) for vertex in vertices for c in vertex]
            # Box and area of the rasterised polygon, as COCO's own annotations.
            rle = mask_utils.merge(mask_utils.frPyObjects([polygon], height, width))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category["id"],
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "area": float(mask_utils.area(rle)),
                    "segmentation": [polygon],
                    "iscrowd": 0,
                }
            )
        images.append(np.asarray(canvas))
        image_infos.append(
            {"id": image_id, "file_name": f"{image_id:06d}.jpg", "height": height, "width": width}
        )
    coco = {
        "images": image_infos,
        "annotations": annotations,
        "categories": [dict(category) for category in CATEGORIES],
    }
    return images, coco


def save_shapes_coco(image_dir, annotation_file, num_images=8, image_size=(128, 160),
                     max_shapes=3, grid=(2, 2), seed=0):
    """Writes the JPEGs into `image_dir` and the COCO json to `annotation_file`.

    The same files as a COCO release split (`val2017/` and
    `annotations/instances_val2017.json`); `evonorm_tf.data.coco_tfrecords`
    converts either. Arguments after the paths are as `make_shapes_coco`.
    Returns the COCO dictionary.
    """
    images, coco = make_shapes_coco(num_images, image_size, max_shapes, grid, seed)
    os.makedirs(image_dir, exist_ok=True)
    for pixels, info in zip(images, coco["images"]):
        Image.fromarray(pixels).save(os.path.join(image_dir, info["file_name"]), quality=95)
    annotation_directory = os.path.dirname(annotation_file)
    if annotation_directory:
        os.makedirs(annotation_directory, exist_ok=True)
    with open(annotation_file, "w") as file:
        json.dump(coco, file)
    return coco


def write_shapes_coco(directory, num_images=8, image_size=(128, 160), max_shapes=3,
                      grid=(2, 2), seed=0, num_shards=1, include_masks=True):
    """Writes the JPEGs, the COCO json and Model Garden detection TFRecords.

    Args:
      directory: output folder (created if missing). It receives `images/`,
        `instances.json` and `tfrecord-0000i-of-0000N.tfrecord`.
      num_images, image_size, max_shapes, grid, seed: as `make_shapes_coco`.
      num_shards: number of TFRecord files. Default 1.
      include_masks: write the PNG instance masks (`image/object/mask`), as
        Mask R-CNN needs. Default True.

    Returns:
      `ShapesCocoFiles(image_dir, annotation_file, tfrecord_prefix,
      tfrecord_pattern)`; the pattern suits `input_path` of a data config.
    """
    from evonorm_tf.data.coco_tfrecords import write_coco_tfrecords

    _check_positive_int("num_shards", num_shards)
    image_dir = os.path.join(directory, "images")
    annotation_file = os.path.join(directory, "instances.json")
    save_shapes_coco(image_dir, annotation_file, num_images, image_size, max_shapes, grid, seed)
    tfrecord_prefix = os.path.join(directory, "tfrecord")
    _, skipped = write_coco_tfrecords(
        image_dir, annotation_file, tfrecord_prefix, num_shards, include_masks
    )
    if skipped:
        raise ValueError(f"Model Garden's converter skipped {skipped} generated annotations")
    return ShapesCocoFiles(image_dir, annotation_file, tfrecord_prefix, tfrecord_prefix + "*")

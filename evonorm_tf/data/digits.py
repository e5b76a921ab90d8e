"""scikit-learn's bundled handwritten digits as a small image-classification set.

`sklearn.datasets.load_digits` ships 1,797 grey 8x8 images of the digits
0-9 with the library, so the demo and the tests need no download. Images are
scaled to [0, 1], upsampled bilinearly to `image_size` (so that a convnet has
room for a few layers) and split once into a stratified train and test set by
a fixed seed.

    split = load_digits_split(image_size=16)
    for images, labels in train_batches(split, batch_size=64, seed=0, epoch=0):
        ...
"""

import collections

import numpy as np
import tensorflow as tf

NUM_CLASSES = 10
_PIXEL_MAX = 16.0  # load_digits pixels are integers 0..16

DigitsSplit = collections.namedtuple(
    "DigitsSplit", ["train_images", "train_labels", "test_images", "test_labels"]
)
DigitsSplit.__doc__ = """NHWC float32 images in [0, 1] and int32 labels, train and test."""


def load_digits_split(image_size=16, test_fraction=0.2, split_seed=0, train_subset=None):
    """Loads, upsamples and splits the bundled digits.

    Args:
      image_size: output height and width (>= 8); 8 keeps the original size.
      test_fraction: share of the 1,797 images held out for testing (0.2 → 360).
      split_seed: seed of the stratified split; the same seed always gives
        the same split.
      train_subset: if set, keep only the first `train_subset` training images
        (the split is shuffled, so this is a random stratified-ish subset).

    Returns:
      A `DigitsSplit` of NHWC float32 images and int32 labels.
    """
    # Imported here: scikit-learn is only needed by code that uses the digits.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, received {image_size!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), received {test_fraction!r}")
    if train_subset is not None and (not isinstance(train_subset, int) or train_subset < 1):
        raise ValueError(f"train_subset must be a positive int or None, received {train_subset!r}")

    digits = load_digits()
    images = (digits.images.astype(np.float32) / _PIXEL_MAX)[..., np.newaxis]
    if image_size != images.shape[1]:
        images = tf.image.resize(images, (image_size, image_size), method="bilinear").numpy()
    labels = digits.target.astype(np.int32)
    train_images, test_images, train_labels, test_labels = train_test_split(
        images, labels, test_size=test_fraction, random_state=split_seed, stratify=labels
    )
    if train_subset is not None:
        train_images, train_labels = train_images[:train_subset], train_labels[:train_subset]
    return DigitsSplit(train_images, train_labels, test_images, test_labels)


def train_batches(split, batch_size, seed, epoch):
    """Yields `(images, labels)` batches of one shuffled epoch of the training set.

    The order depends only on `(seed, epoch)`; a last incomplete batch is
    dropped so that every step sees exactly `batch_size` images (batch
    statistics at batch size 2 mean exactly 2).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, received {batch_size!r}")
    count = len(split.train_labels)
    if batch_size > count:
        raise ValueError(f"batch_size={batch_size} exceeds the {count} training images")
    order = np.random.default_rng([seed, epoch]).permutation(count)
    for start in range(0, count - batch_size + 1, batch_size):
        index = order[start:start + batch_size]
        yield split.train_images[index], split.train_labels[index]


def steps_per_epoch(split, batch_size):
    """Number of full batches `train_batches` yields per epoch."""
    return len(split.train_labels) // batch_size

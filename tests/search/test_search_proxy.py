"""Proxy data (offline textures, TFDS cifar10 through its real loader) and the anchors."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from evonorm_tf.search import proxy


def test_textures_are_balanced_normalised_and_reproducible():
    images, labels = proxy.texture_images(2000, seed=3)
    again, _ = proxy.texture_images(2000, seed=3)
    assert images.shape == (2000, 16, 16, 3) and images.dtype == np.float32
    np.testing.assert_array_equal(images, again)
    assert abs(images.mean()) < 1e-3 and abs(images.std() - 1) < 1e-3
    counts = np.bincount(labels, minlength=10)
    assert counts.min() > 150                                    # ~200 per class
    # Classes differ in content: per-class mean images are not all the same.
    class_means = np.stack([images[labels == c].std(axis=0).mean() for c in range(10)])
    assert np.ptp(class_means) > 0.0


def test_cifar10_loader_reads_tfds_without_downloading(tmp_path):
    with tfds.testing.mock_data(num_examples=30):
        data = proxy.cifar10(str(tmp_path), num_validation=10)
    assert data.train_images.shape == (20, 32, 32, 3) and data.test_images.shape == (10, 32, 32, 3)
    assert data.train_labels.dtype == np.int32
    with pytest.raises(ValueError, match="needs data_dir"):
        proxy.load_data("cifar10")


@pytest.mark.parametrize("anchor", proxy.ANCHORS)
def test_anchors_use_the_norm_act_everywhere(anchor):
    built = []

    def norm_act(nonlinearity=True):
        layer = proxy.norm_act_builder("evonorm_s0")(nonlinearity)
        built.append(nonlinearity)
        return layer

    model = proxy.build_anchor(anchor, norm_act, (16, 16, 3), width=8)
    assert model.output_shape == (None, proxy.NUM_CLASSES)
    assert sum(built) >= 3
    # MobileNet/EfficientNet projections are affine-only, as the authors' code does without a ReLU.
    assert (False in built) == (anchor != "resnet")

"""FID / IS math against independent NumPy/SciPy float64 computations, and the feature networks."""

import warnings

import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf
import tf_keras

from evonorm_tf.gan import evaluation


def _reference_fid(a, b):
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = np.real(scipy.linalg.sqrtm(sa @ sb))
    return np.sum((mu_a - mu_b) ** 2) + np.trace(sa + sb - 2 * root)


def test_frechet_distance_matches_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 6))
    b = rng.normal(size=(150, 6)) @ rng.normal(size=(6, 6)) * 0.5 + 0.3
    fid = evaluation.frechet_distance(*evaluation.gaussian_statistics(a),
                                      *evaluation.gaussian_statistics(b))
    np.testing.assert_allclose(fid, _reference_fid(a, b), rtol=1e-9)
    assert fid > 0.1


def test_frechet_distance_closed_form_for_diagonal_gaussians():
    # Diagonal covariances: FID = ‖Δμ‖² + Σ (√s1 − √s2)².
    m1, m2 = np.array([0.0, 1.0]), np.array([1.0, -1.0])
    s1, s2 = np.array([1.0, 4.0]), np.array([9.0, 1.0])
    expected = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    got = evaluation.frechet_distance(m1, np.diag(s1), m2, np.diag(s2))
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    assert evaluation.frechet_distance(m1, np.diag(s1), m1, np.diag(s1)) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_rank_deficient_covariances_is_finite_and_silent():
    """Features that never fire (ReLU units dead for a class: singular Σ): a finite FID, no SciPy warning."""
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(50, 12)), rng.normal(0.5, 1.0, size=(60, 12))
    a[:, :4] = 0.0
    b[:, 2:5] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fid = evaluation.frechet_distance(*evaluation.gaussian_statistics(a), *evaluation.gaussian_statistics(b))
    assert np.isfinite(fid) and fid > 0


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        evaluation.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_inception_score_reference_and_bounds():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(40, 5)) * 3
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = []
    for part in np.array_split(p, 4):
        marginal = part.mean(0)
        expected.append(np.exp(np.mean(np.sum(part * np.log(part / marginal), axis=1))))
    mean, std = evaluation.inception_score(logits, splits=4)
    np.testing.assert_allclose([mean, std], [np.mean(expected), np.std(expected)], rtol=1e-9)
    # Confident, uniformly spread predictions score the number of classes; constant ones score 1.
    confident = np.eye(5)[np.arange(40) % 5] * 100.0
    assert evaluation.inception_score(confident, splits=1)[0] == pytest.approx(5.0, rel=1e-6)
    assert evaluation.inception_score(np.zeros((40, 5)), splits=2)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="splits"):
        evaluation.inception_score(logits, splits=0)


def test_inception_loader_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        evaluation.inception_v3_network(str(tmp_path / "nope.h5"))


@pytest.mark.slow
def test_inception_loader_round_trip(tmp_path):
    model = tf_keras.applications.InceptionV3(weights=None, classes=1008, classifier_activation=None)
    path = str(tmp_path / "inception.h5")
    model.save_weights(path)
    network = evaluation.inception_v3_network(path, input_size=299)
    images = tf.random.uniform((2, 32, 32, 3), -1, 1)
    pool, logits = network(images)
    assert pool.shape == (2, 2048) and logits.shape == (2, 1008)
    np.testing.assert_allclose(logits, model(tf.image.resize(images, (299, 299))), rtol=1e-4, atol=1e-4)


def test_digits_feature_network_separates_classes():
    from evonorm_tf.data import digits

    network = evaluation.digits_feature_network(image_size=32, epochs=6)
    assert network.test_accuracy > 0.9
    split = digits.load_digits_split(image_size=32)
    images = split.test_images * 2.0 - 1.0
    features, logits = evaluation.extract(network, images, batch_size=128)
    assert features.shape == (len(images), 64) and logits.shape == (len(images), 10)
    # Real test digits vs. real training digits: small FID; vs. one class only: larger.
    train_features, _ = evaluation.extract(network, split.train_images * 2.0 - 1.0, batch_size=256)
    stats = evaluation.gaussian_statistics
    close = evaluation.frechet_distance(*stats(features), *stats(train_features))
    ones = train_features[split.train_labels == 1]
    far = evaluation.frechet_distance(*stats(features), *stats(ones))
    assert far > 5 * close
    assert evaluation.inception_score(logits, splits=1)[0] > 7.0

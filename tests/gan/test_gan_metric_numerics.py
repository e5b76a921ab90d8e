"""FID and IS against closed forms, the sqrtm imaginary-part check, and metric names."""

import numpy as np
import pytest
import scipy.linalg

from evonorm_tf.gan import evaluation


def _rotation(angle):
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def test_fid_closed_form_for_non_commuting_covariances():
    # For 2x2 M = Σ₁Σ₂ with positive eigenvalues, tr √M = sqrt(tr M + 2 sqrt(det M)).
    s1 = _rotation(0.3) @ np.diag([4.0, 0.5]) @ _rotation(0.3).T
    s2 = _rotation(1.1) @ np.diag([1.0, 3.0]) @ _rotation(1.1).T
    m1, m2 = np.array([1.0, -2.0]), np.array([0.5, 0.5])
    product = s1 @ s2
    trace_root = np.sqrt(np.trace(product) + 2.0 * np.sqrt(np.linalg.det(product)))
    expected = np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * trace_root
    np.testing.assert_allclose(evaluation.frechet_distance(m1, s1, m2, s2), expected, rtol=1e-10)


def test_fid_of_scaled_covariance():
    # N(μ, Σ) vs N(μ, cΣ): tr Σ (1 − √c)², whatever Σ.
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    sigma = a @ a.T + np.eye(6)
    got = evaluation.frechet_distance(np.zeros(6), sigma, np.zeros(6), 9.0 * sigma)
    np.testing.assert_allclose(got, np.trace(sigma) * (1.0 - 3.0) ** 2, rtol=1e-8)


def test_fid_of_sample_statistics_converges_to_the_population_value():
    rng = np.random.default_rng(1)
    s1, s2 = np.diag([1.0, 2.0, 0.5]), np.diag([2.0, 2.0, 2.0])
    a = rng.multivariate_normal(np.zeros(3), s1, size=200_000)
    b = rng.multivariate_normal(np.ones(3), s2, size=200_000)
    expected = 3.0 + np.sum((np.sqrt(np.diag(s1)) - np.sqrt(np.diag(s2))) ** 2)
    got = evaluation.frechet_distance(*evaluation.gaussian_statistics(a),
                                      *evaluation.gaussian_statistics(b))
    assert got == pytest.approx(expected, abs=0.03)


def test_imaginary_component_check(monkeypatch):
    # A covariance that is not positive semi-definite has a complex sqrtm(Σ₁Σ₂).
    with pytest.raises(ValueError, match="imaginary component of 1 "):
        evaluation.frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
    # Round-off imaginary parts (below the tolerance, as TTUR / pytorch-fid's 1e-3) are dropped.
    real_sqrtm = scipy.linalg.sqrtm
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda m: real_sqrtm(m) + 1e-6j)
    got = evaluation.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), 4.0 * np.eye(2))
    assert got == pytest.approx(2.0, rel=1e-10)
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda m: real_sqrtm(m) + 0.01j)
    with pytest.raises(ValueError, match="0.01"):
        evaluation.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), 4.0 * np.eye(2))
    assert evaluation.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), 4.0 * np.eye(2),
                                       imaginary_tolerance=0.1) == pytest.approx(2.0)


def test_inception_score_closed_forms():
    big = 60.0  # logits → one-hot up to e^-60
    # Uniform p(y|x): IS = 1. One-hot, uniform over K classes: IS = K.
    assert evaluation.inception_score(np.zeros((30, 7)), splits=1)[0] == pytest.approx(1.0)
    assert evaluation.inception_score(np.eye(6)[np.arange(60) % 6] * big, splits=1)[0] == \
        pytest.approx(6.0, rel=1e-9)
    # One-hot with class frequencies q: IS = exp(H(q)); q = (1/2, 1/4, 1/4) gives 2^1.5.
    labels = np.array([0, 0, 1, 2] * 10)
    assert evaluation.inception_score(np.eye(3)[labels] * big, splits=1)[0] == \
        pytest.approx(2.0 ** 1.5, rel=1e-9)
    # Every sample predicts the same distribution p: KL(p ‖ p) = 0, IS = 1.
    same = np.tile(np.log([0.7, 0.2, 0.1]), (20, 1))
    assert evaluation.inception_score(same, splits=2)[0] == pytest.approx(1.0)


def test_metrics_are_named_by_their_network():
    def network(images):
        return images, images

    network.name = "digits_classifier"
    assert evaluation.metric_names(network) == {
        "fid": "fid_digits_classifier",
        "inception_score": "inception_score_digits_classifier",
        "inception_score_std": "inception_score_std_digits_classifier"}
    with pytest.raises(ValueError, match="no name"):
        evaluation.metric_names(lambda images: (images, images))

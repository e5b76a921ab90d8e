"""MixPath's path sampler, the MixPath path form and BN recalibration, against exact
probabilities and NumPy float64 references written from arXiv:2001.05887."""

import itertools
import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from scipy import stats

from evonorm_tf.modeling.layers.bn_recalibration import recalibrate_batch_norm
from evonorm_tf.modeling.layers.multipath import MultiPathBlock, sample_path_mask

DRAWS = 6000


@tf.function
def _draw(num_paths, max_active, count):
    masks = tf.TensorArray(tf.float32, size=count)
    for index in tf.range(count):
        masks = masks.write(index, sample_path_mask(num_paths, max_active))
    return masks.stack()


@tf.function
def _draw_seeded(num_paths, max_active, count):
    masks = tf.TensorArray(tf.float32, size=count)
    for index in tf.range(count):
        masks = masks.write(index, sample_path_mask(num_paths, max_active, seed=tf.stack([7, index])))
    return masks.stack()


def _subset_frequencies(masks, num_paths, max_active):
    """Observed counts and exact MixPath probabilities of every subset of size 1..M."""
    subsets = [s for m in range(1, max_active + 1) for s in itertools.combinations(range(num_paths), m)]
    keys = {tuple(np.flatnonzero(mask)) for mask in masks}
    assert keys <= set(subsets), f"masks outside the sizes 1..{max_active}: {sorted(keys - set(subsets))}"
    observed = np.array([sum(tuple(np.flatnonzero(mask)) == s for mask in masks) for s in subsets])
    # m uniform in 1..M, then one of the C(n, m) subsets of size m uniformly.
    expected = np.array([1.0 / (max_active * math.comb(num_paths, len(s))) for s in subsets]) * len(masks)
    return observed, expected


@pytest.mark.parametrize("num_paths, max_active", [(4, 2), (3, 3), (4, 1)])
@pytest.mark.parametrize("seeded", [False, True])
def test_sampler_hits_every_subset_with_mixpath_probabilities(num_paths, max_active, seeded):
    tf.random.set_seed(0)
    draw = _draw_seeded if seeded else _draw
    masks = draw(num_paths, max_active, DRAWS).numpy()
    assert set(np.unique(masks)) <= {0.0, 1.0}
    observed, expected = _subset_frequencies(masks, num_paths, max_active)
    # Chi-square goodness of fit: sampling only m < M, a fixed path order
    # (always the first m paths) or m uniform over subsets all fail this.
    assert stats.chisquare(observed, expected).pvalue > 1e-4, (observed, expected)
    sizes = masks.sum(axis=1)
    np.testing.assert_allclose(np.bincount(sizes.astype(int), minlength=max_active + 1)[1:] / DRAWS,
                               1.0 / max_active, atol=0.03)


def test_seeded_sampler_is_reproducible_and_max_active_is_checked():
    first = sample_path_mask(4, 2, seed=[3, 4]).numpy()
    np.testing.assert_array_equal(sample_path_mask(4, 2, seed=[3, 4]).numpy(), first)
    with pytest.raises(ValueError, match="max_active=5"):
        sample_path_mask(4, 5)
    with pytest.raises(ValueError, match="max_active=0"):
        MultiPathBlock(4, (1, 3, 5), max_active=0)
    with pytest.raises(ValueError, match="path_form='mixed'"):
        MultiPathBlock(4, (1, 3), path_form="mixed")


def test_block_uses_at_most_max_active_paths():
    block = MultiPathBlock(3, (1, 3, 5, 7), max_active=2)
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 2)).astype(np.float32)
    block(x, training=True)
    assert block.shadow_norm.gamma.shape == (2, 3)  # one BN per m = 1..M
    with pytest.raises(ValueError, match="active_paths=3"):
        block(x, tf.constant([1.0, 1.0, 1.0, 0.0]), training=True)
    # Inference without a mask: the first M paths.
    np.testing.assert_array_equal(block.default_mask(False).numpy(), [1.0, 1.0, 0.0, 0.0])
    tf.random.set_seed(1)
    sampled = np.stack([block.default_mask(True).numpy() for _ in range(200)])
    assert sampled.sum(axis=1).max() == 2 and sampled.sum(axis=1).min() == 1
    assert sampled[:, 3].sum() > 0  # every path gets drawn, not only the first M


# -- the MixPath path form against NumPy float64 ---------------------------------------


def _batch_norm(x, gamma, beta, epsilon):
    return (x - x.mean(axis=(0, 1, 2))) / np.sqrt(x.var(axis=(0, 1, 2)) + epsilon) * gamma + beta


def _depthwise_same(x, kernel):
    """NumPy 'same' stride-1 depthwise convolution, `kernel` `[k, k, C, 1]`."""
    size = kernel.shape[0]
    padded = np.pad(x, ((0, 0), (size // 2, size // 2), (size // 2, size // 2), (0, 0)))
    height, width = x.shape[1:3]
    out = np.zeros_like(x)
    for i in range(size):
        for j in range(size):
            out += padded[:, i:i + height, j:j + width, :] * kernel[i, j, :, 0]
    return out


@pytest.mark.parametrize("shadow_bn", [True, False])
def test_mixpath_form_matches_numpy(shadow_bn):
    tf_keras.utils.set_random_seed(2)  # the convolution kernels: one fixed draw
    rng = np.random.default_rng(2)
    channels, epsilon = 3, 1e-3
    block = MultiPathBlock(channels, (1, 3, 5), max_active=2, path_form="mixpath", expansion=2,
                           shadow_bn=shadow_bn, activation=None, epsilon=epsilon)
    x = rng.normal(size=(4, 6, 6, channels)).astype(np.float32)
    block.build(x.shape)
    # BN gains large enough that ReLU6 clips.
    block.expand_norm.gamma.assign(np.full(channels * 2, 4.0, np.float32))
    rows = block.shadow_norm.gamma.shape[0]
    block.shadow_norm.gamma.assign(rng.uniform(0.5, 1.5, (rows, channels)).astype(np.float32))
    block.shadow_norm.beta.assign(rng.normal(size=(rows, channels)).astype(np.float32))
    mask = np.array([0.0, 1.0, 1.0], np.float32)
    outputs = block(x, tf.constant(mask), training=True).numpy()

    x64 = x.astype(np.float64)
    hidden = x64 @ block.expand.kernel.numpy()[0, 0].astype(np.float64)
    hidden = np.clip(_batch_norm(hidden, 4.0, 0.0, epsilon), 0.0, 6.0)
    paths = [np.clip(_batch_norm(_depthwise_same(hidden, conv.depthwise_kernel.numpy().astype(np.float64)),
                                 1.0, 0.0, epsilon), 0.0, 6.0) for conv in block.paths]
    summed = sum(weight * path for weight, path in zip(mask, paths))
    projected = summed @ block.project.kernel.numpy()[0, 0].astype(np.float64)
    row = 1 if shadow_bn else 0  # Shadow BN number m = 2, or the one shared BN
    gamma, beta = block.shadow_norm.gamma.numpy()[row], block.shadow_norm.beta.numpy()[row]
    expected = _batch_norm(projected, gamma, beta, epsilon) + x64  # stride 1, same width: residual
    assert block.use_residual
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4)
    # path_features: the projected per-path terms whose masked sum Shadow BN sees.
    features = [f.numpy() for f in block.path_features(x, training=True)]
    np.testing.assert_allclose(sum(w * f for w, f in zip(mask, features)), projected, rtol=1e-4, atol=1e-4)


def test_recalibration_averages_the_batch_statistics_of_the_child():
    tf_keras.utils.set_random_seed(4)
    rng = np.random.default_rng(4)
    block = MultiPathBlock(3, (1, 1, 1), max_active=3, activation=None, momentum=0.9)
    batches = [rng.normal(loc=index, size=(5, 4, 4, 2)).astype(np.float32) for index in range(3)]
    block(batches[0], tf.constant([1.0, 1.0, 1.0]), training=True)  # moves BN number 3
    before = block.shadow_norm.moving_mean.numpy().copy()
    mask = tf.constant([1.0, 0.0, 1.0])
    used = recalibrate_batch_norm(block, batches, lambda x: block(x, mask, training=True))
    assert used == 3 and block.shadow_norm.momentum == 0.9
    kernel = sum(m * path.kernel.numpy()[0, 0].astype(np.float64) for m, path in zip([1, 0, 1], block.paths))
    sums = [batch.astype(np.float64) @ kernel for batch in batches]
    np.testing.assert_allclose(block.shadow_norm.moving_mean.numpy()[1],
                               np.mean([s.mean(axis=(0, 1, 2)) for s in sums], axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(block.shadow_norm.moving_variance.numpy()[1],
                               np.mean([s.var(axis=(0, 1, 2)) for s in sums], axis=0), rtol=1e-4, atol=1e-5)
    # BNs of the other m keep their statistics.
    np.testing.assert_array_equal(block.shadow_norm.moving_mean.numpy()[[0, 2]], before[[0, 2]])
    with pytest.raises(ValueError, match="batches is empty"):
        recalibrate_batch_norm(block, [], lambda x: block(x, mask, training=True))

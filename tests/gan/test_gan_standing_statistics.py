"""Standing statistics: the EMA generator is evaluated with batch statistics of its own weights."""

import numpy as np
import pytest
import tensorflow as tf

from evonorm_tf.gan import standing_statistics
from evonorm_tf.gan.generator import Generator
from evonorm_tf.gan.spectral_norm import SpectralNormalization
from evonorm_tf.gan.truncation import sample_latents


def _generator(norm_act, use_sn=True):
    kwargs = {"groups": 4} if norm_act == "evonorm_s0" else {}
    G = Generator(resolution=32, ch=4, z_dim=16, shared_dim=8, num_classes=10,
                  norm_act=norm_act, norm_act_kwargs=kwargs, use_sn=use_sn)
    G((tf.zeros((2, 16)), tf.zeros((2,), tf.int32)))
    return G


def _ema_pair(norm_act):
    """A training generator and an 'EMA' generator with different weights (a copy, perturbed).

    Without spectral norm: a training call refines its singular vectors, which would move
    the outputs between the calls compared here (their restoration is tested below).
    """
    G, ema = _generator(norm_act, use_sn=False), _generator(norm_act, use_sn=False)
    rng = np.random.default_rng(1)
    for source, target in zip(G.weights, ema.weights):
        value = source.numpy()
        if source.trainable:
            value = value + 0.3 * rng.standard_normal(value.shape).astype(value.dtype)
        target.assign(value)
    return G, ema


def _one_batch(generator, batch, seed):
    """The latents and labels `accumulate_standing_statistics` draws for one batch."""
    rng = np.random.default_rng([seed, 7])
    z = sample_latents(rng, batch, generator.z_dim)
    labels = rng.integers(0, 10, batch).astype(np.int32)
    return tf.constant(z), tf.constant(labels)


@pytest.mark.parametrize("norm_act", ["bn_relu", "evonorm_b0"])
def test_evaluation_uses_the_ema_weights_own_batch_statistics(norm_act):
    G, ema = _ema_pair(norm_act)
    batch = 64
    z, labels = _one_batch(ema, batch, seed=5)
    # The EMA generator in training mode normalises with its own batch statistics.
    target = ema((z, labels), training=True).numpy()
    for variable in standing_statistics.statistics_variables(ema):  # start from G's moving stats
        variable.assign(variable.numpy() * 0 + 1)
    before = ema((z, labels), training=False).numpy()
    updated = standing_statistics.accumulate_standing_statistics(
        ema, num_samples=batch, batch_size=batch, num_classes=10, seed=5)
    assert updated == 7  # at 32: three blocks' two conditional norms and the output norm
    after = ema((z, labels), training=False).numpy()
    # Inference with standing statistics of one batch = training mode on that batch (BN
    # stores the unbiased variance, n = 64·H·W ≥ 1024: the outputs move by < 1e-2).
    np.testing.assert_allclose(after, target, atol=1e-2)
    assert np.abs(before - target).max() > 20 * np.abs(after - target).max()
    # The statistics are those of the EMA weights, not of the training generator's.
    standing_statistics.accumulate_standing_statistics(
        G, num_samples=batch, batch_size=batch, num_classes=10, seed=5)
    differences = [np.abs(a.numpy() - b.numpy()).max() for a, b in zip(
        standing_statistics.statistics_variables(G), standing_statistics.statistics_variables(ema))]
    assert max(differences) > 1e-2


def test_statistics_are_the_average_over_batches():
    _, ema = _ema_pair("evonorm_b0")
    batch, batches = 16, 3
    rng = np.random.default_rng([2, 7])
    layers = standing_statistics.batch_statistics_layers(ema)
    recorded = []
    for _ in range(batches):  # per batch: the variance each layer records with momentum 0
        z = sample_latents(rng, batch, ema.z_dim)
        labels = rng.integers(0, 10, batch).astype(np.int32)
        for layer in layers:
            layer.momentum = 0.0
        ema((tf.constant(z), tf.constant(labels)), training=True)
        recorded.append([layer.moving_variance.numpy().astype(np.float64) for layer in layers])
    for layer in layers:
        layer.momentum = 0.9
    standing_statistics.accumulate_standing_statistics(
        ema, num_samples=batch * batches, batch_size=batch, num_classes=10, seed=2)
    for index, layer in enumerate(layers):
        expected = np.mean([batch_values[index] for batch_values in recorded], axis=0)
        np.testing.assert_allclose(layer.moving_variance.numpy(), expected, rtol=1e-4, atol=1e-6)
        assert layer.momentum == 0.9  # restored


def test_spectral_vectors_restored_and_per_sample_norms_untouched():
    G = _generator("evonorm_s0")
    assert standing_statistics.batch_statistics_layers(G) == []
    weights = [w.numpy() for w in G.weights]
    assert standing_statistics.accumulate_standing_statistics(G, 8, 4, 10) == 0
    for before, after in zip(weights, G.weights):
        np.testing.assert_array_equal(before, after.numpy())
    G = _generator("bn_relu")
    vectors = {id(l): l.u.numpy() for l in G.submodules if isinstance(l, SpectralNormalization)}
    standing_statistics.accumulate_standing_statistics(G, 8, 4, 10)
    for layer in G.submodules:
        if isinstance(layer, SpectralNormalization):
            np.testing.assert_array_equal(layer.u.numpy(), vectors[id(layer)])


def test_bad_arguments():
    G = _generator("bn_relu")
    with pytest.raises(ValueError, match="num_samples must be a positive int, received 0"):
        standing_statistics.accumulate_standing_statistics(G, 0, 4, 10)
    with pytest.raises(ValueError, match="batch_size must be an int >= 2, received 1"):
        standing_statistics.accumulate_standing_statistics(G, 8, 1, 10)


def test_snapshot_restores_the_ema_statistics():
    G = _generator("evonorm_b0")
    before = [v.numpy() for v in standing_statistics.statistics_variables(G)]
    restore = standing_statistics.snapshot_statistics(G)
    standing_statistics.accumulate_standing_statistics(G, 8, 4, 10)
    assert any(np.abs(b - v.numpy()).max() > 1e-3
               for b, v in zip(before, standing_statistics.statistics_variables(G)))
    restore()
    for b, v in zip(before, standing_statistics.statistics_variables(G)):
        np.testing.assert_array_equal(b, v.numpy())


@pytest.mark.parametrize("norm_act", ["bn_relu", "evonorm_b0"])
def test_two_replicas_give_the_statistics_of_the_global_batch_on_one_device(norm_act,
                                                                            mirrored_strategy):
    """`strategy=` MirroredStrategy over 2 logical CPUs: the statistics of one device's run."""
    _, single = _ema_pair(norm_act)
    with mirrored_strategy.scope():
        mirrored = _generator(norm_act, use_sn=False)
    for source, target in zip(single.weights, mirrored.weights):
        target.assign(source.numpy())
    batch, batches = 16, 2
    standing_statistics.accumulate_standing_statistics(
        single, num_samples=batch * batches, batch_size=batch, num_classes=10, seed=3)
    standing_statistics.accumulate_standing_statistics(
        mirrored, num_samples=batch * batches, batch_size=batch, num_classes=10, seed=3,
        strategy=mirrored_strategy)
    ones = standing_statistics.statistics_variables(single)
    twos = standing_statistics.statistics_variables(mirrored)
    assert len(ones) == len(twos) == {"bn_relu": 14, "evonorm_b0": 7}[norm_act]
    for one, two in zip(ones, twos):
        assert not np.allclose(one.numpy(), 1.0)          # the statistics were set
        values = [v.numpy() for v in mirrored_strategy.experimental_local_results(two)]
        assert len(values) == 2                                        # one copy per replica
        for replica_value in values:
            np.testing.assert_allclose(replica_value, one.numpy(), rtol=1e-5, atol=1e-6,
                                       err_msg=two.name)

"""Standing statistics: batch statistics of the generator being evaluated.

A generator whose norm-acts use batch statistics (BN, EvoNorm-B*) runs at
evaluation with stored statistics. Those stored in the EMA generator are an
average of the *training* generator's moving statistics, not statistics of
the EMA weights. BigGAN re-estimates them for the weights it evaluates
("standing statistics", Brock, Donahue, Simonyan 2019, arXiv:1809.11096;
compare_gan accumulates them over 204,800 samples, BigGAN-PyTorch's
`accumulate_standing_stats` over a configurable number of batches):

    accumulate_standing_statistics(trainer.ema_generator, num_samples=2048,
                                   batch_size=64, num_classes=10, seed=0)

runs the generator in training mode on `num_samples` fresh latents and
uniform labels, and sets every batch-statistics layer's moving statistics to
the average over batches of its batch statistics (mean and variance as the
layer itself records them). Layers with per-sample statistics (EvoNorm-S*,
GN, FRN) have none and are unaffected; spectral-norm vectors, which a
training call refines, are restored, so only the statistics change.
"""

import weakref

import numpy as np
import tensorflow as tf

from evonorm_tf.gan.spectral_norm import SpectralNormalization
from evonorm_tf.gan.truncation import sample_latents

__all__ = [
    "accumulate_standing_statistics",
    "batch_statistics_layers",
    "snapshot_statistics",
    "statistics_variables",
]

_STATISTICS = ("moving_mean", "moving_variance")
# One traced training-mode forward per generator (traced with momentum 0).
_FORWARDS = weakref.WeakKeyDictionary()


def batch_statistics_layers(model):
    """The layers of `model` that keep moving batch statistics (BN, EvoNorm-B*)."""
    return [layer for layer in model.submodules
            if hasattr(layer, "momentum") and hasattr(layer, "moving_variance")]


def statistics_variables(model):
    """The moving-statistics variables of `model`'s batch-statistics layers, in layer order."""
    return [getattr(layer, name) for layer in batch_statistics_layers(model)
            for name in _STATISTICS if hasattr(layer, name)]


def snapshot_statistics(model):
    """Saves `model`'s moving statistics; returns a function that restores them.

    Evaluation replaces the EMA generator's statistics by standing ones and
    then restores the EMA's, so the trained state (and a checkpoint written
    after an evaluation) does not depend on when evaluations ran.
    """
    variables = statistics_variables(model)
    values = [variable.numpy() for variable in variables]

    def restore():
        for variable, value in zip(variables, values):
            variable.assign(value)

    return restore


def accumulate_standing_statistics(generator, num_samples, batch_size, num_classes, seed=0,
                                   truncation=None, strategy=None):
    """Sets `generator`'s moving statistics to averages of its own batch statistics.

    Args:
      generator: a built `Generator` (normally the EMA generator).
      num_samples: latents to run through it (rounded up to whole batches).
      batch_size: samples per batch (the batch statistics' batch).
      num_classes: labels are drawn uniformly from `[0, num_classes)`.
      seed: seed of the latents and labels. Default 0.
      truncation: latents from the normal truncated at ±`truncation` (as the
        samples that will be evaluated), or None for the full normal.
      strategy: a `tf.distribute.Strategy` whose variables `generator` has;
        each batch then runs through `strategy.run` (every replica on the same
        batch, so replica-local statistics equal the batch's). None: a plain
        call.

    Returns:
      The number of batch-statistics layers updated (0 for S-series, GN, FRN
      generators, which are left unchanged).
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, received {num_samples!r}")
    if not isinstance(batch_size, int) or batch_size < 2:
        raise ValueError(f"batch_size must be an int >= 2, received {batch_size!r}")
    layers = batch_statistics_layers(generator)
    if not layers:
        return 0
    variables = statistics_variables(generator)
    vectors = [layer.u for layer in generator.submodules
               if isinstance(layer, SpectralNormalization)]
    saved_vectors = [v.numpy() for v in vectors]
    momenta = [layer.momentum for layer in layers]
    num_batches = -(-num_samples // batch_size)
    rng = np.random.default_rng([seed, 7])
    sums = [np.zeros(v.shape, np.float64) for v in variables]
    try:
        for layer in layers:  # momentum 0: the moving statistics become the batch's
            layer.momentum = 0.0
        if generator not in _FORWARDS:
            _FORWARDS[generator] = tf.function(lambda z, y: generator((z, y), training=True))
        forward = _FORWARDS[generator]
        for _ in range(num_batches):
            z = sample_latents(rng, batch_size, generator.z_dim, truncation)
            labels = rng.integers(0, num_classes, batch_size).astype(np.int32)
            if strategy is None:
                forward(tf.constant(z), tf.constant(labels))
            else:
                strategy.run(forward, args=(tf.constant(z), tf.constant(labels)))
            for total, variable in zip(sums, variables):
                total += variable.numpy()
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        for vector, value in zip(vectors, saved_vectors):
            vector.assign(value)
    for total, variable in zip(sums, variables):
        variable.assign((total / num_batches).astype(variable.dtype.as_numpy_dtype))
    return len(layers)

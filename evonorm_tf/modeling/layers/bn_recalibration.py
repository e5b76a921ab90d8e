"""BatchNorm recalibration of a child network sampled from a one-shot supernet.

The moving statistics a supernet's BatchNorms collect during training are
averaged over all the children it sampled; a particular child's activations
have other statistics. Before a child is evaluated with the supernet's
weights, its BN statistics are re-estimated on training batches: every
BatchNorm (Keras `BatchNormalization` and Shadow BN) gets, for the rows the
child uses, the average over the batches of its batch mean and batch
variance, as single-path one-shot NAS does (Guo et al. arXiv:1904.00420 §3.3;
MixPath arXiv:2001.05887 §4).

    recalibrate_batch_norm(supernet, batches, lambda x: supernet(x, masks, training=True))

Each forward pass runs eagerly in training mode with every BN momentum set to
0 (so a BN's moving statistics equal its last batch statistics), and the
per-batch values are averaged; momentum is restored afterwards.
"""

import numpy as np

import keras
import tf_keras

from evonorm_tf.shadow_batch_norm import ShadowBatchNormCore

__all__ = ["batch_norm_layers", "recalibrate_batch_norm"]

_BATCH_NORM_TYPES = (tf_keras.layers.BatchNormalization, keras.layers.BatchNormalization, ShadowBatchNormCore)


def batch_norm_layers(model):
    """Every BatchNorm and Shadow BN layer inside `model` (any nesting)."""
    layers = [model] + list(model.submodules) if hasattr(model, "submodules") else [model]
    found, seen = [], set()
    for layer in layers:
        if isinstance(layer, _BATCH_NORM_TYPES) and id(layer) not in seen:
            seen.add(id(layer))
            found.append(layer)
    return found


def recalibrate_batch_norm(model, batches, forward):
    """Re-estimates the moving statistics of every BN in `model` on `batches`.

    Args:
      model: a Keras (tf_keras or Keras 3) model or layer.
      batches: an iterable of inputs for `forward`; at least one.
      forward: called eagerly as `forward(batch)`; it must run the child in
        training mode (e.g. `lambda x: model(x, masks, training=True)`). A
        traced `tf.function` would keep the momentum it was traced with.

    Returns:
      The number of batches used.
    """
    layers = batch_norm_layers(model)
    momenta = [layer.momentum for layer in layers]
    sums = [[np.zeros(layer.moving_mean.shape), np.zeros(layer.moving_variance.shape)] for layer in layers]
    count = 0
    try:
        for layer in layers:
            layer.momentum = 0.0
        for batch in batches:
            forward(batch)
            count += 1
            for layer, (mean_sum, variance_sum) in zip(layers, sums):
                mean_sum += np.asarray(layer.moving_mean, np.float64)
                variance_sum += np.asarray(layer.moving_variance, np.float64)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    if count == 0:
        raise ValueError("batches is empty: recalibration needs at least one batch")
    for layer, (mean_sum, variance_sum) in zip(layers, sums):
        layer.moving_mean.assign((mean_sum / count).astype(np.float32))
        layer.moving_variance.assign((variance_sum / count).astype(np.float32))
    return count

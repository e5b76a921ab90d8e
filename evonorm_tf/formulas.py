"""The six EvoNorms and the normalization baselines as plain TensorFlow functions.

This module is the single place where each formula is written. The Keras 3
layers (`evonorm_tf.layers`) and the tf_keras layers (`evonorm_tf.tf_keras`)
own the weights and call these functions; the layer search compiles its
graphs to the same statistics.

Notation (Liu, Brock, Simonyan, Le 2020, arXiv:2004.02967): for activations x
and per-channel vectors γ, β, v of shape `[C]`,

| layer | output |
|---|---|
| B0 | `x / max(sqrt(s2_bhw + ε), v·x + sqrt(s2_hw + ε)) · γ + β` |
| B1 | `x / max(sqrt(s2_bhw + ε), (x + 1)·sqrt(mu2_hw + ε)) · γ + β` |
| B2 | `x / max(sqrt(s2_bhw + ε), sqrt(mu2_hw + ε) − x) · γ + β` |
| S0 | `x·σ(v·x) / sqrt(s2_hwg + ε) · γ + β` |
| S1 | `x·σ(x) / sqrt(s2_hwg + ε) · γ + β` |
| S2 | `x·σ(x) / sqrt(mu2_hwg + ε) · γ + β` |

`s2_bhw` is a batch variance; the B-series functions take it as an argument
so the caller can pass either the current batch's (training) or the moving
average (inference); `evonorm_b_training` computes it from x and returns it
for the moving-average update. Every function computes in float32 and
returns float32. Statistics enter only through their roots `sqrt(stat + ε)`,
computed at any scale of x (`evonorm_tf.statistics.root`): inputs whose
squares overflow float32 (scale 1e30) give the exact, finite outputs
(docs/robustness.md).

These are the definitions: the `reference` kernel path, the fallback of the
others, and the reference of their tests. Layers run the implementation of
the kernel path they chose when built (`evonorm_tf.kernels`, `docs/kernels.md`).
"""

import tensorflow as tf

from evonorm_tf import arguments, statistics

__all__ = [
    "affine",
    "evonorm_b0",
    "evonorm_b1",
    "evonorm_b2",
    "evonorm_b_training",
    "evonorm_s0",
    "evonorm_s1",
    "evonorm_s2",
    "filter_response_norm",
    "group_norm",
    "thresholded_linear_unit",
]


def _float32(x):
    x = tf.convert_to_tensor(x)
    return x if x.dtype == tf.float32 else tf.cast(x, tf.float32)


def _channel(vector, x, data_format):
    """Broadcasts a `[C]` vector (or an already broadcastable tensor) against x."""
    vector = _float32(vector)
    if vector.shape.rank == 1:
        return statistics.broadcast_channel_vector(vector, x.shape.rank, data_format)
    return vector


def affine(x, gamma, beta, data_format="channels_last"):
    """`x·γ + β` with per-channel γ, β: the EvoNorm with `nonlinearity=False`."""
    x = _float32(x)
    return x * _channel(gamma, x, data_format) + _channel(beta, x, data_format)


def _b_series(x, right_branch, gamma, beta, batch_std, data_format):
    denominator = tf.maximum(batch_std, right_branch)
    return x / denominator * _channel(gamma, x, data_format) + _channel(beta, x, data_format)


def _batch_std(batch_variance, epsilon, x, data_format):
    return tf.sqrt(_channel(batch_variance, x, data_format) + epsilon)


def _evonorm_b(kind, x, gamma, beta, v, batch_std, epsilon, data_format):
    """A B-series output given `sqrt(s2_bhw + ε)`; instance statistics as roots, at any scale."""
    instance = statistics.instance_root(x, epsilon, data_format, centered=kind == "b0")
    if kind == "b0":
        right = _channel(v, x, data_format) * x + instance
    elif kind == "b1":
        right = (x + 1.0) * instance
    else:
        right = instance - x
    return _b_series(x, right, gamma, beta, batch_std, data_format)


def evonorm_b0(x, gamma, beta, v, batch_variance, epsilon=1e-5, data_format="channels_last"):
    """EvoNorm-B0: `x / max(sqrt(s2_bhw + ε), v·x + sqrt(s2_hw + ε)) · γ + β`.

    Args:
      x: activations of rank 3 to 5 (any float dtype; computed in float32).
      gamma, beta, v: per-channel vectors of shape `[C]`.
      batch_variance: `s2_bhw`, either `[C]` (a moving average) or keepdims
        shaped (`statistics.batch_variance(x)`).
      epsilon: added inside every square root.
      data_format: `"channels_last"` or `"channels_first"`.
    """
    x = _float32(x)
    batch_std = _batch_std(batch_variance, epsilon, x, data_format)
    return _evonorm_b("b0", x, gamma, beta, v, batch_std, epsilon, data_format)


def evonorm_b1(x, gamma, beta, batch_variance, epsilon=1e-5, data_format="channels_last"):
    """EvoNorm-B1: `x / max(sqrt(s2_bhw + ε), (x + 1)·sqrt(mu2_hw + ε)) · γ + β`."""
    x = _float32(x)
    batch_std = _batch_std(batch_variance, epsilon, x, data_format)
    return _evonorm_b("b1", x, gamma, beta, None, batch_std, epsilon, data_format)


def evonorm_b2(x, gamma, beta, batch_variance, epsilon=1e-5, data_format="channels_last"):
    """EvoNorm-B2: `x / max(sqrt(s2_bhw + ε), sqrt(mu2_hw + ε) − x) · γ + β`."""
    x = _float32(x)
    batch_std = _batch_std(batch_variance, epsilon, x, data_format)
    return _evonorm_b("b2", x, gamma, beta, None, batch_std, epsilon, data_format)


_B_KINDS = ("b0", "b1", "b2")


def evonorm_b_training(kind, x, gamma, beta, v, epsilon=1e-5, data_format="channels_last"):
    """A B-series EvoNorm in training: `(y, s2_bhw)` with the batch variance of x.

    Args:
      kind: `"b0"`, `"b1"` or `"b2"`.
      x, gamma, beta, epsilon, data_format: as `evonorm_b0`.
      v: the `[C]` vector of B0 (None for B1, B2).

    Returns:
      y (float32) and the batch variance as a `[C]` vector (for the moving
      average; no gradient flows through it, the one through y is complete).
      y uses `sqrt(s2_bhw + ε)` at any scale of x; a batch variance beyond
      float32 is returned as the largest float32 (`statistics.saturated`).
    """
    if kind not in _B_KINDS:
        raise ValueError(f"kind must be one of {sorted(_B_KINDS)}, received {kind!r}")
    x = _float32(x)
    arguments.check_data_format(data_format)
    batch_std, variance = statistics.batch_root(x, epsilon, data_format)
    y = _evonorm_b(kind, x, gamma, beta, v, batch_std, epsilon, data_format)
    return y, tf.stop_gradient(tf.reshape(variance, [-1]))


def _s_series(x, numerator, inverse_root, gamma, beta, data_format):
    scale = inverse_root * _channel(gamma, x, data_format)
    return numerator * scale + _channel(beta, x, data_format)


def evonorm_s0(x, gamma, beta, v, groups, epsilon=1e-5, data_format="channels_last"):
    """EvoNorm-S0: `x·σ(v·x) / sqrt(s2_hwg + ε) · γ + β` with `groups` channel groups."""
    x = _float32(x)
    numerator = x * tf.sigmoid(_channel(v, x, data_format) * x)
    inverse = statistics.group_root(x, groups, epsilon, data_format, inverse=True)
    return _s_series(x, numerator, inverse, gamma, beta, data_format)


def evonorm_s1(x, gamma, beta, groups, epsilon=1e-5, data_format="channels_last"):
    """EvoNorm-S1: `x·σ(x) / sqrt(s2_hwg + ε) · γ + β`."""
    x = _float32(x)
    inverse = statistics.group_root(x, groups, epsilon, data_format, inverse=True)
    return _s_series(x, x * tf.sigmoid(x), inverse, gamma, beta, data_format)


def evonorm_s2(x, gamma, beta, groups, epsilon=1e-5, data_format="channels_last"):
    """EvoNorm-S2: `x·σ(x) / sqrt(mu2_hwg + ε) · γ + β`."""
    x = _float32(x)
    inverse = statistics.group_root(x, groups, epsilon, data_format, centered=False, inverse=True)
    return _s_series(x, x * tf.sigmoid(x), inverse, gamma, beta, data_format)


def group_norm(x, gamma, beta, groups, epsilon=1e-5, data_format="channels_last"):
    """GroupNorm (Wu & He 2018): `(x − mean_hwg) / sqrt(s2_hwg + ε) · γ + β`."""
    x = _float32(x)
    mean = statistics.group_moments(x, groups, data_format)[0]
    inverse = statistics.group_root(x, groups, epsilon, data_format, inverse=True)
    return _s_series(x, x - mean, inverse, gamma, beta, data_format)


def filter_response_norm(x, gamma, beta, epsilon=1e-5, data_format="channels_last"):
    """Filter Response Normalization (Singh & Krishnan 2020): `γ·x / sqrt(mu2_hw + ε) + β`."""
    x = _float32(x)
    inverse = statistics.instance_root(x, epsilon, data_format, centered=False, inverse=True)
    return _s_series(x, x, inverse, gamma, beta, data_format)


def thresholded_linear_unit(y, tau, data_format="channels_last"):
    """TLU: `max(y, τ)` with a learned per-channel threshold τ."""
    y = _float32(y)
    return tf.maximum(y, _channel(tau, y, data_format))

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
returns float32.

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


def _b_series(x, numerator, right_branch, gamma, beta, batch_variance, epsilon, data_format):
    batch_std = tf.sqrt(_channel(batch_variance, x, data_format) + epsilon)
    denominator = tf.maximum(batch_std, right_branch)
    return numerator / denominator * _channel(gamma, x, data_format) + _channel(beta, x, data_format)


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
    instance_std = tf.sqrt(statistics.instance_variance(x, data_format) + epsilon)
    right = _channel(v, x, data_format) * x + instance_std
    return _b_series(x, x, right, gamma, beta, batch_variance, epsilon, data_format)


def evonorm_b1(x, gamma, beta, batch_variance, epsilon=1e-5, data_format="channels_last"):
    """EvoNorm-B1: `x / max(sqrt(s2_bhw + ε), (x + 1)·sqrt(mu2_hw + ε)) · γ + β`."""
    x = _float32(x)
    instance_rms = tf.sqrt(statistics.instance_second_moment(x, data_format) + epsilon)
    right = (x + 1.0) * instance_rms
    return _b_series(x, x, right, gamma, beta, batch_variance, epsilon, data_format)


def evonorm_b2(x, gamma, beta, batch_variance, epsilon=1e-5, data_format="channels_last"):
    """EvoNorm-B2: `x / max(sqrt(s2_bhw + ε), sqrt(mu2_hw + ε) − x) · γ + β`."""
    x = _float32(x)
    instance_rms = tf.sqrt(statistics.instance_second_moment(x, data_format) + epsilon)
    right = instance_rms - x
    return _b_series(x, x, right, gamma, beta, batch_variance, epsilon, data_format)


_B_FORMULAS = {"b0": evonorm_b0, "b1": evonorm_b1, "b2": evonorm_b2}



def evonorm_b_training(kind, x, gamma, beta, v, epsilon=1e-5, data_format="channels_last"):
    """A B-series EvoNorm in training: `(y, s2_bhw)` with the batch variance of x.

    Args:
      kind: `"b0"`, `"b1"` or `"b2"`.
      x, gamma, beta, epsilon, data_format: as `evonorm_b0`.
      v: the `[C]` vector of B0 (None for B1, B2).

    Returns:
      y (float32) and the batch variance as a `[C]` vector (for the moving
      average; no gradient flows through it, the one through y is complete).
    """
    if kind not in _B_FORMULAS:
        raise ValueError(f"kind must be one of {sorted(_B_FORMULAS)}, received {kind!r}")
    x = _float32(x)
    arguments.check_data_format(data_format)
    variance = statistics.batch_variance(x, data_format)
    extra = (v,) if kind == "b0" else ()
    y = _B_FORMULAS[kind](x, gamma, beta, *extra, variance, epsilon, data_format)
    return y, tf.stop_gradient(tf.reshape(variance, [-1]))


def _s_series(x, numerator, group_statistic, gamma, beta, epsilon, data_format):
    scale = tf.math.rsqrt(group_statistic + epsilon) * _channel(gamma, x, data_format)
    return numerator * scale + _channel(beta, x, data_format)


def evonorm_s0(x, gamma, beta, v, groups, epsilon=1e-5, data_format="channels_last"):
    """EvoNorm-S0: `x·σ(v·x) / sqrt(s2_hwg + ε) · γ + β` with `groups` channel groups."""
    x = _float32(x)
    numerator = x * tf.sigmoid(_channel(v, x, data_format) * x)
    variance = statistics.group_variance(x, groups, data_format)
    return _s_series(x, numerator, variance, gamma, beta, epsilon, data_format)


def evonorm_s1(x, gamma, beta, groups, epsilon=1e-5, data_format="channels_last"):
    """EvoNorm-S1: `x·σ(x) / sqrt(s2_hwg + ε) · γ + β`."""
    x = _float32(x)
    variance = statistics.group_variance(x, groups, data_format)
    return _s_series(x, x * tf.sigmoid(x), variance, gamma, beta, epsilon, data_format)


def evonorm_s2(x, gamma, beta, groups, epsilon=1e-5, data_format="channels_last"):
    """EvoNorm-S2: `x·σ(x) / sqrt(mu2_hwg + ε) · γ + β`."""
    x = _float32(x)
    second_moment = statistics.group_second_moment(x, groups, data_format)
    return _s_series(x, x * tf.sigmoid(x), second_moment, gamma, beta, epsilon, data_format)



def group_norm(x, gamma, beta, groups, epsilon=1e-5, data_format="channels_last"):
    """GroupNorm (Wu & He 2018): `(x − mean_hwg) / sqrt(s2_hwg + ε) · γ + β`."""
    x = _float32(x)
    mean, variance = statistics.group_moments(x, groups, data_format)
    return _s_series(x, x - mean, variance, gamma, beta, epsilon, data_format)


def filter_response_norm(x, gamma, beta, epsilon=1e-5, data_format="channels_last"):
    """Filter Response Normalization (Singh & Krishnan 2020): `γ·x / sqrt(mu2_hw + ε) + β`."""
    x = _float32(x)
    second_moment = statistics.instance_second_moment(x, data_format)
    return _s_series(x, x, second_moment, gamma, beta, epsilon, data_format)


def thresholded_linear_unit(y, tau, data_format="channels_last"):
    """TLU: `max(y, τ)` with a learned per-channel threshold τ."""
    y = _float32(y)
    return tf.maximum(y, _channel(tau, y, data_format))

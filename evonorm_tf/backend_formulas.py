"""The formulas and statistics in `keras.ops`: the Keras 3 layers on JAX and PyTorch.

`evonorm_tf.formulas` and `evonorm_tf.statistics` define every norm-act in
TensorFlow; the tf_keras layers and the Keras 3 layers on the TensorFlow
backend run them (or a faster kernel, `evonorm_tf.kernels`). On the JAX and
PyTorch backends a TensorFlow op cannot sit inside the model's program, so
the Keras 3 layers run these functions instead: the same formulas, the same
arguments and return values, written in `keras.ops` (which dispatches to the
process's `KERAS_BACKEND`).

Every function computes in float32 whatever the input dtype and returns
float32. Variances are biased and computed in two passes (mean, then mean
squared deviation). Statistics keep their reduced axes (keepdims), so they
broadcast against x; group statistics are repeated over the channels of
their group.

Batch statistics are those of the array the function sees: under a JAX
`keras.distribution` (data parallel) that is the global batch, so the
B-series statistics are synchronized over devices, as Keras's own
`BatchNormalization` on JAX.
"""

from keras import ops

from evonorm_tf import arguments

#: The formulas of `evonorm_tf.formulas.__all__`, in `keras.ops`.
FORMULAS = (
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
)

__all__ = FORMULAS + (
    "batch_moments",
    "group_moments",
    "group_second_moment",
    "instance_second_moment",
    "instance_variance",
    "shadow_batch_norm",
)


# -- statistics ------------------------------------------------------------------------


def _float32(x):
    return ops.cast(x, "float32")


def _rank(x):
    return len(ops.shape(x))


def _spatial_axes(rank, data_format):
    if data_format == "channels_last":
        return tuple(range(1, rank - 1))
    return tuple(range(2, rank))


def _moments(x, axes):
    mean = ops.mean(x, axis=axes, keepdims=True)
    return mean, ops.mean(ops.square(x - mean), axis=axes, keepdims=True)


def _channel(vector, rank, data_format):
    """A `[C]` vector reshaped to broadcast against a rank-`rank` activation."""
    vector = _float32(vector)
    if data_format == "channels_last" or _rank(vector) != 1:
        return vector
    return ops.reshape(vector, (-1,) + (1,) * (rank - 2))


def batch_moments(x, data_format="channels_last"):
    """Per-channel mean and variance over (N, *spatial), keepdims, float32."""
    arguments.check_data_format(data_format)
    x = _float32(x)
    return _moments(x, (0,) + _spatial_axes(_rank(x), data_format))


def instance_variance(x, data_format="channels_last"):
    """`s2_hw`: per-sample, per-channel variance over the spatial axes."""
    arguments.check_data_format(data_format)
    x = _float32(x)
    return _moments(x, _spatial_axes(_rank(x), data_format))[1]


def instance_second_moment(x, data_format="channels_last"):
    """`mu2_hw`: per-sample, per-channel mean of x² over the spatial axes."""
    arguments.check_data_format(data_format)
    x = _float32(x)
    return ops.mean(ops.square(x), axis=_spatial_axes(_rank(x), data_format), keepdims=True)


def _group_statistics(x, groups, data_format, second_moment_only):
    """Group statistics over (*spatial, C/G), each repeated over its group's channels."""
    arguments.check_data_format(data_format)
    x = _float32(x)
    shape = tuple(ops.shape(x))
    rank = len(shape)
    if data_format == "channels_last":
        channels = shape[-1]
        grouped_shape = (-1,) + shape[1:-1] + (groups, channels // groups)
        axes = tuple(range(1, rank - 1)) + (rank,)
    else:
        channels = shape[1]
        grouped_shape = (-1, groups, channels // groups) + shape[2:]
        axes = tuple(range(2, rank + 1))
    arguments.check_groups_divide(groups, channels)
    grouped = ops.reshape(x, grouped_shape)
    if second_moment_only:
        statistics = (ops.mean(ops.square(grouped), axis=axes, keepdims=True),)
    else:
        statistics = _moments(grouped, axes)
    # [N, 1.., G, 1] → [N, 1.., G, C/G] → [N, 1.., C]; channels_first [N, G, 1, 1..] alike.
    within_group_axis = -1 if data_format == "channels_last" else 2
    if data_format == "channels_last":
        per_channel = (-1,) + (1,) * (rank - 2) + (channels,)
    else:
        per_channel = (-1, channels) + (1,) * (rank - 2)

    def to_channels(statistic):
        target = list(ops.shape(statistic))
        target[within_group_axis] = channels // groups
        return ops.reshape(ops.broadcast_to(statistic, tuple(target)), per_channel)

    return tuple(to_channels(statistic) for statistic in statistics)


def group_moments(x, groups, data_format="channels_last"):
    """Per-sample mean and variance over (*spatial, C/G) for G groups, per channel."""
    return _group_statistics(x, groups, data_format, second_moment_only=False)


def group_second_moment(x, groups, data_format="channels_last"):
    """`mu2_hwg`: per-sample mean of x² over (*spatial, C/G), per channel."""
    return _group_statistics(x, groups, data_format, second_moment_only=True)[0]


# -- formulas (the docstrings of `evonorm_tf.formulas` apply) --------------------------


def affine(x, gamma, beta, data_format="channels_last"):
    """`x·γ + β` with per-channel γ, β: the EvoNorm with `nonlinearity=False`."""
    x = _float32(x)
    rank = _rank(x)
    return x * _channel(gamma, rank, data_format) + _channel(beta, rank, data_format)


def _b_series(x, right_branch, gamma, beta, batch_variance, epsilon, data_format):
    rank = _rank(x)
    batch_std = ops.sqrt(_channel(batch_variance, rank, data_format) + epsilon)
    denominator = ops.maximum(batch_std, right_branch)
    return x / denominator * _channel(gamma, rank, data_format) + _channel(beta, rank, data_format)


def evonorm_b0(x, gamma, beta, v, batch_variance, epsilon=1e-5, data_format="channels_last"):
    """EvoNorm-B0: `x / max(sqrt(s2_bhw + ε), v·x + sqrt(s2_hw + ε)) · γ + β`."""
    x = _float32(x)
    instance_std = ops.sqrt(instance_variance(x, data_format) + epsilon)
    right = _channel(v, _rank(x), data_format) * x + instance_std
    return _b_series(x, right, gamma, beta, batch_variance, epsilon, data_format)


def evonorm_b1(x, gamma, beta, batch_variance, epsilon=1e-5, data_format="channels_last"):
    """EvoNorm-B1: `x / max(sqrt(s2_bhw + ε), (x + 1)·sqrt(mu2_hw + ε)) · γ + β`."""
    x = _float32(x)
    right = (x + 1.0) * ops.sqrt(instance_second_moment(x, data_format) + epsilon)
    return _b_series(x, right, gamma, beta, batch_variance, epsilon, data_format)


def evonorm_b2(x, gamma, beta, batch_variance, epsilon=1e-5, data_format="channels_last"):
    """EvoNorm-B2: `x / max(sqrt(s2_bhw + ε), sqrt(mu2_hw + ε) − x) · γ + β`."""
    x = _float32(x)
    right = ops.sqrt(instance_second_moment(x, data_format) + epsilon) - x
    return _b_series(x, right, gamma, beta, batch_variance, epsilon, data_format)


_B_FORMULAS = {"b0": evonorm_b0, "b1": evonorm_b1, "b2": evonorm_b2}


def evonorm_b_training(kind, x, gamma, beta, v, epsilon=1e-5, data_format="channels_last"):
    """A B-series EvoNorm in training: `(y, s2_bhw)`, the variance a `[C]` vector without gradient."""
    if kind not in _B_FORMULAS:
        raise ValueError(f"kind must be one of {sorted(_B_FORMULAS)}, received {kind!r}")
    x = _float32(x)
    variance = batch_moments(x, data_format)[1]
    extra = (v,) if kind == "b0" else ()
    y = _B_FORMULAS[kind](x, gamma, beta, *extra, variance, epsilon, data_format)
    return y, ops.stop_gradient(ops.reshape(variance, (-1,)))


def _s_series(x, numerator, group_statistic, gamma, beta, epsilon, data_format):
    rank = _rank(x)
    scale = ops.rsqrt(group_statistic + epsilon) * _channel(gamma, rank, data_format)
    return numerator * scale + _channel(beta, rank, data_format)


def evonorm_s0(x, gamma, beta, v, groups, epsilon=1e-5, data_format="channels_last"):
    """EvoNorm-S0: `x·σ(v·x) / sqrt(s2_hwg + ε) · γ + β` with `groups` channel groups."""
    x = _float32(x)
    numerator = x * ops.sigmoid(_channel(v, _rank(x), data_format) * x)
    variance = group_moments(x, groups, data_format)[1]
    return _s_series(x, numerator, variance, gamma, beta, epsilon, data_format)


def evonorm_s1(x, gamma, beta, groups, epsilon=1e-5, data_format="channels_last"):
    """EvoNorm-S1: `x·σ(x) / sqrt(s2_hwg + ε) · γ + β`."""
    x = _float32(x)
    variance = group_moments(x, groups, data_format)[1]
    return _s_series(x, x * ops.sigmoid(x), variance, gamma, beta, epsilon, data_format)


def evonorm_s2(x, gamma, beta, groups, epsilon=1e-5, data_format="channels_last"):
    """EvoNorm-S2: `x·σ(x) / sqrt(mu2_hwg + ε) · γ + β`."""
    x = _float32(x)
    second_moment = group_second_moment(x, groups, data_format)
    return _s_series(x, x * ops.sigmoid(x), second_moment, gamma, beta, epsilon, data_format)


def group_norm(x, gamma, beta, groups, epsilon=1e-5, data_format="channels_last"):
    """GroupNorm (Wu & He 2018): `(x − mean_hwg) / sqrt(s2_hwg + ε) · γ + β`."""
    x = _float32(x)
    mean, variance = group_moments(x, groups, data_format)
    return _s_series(x, x - mean, variance, gamma, beta, epsilon, data_format)


def filter_response_norm(x, gamma, beta, epsilon=1e-5, data_format="channels_last"):
    """Filter Response Normalization (Singh & Krishnan 2020): `γ·x / sqrt(mu2_hw + ε) + β`."""
    x = _float32(x)
    second_moment = instance_second_moment(x, data_format)
    return _s_series(x, x, second_moment, gamma, beta, epsilon, data_format)


def thresholded_linear_unit(y, tau, data_format="channels_last"):
    """TLU: `max(y, τ)` with a learned per-channel threshold τ."""
    y = _float32(y)
    return ops.maximum(y, _channel(tau, _rank(y), data_format))


def shadow_batch_norm(x, mean, variance, gamma, beta, epsilon=1e-5, data_format="channels_last"):
    """Shadow BN's `(x − mean) / sqrt(variance + ε) · γ + β` with `[C]` statistics and weights."""
    x = _float32(x)
    rank = _rank(x)
    scale = _float32(gamma) * ops.rsqrt(_float32(variance) + epsilon)
    offset = _float32(beta) - _float32(mean) * scale
    return x * _channel(scale, rank, data_format) + _channel(offset, rank, data_format)

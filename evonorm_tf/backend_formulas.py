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

As in `evonorm_tf.statistics`, the formulas use a statistic of squares only
through its root `sqrt(stat + ε)`, computed at any scale of x: every mean of
squares is also taken of the values times `statistics.DOWNSCALE` (2⁻⁸⁰) in
the same pass and used exactly where the plain one overflows float32
(`root`, `inverse_root`), and a batch variance beyond float32 is returned
as the largest float32 (`saturated`). Inputs of scale 1e30 or 1e-30 give the
float64 reference's outputs and finite gradients (`docs/robustness.md`).

Batch statistics are those of the array the function sees: under a JAX
`keras.distribution` (data parallel) that is the global batch, so the
B-series statistics are synchronized over devices, as Keras's own
`BatchNormalization` on JAX.
"""

from keras import ops

from evonorm_tf import arguments, formulas
from evonorm_tf.statistics import DOWNSCALE, FLOAT32_MAX

#: The formulas of `evonorm_tf.formulas.__all__`, in `keras.ops` (the same names).
FORMULAS = tuple(formulas.__all__)

__all__ = FORMULAS + (
    "as_float32",
    "batch_moments",
    "batch_norm_moments",
    "batch_root",
    "channel_vector",
    "group_moments",
    "group_root",
    "group_second_moment",
    "instance_root",
    "instance_second_moment",
    "instance_variance",
    "inverse_root",
    "mean_squares",
    "root",
    "saturated",
    "shadow_batch_norm",
    "spatial_axes",
)


# -- statistics ------------------------------------------------------------------------


def as_float32(x):
    """x as float32 (statistics are float32 whatever the compute dtype)."""
    return ops.cast(x, "float32")


def _rank(x):
    return len(ops.shape(x))


def spatial_axes(rank, data_format):
    """The spatial axes of a rank-`rank` activation in `data_format`."""
    if data_format == "channels_last":
        return tuple(range(1, rank - 1))
    return tuple(range(2, rank))


def _moments(x, axes):
    mean = ops.mean(x, axis=axes, keepdims=True)
    return mean, ops.mean(ops.square(x - mean), axis=axes, keepdims=True)


def channel_vector(vector, rank, data_format):
    """A `[C]` vector reshaped to broadcast against a rank-`rank` activation."""
    vector = as_float32(vector)
    if data_format == "channels_last" or _rank(vector) != 1:
        return vector
    return ops.reshape(vector, (-1,) + (1,) * (rank - 2))


def batch_moments(x, data_format="channels_last"):
    """Per-channel mean and variance over (N, *spatial), keepdims, float32."""
    arguments.check_data_format(data_format)
    x = as_float32(x)
    return _moments(x, (0,) + spatial_axes(_rank(x), data_format))


def instance_variance(x, data_format="channels_last"):
    """`s2_hw`: per-sample, per-channel variance over the spatial axes."""
    arguments.check_data_format(data_format)
    x = as_float32(x)
    return _moments(x, spatial_axes(_rank(x), data_format))[1]


def instance_second_moment(x, data_format="channels_last"):
    """`mu2_hw`: per-sample, per-channel mean of x² over the spatial axes."""
    arguments.check_data_format(data_format)
    x = as_float32(x)
    return ops.mean(ops.square(x), axis=spatial_axes(_rank(x), data_format), keepdims=True)


def _grouped(x, groups, data_format):
    """x as `[N, *spatial, G, C/G]` (or `[N, G, C/G, *spatial]`), the axes of one group, and a
    function repeating a keepdims group statistic over its group's channels (`[N, 1.., C]`)."""
    arguments.check_data_format(data_format)
    shape = tuple(ops.shape(x))
    rank = len(shape)
    if data_format == "channels_last":
        channels = shape[-1]
        grouped_shape = (-1,) + shape[1:-1] + (groups, channels // groups)
        axes = tuple(range(1, rank - 1)) + (rank,)
        per_channel = (-1,) + (1,) * (rank - 2) + (channels,)
    else:
        channels = shape[1]
        grouped_shape = (-1, groups, channels // groups) + shape[2:]
        axes = tuple(range(2, rank + 1))
        per_channel = (-1, channels) + (1,) * (rank - 2)
    arguments.check_groups_divide(groups, channels)
    # [N, 1.., G, 1] → [N, 1.., G, C/G] → [N, 1.., C]; channels_first [N, G, 1, 1..] alike.
    within_group_axis = -1 if data_format == "channels_last" else 2

    def to_channels(statistic):
        target = list(ops.shape(statistic))
        target[within_group_axis] = channels // groups
        return ops.reshape(ops.broadcast_to(statistic, tuple(target)), per_channel)

    return ops.reshape(x, grouped_shape), axes, to_channels


def group_moments(x, groups, data_format="channels_last"):
    """Per-sample mean and variance over (*spatial, C/G) for G groups, per channel."""
    grouped, axes, to_channels = _grouped(as_float32(x), groups, data_format)
    return tuple(to_channels(statistic) for statistic in _moments(grouped, axes))


def group_second_moment(x, groups, data_format="channels_last"):
    """`mu2_hwg`: per-sample mean of x² over (*spatial, C/G), per channel."""
    grouped, axes, to_channels = _grouped(as_float32(x), groups, data_format)
    return to_channels(ops.mean(ops.square(grouped), axis=axes, keepdims=True))


# -- roots of statistics of squares, at any scale (`evonorm_tf.statistics`) -------------


def mean_squares(d, axes):
    """`(mean of d², mean of (d·DOWNSCALE)²)` over `axes`, keepdims, float32.

    The first is inf where float32 overflows; the second, `DOWNSCALE²` times
    the first, is finite for every finite d and used only there (`root`).
    """
    d = as_float32(d)
    plain = ops.mean(ops.square(d), axis=axes, keepdims=True)
    small = ops.mean(ops.square(d * DOWNSCALE), axis=axes, keepdims=True)
    return plain, small


def _overflowed(statistic, small):
    """The overflow mask and each input with a harmless value where it is not used."""
    overflow = ops.logical_not(ops.isfinite(statistic))
    return (overflow, ops.where(overflow, ops.zeros_like(statistic), statistic),
            ops.where(overflow, small, ops.ones_like(small)))


def root(statistic, small, epsilon):
    """`sqrt(statistic + ε)`; where `statistic` overflowed, `sqrt(small)/DOWNSCALE`.

    Gradients flow through the branch used; the other is fed a harmless
    value, so no NaN.
    """
    overflow, plain, scaled = _overflowed(statistic, small)
    return ops.where(overflow, ops.sqrt(scaled) * (1.0 / DOWNSCALE), ops.sqrt(plain + epsilon))


def inverse_root(statistic, small, epsilon):
    """`1 / sqrt(statistic + ε)`, as `root` where `statistic` overflowed.

    Its gradient, unlike that of `1 / root`, has no factor 1/root², which is
    below float32 at scale 1e30.
    """
    overflow, plain, scaled = _overflowed(statistic, small)
    return ops.where(overflow, ops.rsqrt(scaled) * DOWNSCALE, ops.rsqrt(plain + epsilon))


def saturated(statistic, small):
    """`statistic` where finite, else `small/DOWNSCALE²` clipped to `FLOAT32_MAX`."""
    restored = ops.minimum(small * (1.0 / DOWNSCALE), FLOAT32_MAX * DOWNSCALE) * (1.0 / DOWNSCALE)
    return ops.where(ops.isfinite(statistic), statistic, restored)


def _centered_mean_squares(x, axes, centered):
    if centered:
        x = x - ops.stop_gradient(ops.mean(x, axis=axes, keepdims=True))
    return mean_squares(x, axes)


def batch_root(x, epsilon, data_format="channels_last"):
    """`(sqrt(s2_bhw + ε), s2_bhw saturated)` per channel, keepdims, at any scale of x."""
    arguments.check_data_format(data_format)
    x = as_float32(x)
    statistic, small = _centered_mean_squares(x, (0,) + spatial_axes(_rank(x), data_format), True)
    return root(statistic, small, epsilon), saturated(statistic, small)


def batch_norm_moments(x, axes):
    """`(mean, variance)` over `axes` without keepdims, for Keras's `BatchNormalization`.

    Two passes; a variance beyond float32 is the largest float32 (`saturated`),
    so it neither becomes NaN nor inf.
    """
    x = as_float32(x)
    axes = tuple(axes)
    mean = ops.mean(x, axis=axes, keepdims=True)
    variance = saturated(*mean_squares(x - mean, axes))
    return ops.squeeze(mean, axis=axes), ops.squeeze(variance, axis=axes)


def instance_root(x, epsilon, data_format="channels_last", centered=True, inverse=False):
    """`sqrt(s2_hw + ε)` (`centered`) or `sqrt(mu2_hw + ε)`, per sample and channel, at any scale.

    `inverse=True` gives `1 / sqrt(...)` (`inverse_root`).
    """
    arguments.check_data_format(data_format)
    x = as_float32(x)
    statistic = _centered_mean_squares(x, spatial_axes(_rank(x), data_format), centered)
    return (inverse_root if inverse else root)(*statistic, epsilon)


def group_root(x, groups, epsilon, data_format="channels_last", centered=True, inverse=False):
    """`sqrt(s2_hwg + ε)` (`centered`) or `sqrt(mu2_hwg + ε)` per sample and group, at any scale.

    Repeated over the channels of each group; `inverse=True` gives `1 / sqrt(...)`.
    """
    grouped, axes, to_channels = _grouped(as_float32(x), groups, data_format)
    statistic = _centered_mean_squares(grouped, axes, centered)
    return to_channels((inverse_root if inverse else root)(*statistic, epsilon))


# -- formulas (the docstrings of `evonorm_tf.formulas` apply) --------------------------


def affine(x, gamma, beta, data_format="channels_last"):
    """`x·γ + β` with per-channel γ, β: the EvoNorm with `nonlinearity=False`."""
    x = as_float32(x)
    rank = _rank(x)
    return x * channel_vector(gamma, rank, data_format) + channel_vector(beta, rank, data_format)


def _b_series(x, right_branch, gamma, beta, batch_std, data_format):
    rank = _rank(x)
    denominator = ops.maximum(batch_std, right_branch)
    return x / denominator * channel_vector(gamma, rank, data_format) + channel_vector(beta, rank, data_format)


def _evonorm_b(kind, x, gamma, beta, v, batch_std, epsilon, data_format):
    """A B-series output given `sqrt(s2_bhw + ε)`; instance statistics as roots, at any scale."""
    instance = instance_root(x, epsilon, data_format, centered=kind == "b0")
    if kind == "b0":
        right = channel_vector(v, _rank(x), data_format) * x + instance
    elif kind == "b1":
        right = (x + 1.0) * instance
    else:
        right = instance - x
    return _b_series(x, right, gamma, beta, batch_std, data_format)


def _batch_std(batch_variance, epsilon, x, data_format):
    return ops.sqrt(channel_vector(batch_variance, _rank(x), data_format) + epsilon)


def evonorm_b0(x, gamma, beta, v, batch_variance, epsilon=1e-5, data_format="channels_last"):
    """EvoNorm-B0: `x / max(sqrt(s2_bhw + ε), v·x + sqrt(s2_hw + ε)) · γ + β`."""
    x = as_float32(x)
    batch_std = _batch_std(batch_variance, epsilon, x, data_format)
    return _evonorm_b("b0", x, gamma, beta, v, batch_std, epsilon, data_format)


def evonorm_b1(x, gamma, beta, batch_variance, epsilon=1e-5, data_format="channels_last"):
    """EvoNorm-B1: `x / max(sqrt(s2_bhw + ε), (x + 1)·sqrt(mu2_hw + ε)) · γ + β`."""
    x = as_float32(x)
    batch_std = _batch_std(batch_variance, epsilon, x, data_format)
    return _evonorm_b("b1", x, gamma, beta, None, batch_std, epsilon, data_format)


def evonorm_b2(x, gamma, beta, batch_variance, epsilon=1e-5, data_format="channels_last"):
    """EvoNorm-B2: `x / max(sqrt(s2_bhw + ε), sqrt(mu2_hw + ε) − x) · γ + β`."""
    x = as_float32(x)
    batch_std = _batch_std(batch_variance, epsilon, x, data_format)
    return _evonorm_b("b2", x, gamma, beta, None, batch_std, epsilon, data_format)


_B_KINDS = ("b0", "b1", "b2")


def evonorm_b_training(kind, x, gamma, beta, v, epsilon=1e-5, data_format="channels_last"):
    """A B-series EvoNorm in training: `(y, s2_bhw)`, the variance a `[C]` vector without gradient.

    y uses `sqrt(s2_bhw + ε)` at any scale of x; a batch variance beyond
    float32 is returned as the largest float32 (`saturated`).
    """
    if kind not in _B_KINDS:
        raise ValueError(f"kind must be one of {sorted(_B_KINDS)}, received {kind!r}")
    x = as_float32(x)
    batch_std, variance = batch_root(x, epsilon, data_format)
    y = _evonorm_b(kind, x, gamma, beta, v, batch_std, epsilon, data_format)
    return y, ops.stop_gradient(ops.reshape(variance, (-1,)))


def _s_series(x, numerator, inverse, gamma, beta, data_format):
    rank = _rank(x)
    scale = inverse * channel_vector(gamma, rank, data_format)
    return numerator * scale + channel_vector(beta, rank, data_format)


def evonorm_s0(x, gamma, beta, v, groups, epsilon=1e-5, data_format="channels_last"):
    """EvoNorm-S0: `x·σ(v·x) / sqrt(s2_hwg + ε) · γ + β` with `groups` channel groups."""
    x = as_float32(x)
    numerator = x * ops.sigmoid(channel_vector(v, _rank(x), data_format) * x)
    inverse = group_root(x, groups, epsilon, data_format, inverse=True)
    return _s_series(x, numerator, inverse, gamma, beta, data_format)


def evonorm_s1(x, gamma, beta, groups, epsilon=1e-5, data_format="channels_last"):
    """EvoNorm-S1: `x·σ(x) / sqrt(s2_hwg + ε) · γ + β`."""
    x = as_float32(x)
    inverse = group_root(x, groups, epsilon, data_format, inverse=True)
    return _s_series(x, x * ops.sigmoid(x), inverse, gamma, beta, data_format)


def evonorm_s2(x, gamma, beta, groups, epsilon=1e-5, data_format="channels_last"):
    """EvoNorm-S2: `x·σ(x) / sqrt(mu2_hwg + ε) · γ + β`."""
    x = as_float32(x)
    inverse = group_root(x, groups, epsilon, data_format, centered=False, inverse=True)
    return _s_series(x, x * ops.sigmoid(x), inverse, gamma, beta, data_format)


def group_norm(x, gamma, beta, groups, epsilon=1e-5, data_format="channels_last"):
    """GroupNorm (Wu & He 2018): `(x − mean_hwg) / sqrt(s2_hwg + ε) · γ + β`."""
    x = as_float32(x)
    grouped, axes, to_channels = _grouped(x, groups, data_format)
    mean = to_channels(ops.mean(grouped, axis=axes, keepdims=True))
    inverse = group_root(x, groups, epsilon, data_format, inverse=True)
    return _s_series(x, x - mean, inverse, gamma, beta, data_format)


def filter_response_norm(x, gamma, beta, epsilon=1e-5, data_format="channels_last"):
    """Filter Response Normalization (Singh & Krishnan 2020): `γ·x / sqrt(mu2_hw + ε) + β`."""
    x = as_float32(x)
    inverse = instance_root(x, epsilon, data_format, centered=False, inverse=True)
    return _s_series(x, x, inverse, gamma, beta, data_format)


def thresholded_linear_unit(y, tau, data_format="channels_last"):
    """TLU: `max(y, τ)` with a learned per-channel threshold τ."""
    y = as_float32(y)
    return ops.maximum(y, channel_vector(tau, _rank(y), data_format))


def shadow_batch_norm(x, mean, variance, gamma, beta, epsilon=1e-5, data_format="channels_last"):
    """Shadow BN's `(x − mean) / sqrt(variance + ε) · γ + β` with `[C]` statistics and weights."""
    x = as_float32(x)
    rank = _rank(x)
    scale = as_float32(gamma) * ops.rsqrt(as_float32(variance) + epsilon)
    offset = as_float32(beta) - as_float32(mean) * scale
    return x * channel_vector(scale, rank, data_format) + channel_vector(offset, rank, data_format)

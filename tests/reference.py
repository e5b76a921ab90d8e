"""An independent NumPy float64 reference of every norm-act layer.

Written from the formulas of the papers (Liu, Brock, Simonyan, Le 2020,
arXiv:2004.02967; Wu & He 2018; Singh & Krishnan 2020; Ioffe & Szegedy 2015),
not from `evonorm_tf`, which this module never imports. The tests compare the
float32 TensorFlow layers against it.

Every function takes channels_last float64 arrays `[N, *spatial, C]` and
per-channel vectors of shape `[C]`; channels_first data is converted with
`to_channels_last` / `to_channels_first`. Every variance is the biased
(population) variance; ε is added inside every square root.
"""

import numpy as np

B_SERIES = ("evonorm_b0", "evonorm_b1", "evonorm_b2")
S_SERIES = ("evonorm_s0", "evonorm_s1", "evonorm_s2")
GROUP_NORMS = ("gn_relu", "gn_silu")
BATCH_NORMS = ("bn_relu", "bn_silu")
ALL_NAMES = BATCH_NORMS + GROUP_NORMS + ("frn_tlu",) + B_SERIES + S_SERIES


def to_channels_last(x):
    return np.moveaxis(x, 1, -1)


def to_channels_first(x):
    return np.moveaxis(x, -1, 1)


def _spatial_axes(x):
    return tuple(range(1, x.ndim - 1))


# -- statistics ----------------------------------------------------------------------


def batch_mean(x):
    """Per-channel mean over (N, *spatial), shape `[C]`."""
    return x.mean(axis=(0,) + _spatial_axes(x))


def batch_variance(x):
    """`s2_bhw`: per-channel biased variance over (N, *spatial), shape `[C]`."""
    return x.var(axis=(0,) + _spatial_axes(x))


def instance_variance(x):
    """`s2_hw`: per-sample, per-channel biased variance over the spatial axes."""
    return x.var(axis=_spatial_axes(x), keepdims=True)


def instance_second_moment(x):
    """`mu2_hw`: per-sample, per-channel mean of x² over the spatial axes."""
    return np.mean(x * x, axis=_spatial_axes(x), keepdims=True)


def _per_group(x, groups, statistic):
    """`statistic(values, axis, keepdims)` over (*spatial, C/G) per sample and group,
    repeated over the channels of the group: shape `[N, 1, ..., 1, C]`."""
    channels = x.shape[-1]
    assert channels % groups == 0, (channels, groups)
    grouped = x.reshape(x.shape[:-1] + (groups, channels // groups))
    axes = tuple(range(1, x.ndim - 1)) + (x.ndim,)
    per_group = statistic(grouped, axis=axes, keepdims=True)  # [N, 1, ..., 1, G, 1]
    per_channel = np.repeat(per_group, channels // groups, axis=-1)
    return per_channel.reshape((x.shape[0],) + (1,) * (x.ndim - 2) + (channels,))


def group_mean(x, groups):
    return _per_group(x, groups, np.mean)


def group_variance(x, groups):
    """`s2_hwg`: biased variance over (*spatial, C/G) per sample and group."""
    return _per_group(x, groups, np.var)


def group_second_moment(x, groups):
    """`mu2_hwg`: mean of x² over (*spatial, C/G) per sample and group."""
    return _per_group(x, groups, lambda values, **kwargs: np.mean(values * values, **kwargs))


# -- activations ---------------------------------------------------------------------


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def relu(x):
    return np.maximum(x, 0.0)


def silu(x):
    return x * sigmoid(x)


# -- EvoNorms (arXiv:2004.02967) ------------------------------------------------------
# Each formula takes its statistics as arguments (`norm_act` computes them), so
# a test can hold them fixed.


def b_series_branches(name, x, v, s2_bhw, instance_statistic, epsilon):
    """The two arguments of the B-series max().

    `instance_statistic` is `s2_hw` for B0 and `mu2_hw` for B1 and B2.
    Returns `(sqrt(s2_bhw + ε), instance branch)`, both shaped like x.
    """
    left = np.sqrt(s2_bhw + epsilon) * np.ones_like(x)
    if name == "evonorm_b0":
        right = v * x + np.sqrt(instance_statistic + epsilon)
    elif name == "evonorm_b1":
        right = (x + 1.0) * np.sqrt(instance_statistic + epsilon)
    elif name == "evonorm_b2":
        right = np.sqrt(instance_statistic + epsilon) - x
    else:
        raise ValueError(name)
    return left, right


def evonorm_b(name, x, gamma, beta, v, s2_bhw, instance_statistic, epsilon):
    """B0: `x / max(sqrt(s2_bhw + ε), v·x + sqrt(s2_hw + ε)) · γ + β`;
    B1: `x / max(sqrt(s2_bhw + ε), (x + 1)·sqrt(mu2_hw + ε)) · γ + β`;
    B2: `x / max(sqrt(s2_bhw + ε), sqrt(mu2_hw + ε) − x) · γ + β`."""
    left, right = b_series_branches(name, x, v, s2_bhw, instance_statistic, epsilon)
    return x / np.maximum(left, right) * gamma + beta


def evonorm_s(name, x, gamma, beta, v, group_statistic, epsilon):
    """S0: `x·σ(v·x) / sqrt(s2_hwg + ε) · γ + β`;
    S1: `x·σ(x) / sqrt(s2_hwg + ε) · γ + β`;
    S2: `x·σ(x) / sqrt(mu2_hwg + ε) · γ + β`."""
    numerator = x * sigmoid(v * x) if name == "evonorm_s0" else x * sigmoid(x)
    return numerator / np.sqrt(group_statistic + epsilon) * gamma + beta


def moving_variance_update(moving_variance, x, momentum):
    """`mv ← momentum·mv + (1 − momentum)·s2_bhw(x)`, no Bessel correction."""
    return momentum * moving_variance + (1.0 - momentum) * batch_variance(x)


# -- baselines (BN, GN, FRN + TLU) -----------------------------------------------------


def batch_norm(x, gamma, beta, mean, variance, epsilon):
    """`(x − mean) / sqrt(variance + ε) · γ + β` with per-channel mean and variance."""
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


def group_norm(x, gamma, beta, mean_hwg, s2_hwg, epsilon):
    """`(x − mean_hwg) / sqrt(s2_hwg + ε) · γ + β`."""
    return (x - mean_hwg) / np.sqrt(s2_hwg + epsilon) * gamma + beta


def filter_response_norm(x, gamma, beta, mu2_hw, epsilon):
    """FRN: `γ·x / sqrt(mu2_hw + ε) + β`."""
    return gamma * x / np.sqrt(mu2_hw + epsilon) + beta


def thresholded_linear_unit(y, tau):
    """TLU: `max(y, τ)`."""
    return np.maximum(y, tau)


# -- one entry point per layer name --------------------------------------------------


def _b_series_statistics(name, s, weights, training):
    s2_bhw = batch_variance(s) if training else weights["moving_variance"]
    instance = instance_variance(s) if name == "evonorm_b0" else instance_second_moment(s)
    return s2_bhw, instance


def norm_act(name, x, weights, *, training, nonlinearity=True, epsilon=1e-5, groups=None,
             statistics_of=None):
    """The output of norm-act layer `name` (a factory name) on channels_last `x`.

    Args:
      weights: dict of float arrays keyed by weight name (`gamma`, `beta`, `v`,
        `tau`, `moving_mean`, `moving_variance`).
      training: B-series and BN use the batch statistics of `x` if True, the
        moving statistics otherwise; other layers ignore it.
      nonlinearity: False gives the affine map `x·γ + β` for EvoNorms, the
        normalization without its activation for the baselines.
      statistics_of: compute every statistic from this array instead of `x`
        (the tests use it to build a Jacobian that ignores the statistics).
    """
    s = x if statistics_of is None else statistics_of
    gamma, beta, v = weights["gamma"], weights["beta"], weights.get("v")
    if name in B_SERIES + S_SERIES and not nonlinearity:
        return x * gamma + beta
    if name in B_SERIES:
        s2_bhw, instance = _b_series_statistics(name, s, weights, training)
        return evonorm_b(name, x, gamma, beta, v, s2_bhw, instance, epsilon)
    if name in S_SERIES:
        if name == "evonorm_s2":
            statistic = group_second_moment(s, groups)
        else:
            statistic = group_variance(s, groups)
        return evonorm_s(name, x, gamma, beta, v, statistic, epsilon)
    if name in BATCH_NORMS:
        if training:
            mean, variance = batch_mean(s), batch_variance(s)
        else:
            mean, variance = weights["moving_mean"], weights["moving_variance"]
        y = batch_norm(x, gamma, beta, mean, variance, epsilon)
    elif name in GROUP_NORMS:
        y = group_norm(x, gamma, beta, group_mean(s, groups), group_variance(s, groups), epsilon)
    elif name == "frn_tlu":
        y = filter_response_norm(x, gamma, beta, instance_second_moment(s), epsilon)
        return thresholded_linear_unit(y, weights["tau"]) if nonlinearity else y
    else:
        raise ValueError(f"unknown norm-act name {name!r}")
    if not nonlinearity:
        return y
    return relu(y) if name.endswith("relu") else silu(y)


def b_series_branches_of(name, x, weights, *, training, epsilon=1e-5):
    """The two max() arguments of B-series layer `name` on channels_last `x`."""
    s2_bhw, instance = _b_series_statistics(name, x, weights, training)
    return b_series_branches(name, x, weights.get("v"), s2_bhw, instance, epsilon)


def nonsmooth_margin(name, x, weights, *, training, epsilon=1e-5, groups=None):
    """Smallest distance of any element from a kink (max, ReLU, TLU) of layer `name`.

    Finite differences are only meaningful where this is well above the step.
    Smooth layers return infinity.
    """
    if name in B_SERIES:
        left, right = b_series_branches_of(name, x, weights, training=training, epsilon=epsilon)
        return float(np.min(np.abs(left - right)))
    if name in ("bn_relu", "gn_relu", "frn_tlu"):
        y = norm_act(name, x, weights, training=training, nonlinearity=False, epsilon=epsilon,
                     groups=groups)
        kink = weights["tau"] if name == "frn_tlu" else 0.0
        return float(np.min(np.abs(y - kink)))
    return float("inf")

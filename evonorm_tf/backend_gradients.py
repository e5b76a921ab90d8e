"""Hand-derived gradients of EvoNorm-B0 (training) and EvoNorm-S0 in `keras.ops`, for JAX.

On JAX the Keras 3 layers run `evonorm_tf.backend_formulas`, differentiated
by JAX. These functions compute the same outputs with a gradient written by
hand (`keras.ops.custom_gradient`, which is `jax.custom_gradient` on JAX):
the backward pass reuses the forward pass's normalized values and takes each
statistic's share with one reduction, instead of differentiating every
operation of the forward pass.

Every statistic is used as in `backend_formulas`, through its root at any
scale of x (`backend_formulas.root`, `inverse_root`), and the gradients are
written so that no intermediate leaves float32 where the result does not: a
statistic with root σ passes `c·(x − centre)/σ` to x (never `c/σ²` times
`x − centre`, which is 0·inf at scale 1e30), and EvoNorm-S0's `∂/∂v`
multiplies `x·(1 − σ(v·x))·σ(v·x)` before x (x² alone overflows where σ' is
0). Where the two branches of B0's maximum are equal the gradient goes to
the batch branch, as TensorFlow's `maximum`.

Which gradient the layers use is chosen when a layer is built:
`set_gradients("custom")` or `"autodiff"`, else the environment variable
`EVONORM_TF_JAX_GRADIENTS`, else `DEFAULT` (see docs/kernels.md for the
measured reason). Only the JAX backend uses them.
"""

import os

from keras import ops

from evonorm_tf import arguments
from evonorm_tf import backend_formulas

__all__ = ["DEFAULT", "ENVIRONMENT_VARIABLE", "GRADIENTS", "evonorm_b_training", "evonorm_s0",
           "gradients", "set_gradients"]

#: The two ways of differentiating the JAX layers.
GRADIENTS = ("autodiff", "custom")
#: What layers built without a setting use.
DEFAULT = "autodiff"
#: The environment variable read when `set_gradients` was not called.
ENVIRONMENT_VARIABLE = "EVONORM_TF_JAX_GRADIENTS"

_setting = None


def _check(name, source):
    if name not in GRADIENTS:
        raise ValueError(f"{source} must be one of {', '.join(GRADIENTS)}; received {name!r}")
    return name


def set_gradients(name):
    """Sets the gradients of JAX layers built from now on: `"custom"`, `"autodiff"`, or None (unset)."""
    global _setting
    _setting = None if name is None else _check(name, "gradients")


def gradients():
    """The gradients a JAX layer built now uses: the setting, else the environment, else `DEFAULT`."""
    if _setting is not None:
        return _setting
    value = os.environ.get(ENVIRONMENT_VARIABLE)
    return DEFAULT if not value else _check(value, ENVIRONMENT_VARIABLE)


def _channel_axes(rank, data_format):
    """The axes of everything but the channels (those a `[C]` weight's gradient sums over)."""
    return tuple(i for i in range(rank) if i != (rank - 1 if data_format == "channels_last" else 1))


def _channel_sum(t, rank, data_format):
    return ops.sum(t, axis=_channel_axes(rank, data_format))


def _grouped_weight(w, rank, data_format, grouped_shape):
    """A `[C]` weight as `[G, C/G]` (channels_last) or `[G, C/G, 1..]`, to broadcast on grouped x."""
    groups, size = (grouped_shape[-2:] if data_format == "channels_last" else grouped_shape[1:3])
    trailing = () if data_format == "channels_last" else (1,) * (rank - 2)
    return ops.reshape(backend_formulas._float32(w), (groups, size) + trailing)


def evonorm_s0(x, gamma, beta, v, groups, epsilon=1e-5, data_format="channels_last"):
    """EvoNorm-S0 as `backend_formulas.evonorm_s0`, with its gradient written by hand.

    With `u = x·σ(v·x)·r`, `r = 1/sqrt(s2_hwg + ε)`, `y = u·γ + β`, `a = ∂L/∂y·γ`
    and M the elements of a group:

        ∂L/∂x = a·r·(σ + v·x·σ') − r·mean_g(a·u)·(x − mean_g(x))·r
        ∂L/∂v = Σ a·r·x·(x·σ'),  ∂L/∂γ = Σ ∂L/∂y·u,  ∂L/∂β = Σ ∂L/∂y

    Computed on the grouped view of x (`[N, *spatial, G, C/G]`); the backward
    pass keeps only x and the per-group statistics and recomputes the rest.
    """
    arguments.check_data_format(data_format)
    rank = len(ops.shape(x))
    dtype_of_x = x.dtype
    shape = tuple(ops.shape(x))
    channels = shape[-1] if data_format == "channels_last" else shape[1]
    arguments.check_groups_divide(groups, channels)
    if data_format == "channels_last":  # [N, *spatial, G, C/G]
        grouped_shape = (-1,) + shape[1:-1] + (groups, channels // groups)
        axes = tuple(range(1, rank - 1)) + (rank,)
    else:  # [N, G, C/G, *spatial]
        grouped_shape = (-1, groups, channels // groups) + shape[2:]
        axes = tuple(range(2, rank + 1))

    per_channel = ((-1,) + (1,) * (rank - 2) + (channels,) if data_format == "channels_last"
                   else (-1, channels) + (1,) * (rank - 2))
    within_group_axis = -1 if data_format == "channels_last" else 2

    def to_channels(statistic):
        target = list(ops.shape(statistic))
        target[within_group_axis] = channels // groups
        return ops.reshape(ops.broadcast_to(statistic, tuple(target)), per_channel)

    def group_mean(values):
        return ops.mean(ops.reshape(values, grouped_shape), axis=axes, keepdims=True)

    def normalized(x, v, r):
        s = ops.sigmoid(backend_formulas._channel(v, rank, data_format) * x)
        return s, x * s * r

    @ops.custom_gradient
    def forward(x, gamma, beta, v):
        x32 = backend_formulas._float32(x)
        xg = ops.reshape(x32, grouped_shape)
        mean = ops.mean(xg, axis=axes, keepdims=True)
        r_group = backend_formulas.inverse_root(*backend_formulas.mean_squares(xg - mean, axes), epsilon)
        g, b = (backend_formulas._channel(w, rank, data_format) for w in (gamma, beta))
        s_forward, u_forward = normalized(x32, v, to_channels(r_group))
        y = u_forward * g + b

        def grad(*upstream, **kwargs):
            # Only x and the group statistics are kept from the forward pass; the rest is recomputed.
            dy = backend_formulas._float32(kwargs["upstream"] if "upstream" in kwargs else upstream[0])
            x32 = backend_formulas._float32(x)
            vc = backend_formulas._channel(v, rank, data_format)
            r = to_channels(r_group)
            s, u = s_forward, u_forward
            a = dy * g
            share = to_channels(group_mean(a * u))
            t = x32 * (1.0 - s) * s  # x·σ'(v·x), finite at any scale of x
            ar = a * r
            dx = ar * (s + vc * t) - (r * share) * ((x32 - to_channels(mean)) * r)
            return (ops.cast(dx, dtype_of_x), _channel_sum(dy * u, rank, data_format),
                    _channel_sum(dy, rank, data_format), _channel_sum(ar * x32 * t, rank, data_format))

        return y, grad

    return forward(x, backend_formulas._float32(gamma), backend_formulas._float32(beta),
                   backend_formulas._float32(v))


def evonorm_b_training(kind, x, gamma, beta, v, epsilon=1e-5, data_format="channels_last"):
    """`backend_formulas.evonorm_b_training`; B0 (`kind="b0"`) with its gradient written by hand.

    With `B = sqrt(s2_bhw + ε)`, `I = sqrt(s2_hw + ε)`, `R = v·x + I`,
    `D = max(B, R)`, `u = x/D`, `y = u·γ + β`, `a = ∂L/∂y·γ` and
    `e = −(a/D)·u` (`∂L/∂D`), split into `e_R` where R > B and `e_B` elsewhere:

        ∂L/∂x = a/D + v·e_R + Σ_hw(e_R)·(x − mean_hw)/I/M_hw + Σ_bhw(e_B)·(x − mean_bhw)/B/M_bhw
        ∂L/∂v = Σ e_R·x,  ∂L/∂γ = Σ ∂L/∂y·u,  ∂L/∂β = Σ ∂L/∂y

    B1 and B2 are `backend_formulas.evonorm_b_training` (JAX's gradients).
    """
    if kind != "b0":
        return backend_formulas.evonorm_b_training(kind, x, gamma, beta, v, epsilon, data_format)
    arguments.check_data_format(data_format)
    rank = len(ops.shape(x))
    dtype_of_x = x.dtype
    spatial = backend_formulas._spatial_axes(rank, data_format)
    batch_axes = (0,) + spatial
    shape = ops.shape(x)
    batch_count = float(shape[0])
    instance_count = 1.0
    for axis in spatial:
        batch_count *= shape[axis]
        instance_count *= shape[axis]

    def branches(x, v, batch_std, instance_mean, instance_std):
        right = backend_formulas._channel(v, rank, data_format) * x + instance_std
        batch_branch = batch_std >= right
        return batch_branch, ops.where(batch_branch, batch_std, right)

    @ops.custom_gradient
    def forward(x, gamma, beta, v):
        x = backend_formulas._float32(x)
        g, b = (backend_formulas._channel(w, rank, data_format) for w in (gamma, beta))
        batch_mean = ops.mean(x, axis=batch_axes, keepdims=True)
        plain, small = backend_formulas.mean_squares(x - batch_mean, batch_axes)
        batch_std = backend_formulas.root(plain, small, epsilon)
        variance = backend_formulas.saturated(plain, small)
        instance_mean = ops.mean(x, axis=spatial, keepdims=True)
        instance_std = backend_formulas.root(*backend_formulas.mean_squares(x - instance_mean, spatial), epsilon)
        y = x / branches(x, v, batch_std, instance_mean, instance_std)[1] * g + b

        def grad(*upstream, **kwargs):
            # Only x and the statistics are kept from the forward pass; the rest is recomputed.
            dy = kwargs["upstream"] if "upstream" in kwargs else upstream[0]
            dy = backend_formulas._float32(dy[0] if isinstance(dy, (tuple, list)) else dy)
            vc = backend_formulas._channel(v, rank, data_format)
            batch_branch, denominator = branches(x, v, batch_std, instance_mean, instance_std)
            u = x / denominator
            a_over_d = dy * g / denominator
            e = -a_over_d * u
            zeros = ops.zeros_like(e)
            e_right = ops.where(batch_branch, zeros, e)
            e_batch = ops.sum(ops.where(batch_branch, e, zeros), axis=batch_axes, keepdims=True)
            e_instance = ops.sum(e_right, axis=spatial, keepdims=True)
            dx = (a_over_d + vc * e_right
                  + e_instance * ((x - instance_mean) / instance_std) * (1.0 / instance_count)
                  + e_batch * ((x - batch_mean) / batch_std) * (1.0 / batch_count))
            dv = _channel_sum(e_right * x, rank, data_format)
            dgamma = _channel_sum(dy * u, rank, data_format)
            dbeta = _channel_sum(dy, rank, data_format)
            return ops.cast(dx, dtype_of_x), dgamma, dbeta, dv

        return (y, ops.stop_gradient(ops.reshape(variance, (-1,)))), grad

    return forward(x, backend_formulas._float32(gamma), backend_formulas._float32(beta), backend_formulas._float32(v))

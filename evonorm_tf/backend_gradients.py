"""A hand-derived gradient of EvoNorm-B0 in training, in `keras.ops`, for JAX.

On JAX the Keras 3 layers run `evonorm_tf.backend_formulas`, differentiated
by JAX. These functions compute the same outputs with a gradient written by
hand (`keras.ops.custom_gradient`, which is `jax.custom_gradient` on JAX):
the backward pass keeps only x and the statistics of the forward pass and
takes each statistic's share with one reduction, instead of differentiating
every operation of the forward pass.

Every statistic is used as in `backend_formulas`, through its root at any
scale of x (`backend_formulas.root`, `inverse_root`), and the gradients are
written so that no intermediate leaves float32 where the result does not: a
statistic with root σ passes `c·(x − centre)/σ` to x (never `c/σ²` times
`x − centre`, whose factor 1/σ² is below float32 at scale 1e30). Where the
two branches of B0's maximum are equal the gradient goes to the batch
branch, as TensorFlow's `maximum`.

Which gradient the layers use is chosen when a layer is built:
`set_gradients("custom")` or `"autodiff"`, else the environment variable
`EVONORM_TF_JAX_GRADIENTS`, else `DEFAULT`. Only the JAX backend uses it.
Under `jax.jit` on CPU it is about as fast as JAX's differentiation of
`backend_formulas` (docs/kernels.md, `bench/backends.py --jax-gradients`),
so the default stays `"autodiff"`; a hand-derived EvoNorm-S0 gradient was
slower than JAX's and is not kept.
"""

import os

from keras import ops

from evonorm_tf import arguments, backend_formulas

__all__ = ["DEFAULT", "ENVIRONMENT_VARIABLE", "GRADIENTS", "evonorm_b_training", "gradients",
           "set_gradients"]

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
    spatial = backend_formulas.spatial_axes(rank, data_format)
    batch_axes = (0,) + spatial
    shape = ops.shape(x)
    batch_count = float(shape[0])
    instance_count = 1.0
    for axis in spatial:
        batch_count *= shape[axis]
        instance_count *= shape[axis]

    def branches(x, v, batch_std, instance_mean, instance_std):
        right = backend_formulas.channel_vector(v, rank, data_format) * x + instance_std
        batch_branch = batch_std >= right
        return batch_branch, ops.where(batch_branch, batch_std, right)

    @ops.custom_gradient
    def forward(x, gamma, beta, v):
        x = backend_formulas.as_float32(x)
        g, b = (backend_formulas.channel_vector(w, rank, data_format) for w in (gamma, beta))
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
            dy = backend_formulas.as_float32(dy[0] if isinstance(dy, (tuple, list)) else dy)
            vc = backend_formulas.channel_vector(v, rank, data_format)
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

    as_float32 = backend_formulas.as_float32
    return forward(x, as_float32(gamma), as_float32(beta), as_float32(v))

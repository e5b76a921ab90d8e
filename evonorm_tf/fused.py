"""Fast EvoNorm kernels: one-pass statistics and hand-written gradients.

`evonorm_tf.formulas` defines each EvoNorm once, as readable TensorFlow; this
module computes the same functions faster on CPU, and `formulas` routes its
calls here (set `evonorm_tf.fused.ENABLED = False` to time or debug the plain
graphs). Three things make them fast:

1. **Statistics in one pass, as matmuls.** Per-(sample, channel) sums over the
   spatial axes are `ones[N,1,S] @ x[N,S,C]` (channels_last) or a row
   reduction (channels_first): TF's column-reduction kernels reach a fraction
   of the memory bandwidth, a matmul against a ones vector reaches all of it.
   The sums are of `d = x − x₀` and `d²`, with `x₀` the first spatial element
   of each (sample, channel): shifting by a sample of the data keeps
   `Σd² − (Σd)²/S` free of cancellation when |mean| >> std. Group and batch
   statistics are exact (Chan et al.) combinations of the per-channel ones,
   so EvoNorm-B0..B2 get their batch variance without a second pass over x.
2. **`tf.custom_gradient` with derived backward passes.** The backward pass
   reuses the forward statistics, recomputes the cheap elementwise terms
   (sigmoid, the B-series `max` branch) from x, reduces everything it needs
   in one more pass, and writes dx in a single elementwise pass. Nothing of
   x's size is saved besides x itself.
3. **Elementwise work fused by XLA.** The elementwise parts run as small
   `jit_compile=True` functions, so each is one pass over memory even when the
   model itself is not compiled; inside a compiled model they are inlined.
   `ELEMENTWISE_XLA = False` runs them as plain TF ops instead.

Derivations (y = x / den · γ + β for the B-series, den = max(σ_b, r), σ_b =
sqrt(s2_bhw + ε); P = dy·x/den; R = [r > σ_b] the per-element branch):

    dβ = Σ dy,  dγ = Σ P,  ∂L/∂den = −γ·P/den,
    ∂L/∂σ_b = −(γ/σ_b)·Σ_{not R} P = −(γ/σ_b)·(ΣP − Σ_R P)   (den = σ_b there),
    ∂L/∂r   = −γ·R·P/den (elementwise), pushed into x, v and the instance term:
      B0: r = v·x + σ_i, σ_i = sqrt(s2_hw + ε):  ∂r/∂x = v, ∂r/∂v = x, ∂r/∂σ_i = 1
      B1: r = (x + 1)·ρ,  ρ = sqrt(mu2_hw + ε):   ∂r/∂x = ρ, ∂r/∂ρ = x + 1 = den/ρ on R
      B2: r = ρ − x:                                ∂r/∂x = −1, ∂r/∂ρ = 1
    and a variance V of M elements with mean m passes ∂L/∂V · 2(x − m)/M to x
    (a second moment: ∂L/∂mu2 · 2x/M). The moving-variance update has no gradient.

S-series (y = f·ρ⁻¹·γ + β, f = x·σ(v·x), ρ = sqrt(group statistic + ε)):
dβ = Σ dy, dγ = Σ dy·f/ρ, dv = Σ γ/ρ·dy·x²·σ(1−σ), ∂f/∂x = σ·(1 + v·x·(1−σ)),
∂L/∂ρ⁻¹ = Σ_group γ·dy·f.

All kernels take float32 inputs of rank 3 to 5 in either data format, are
XLA-compilable, and return float32.
"""

import tensorflow as tf

__all__ = ["ENABLED", "ELEMENTWISE_XLA", "b_series", "s_series"]

#: Route `formulas` through these kernels (False: the plain autodiff graphs).
ENABLED = True
#: Run the elementwise parts as `jit_compile=True` functions (one pass each).
ELEMENTWISE_XLA = True


def _elementwise(function):
    """`function` as an XLA-fused function, or plain, per `ELEMENTWISE_XLA`."""
    compiled = tf.function(function, jit_compile=True, autograph=False)

    def call(*args):
        return compiled(*args) if ELEMENTWISE_XLA else function(*args)

    call.__name__ = function.__name__
    return call


#: Largest static batch size whose spatial sums are unrolled into per-sample matmuls.
_MAX_UNROLLED_BATCH = 256


# -- layout -------------------------------------------------------------------------


class _Layout:
    """x viewed as `[N, S, C]` (channels_last) or `[N, C, S]` (channels_first).

    Per-(sample, channel) statistics are kept as `[N, 1, C]` / `[N, C, 1]`
    ("stat" shape) and per-channel vectors as `[1, 1, C]` / `[1, C, 1]`.
    """

    def __init__(self, x, data_format):
        self.channels_last = data_format == "channels_last"
        self.shape = tf.shape(x)
        channels = x.shape[-1] if self.channels_last else x.shape[1]
        if channels is None:
            channels = self.shape[-1] if self.channels_last else self.shape[1]
        self.channels = channels
        self.batch = self.shape[0]
        if self.channels_last:
            self.x3 = tf.reshape(x, tf.stack([self.batch, -1, channels]))
            self.spatial = tf.shape(self.x3)[1]
        else:
            self.x3 = tf.reshape(x, tf.stack([self.batch, channels, -1]))
            self.spatial = tf.shape(self.x3)[2]
        self.count = tf.cast(self.spatial, tf.float32)

    def restore(self, t3):
        return tf.reshape(t3, self.shape)

    def vector(self, v):
        v = tf.reshape(v, [-1])
        return tf.reshape(v, [1, 1, -1] if self.channels_last else [1, -1, 1])

    def channel_sum(self, stat):
        """Sum of a stat-shaped tensor over the batch, as a `[C]` vector."""
        return tf.reshape(tf.reduce_sum(stat, axis=0), [-1])

    def first(self, t3):
        return t3[:, :1, :] if self.channels_last else t3[:, :, :1]

    def spatial_sum(self, t3):
        """Per-(sample, channel) sum over the spatial axis, stat-shaped.

        channels_last: `ones[1, S] @ x[n]` per sample when the batch size is
        static (a batched `[N, 1, S] @ [N, S, C]` matmul is several times
        slower on CPU than N plain ones), else the batched matmul.
        channels_first: a row reduction, which TF does at full speed.
        """
        if not self.channels_last:
            return tf.reduce_sum(t3, axis=2, keepdims=True)
        batch = t3.shape[0]
        if batch is not None and batch <= _MAX_UNROLLED_BATCH:
            ones = tf.ones(tf.stack([1, self.spatial]), t3.dtype)
            return tf.stack([tf.linalg.matmul(ones, sample) for sample in tf.unstack(t3, axis=0)])
        ones = tf.ones(tf.stack([self.batch, 1, self.spatial]), t3.dtype)
        return tf.linalg.matmul(ones, t3)

    def to_groups(self, stat, groups):
        """`[N, G, C/G]` view of a stat-shaped tensor."""
        return tf.reshape(stat, tf.stack([self.batch, groups, -1]))

    def from_groups(self, grouped, groups):
        """Broadcasts `[N, G, 1]` back over each group's channels, stat-shaped."""
        full = tf.broadcast_to(grouped, tf.stack([self.batch, groups, self.channels // groups]))
        return tf.reshape(full, [-1, 1, self.channels] if self.channels_last else [-1, self.channels, 1])


# -- one-pass statistics -----------------------------------------------------------


@_elementwise
def _shifted(x3, shift):
    d = x3 - shift
    return d, d * d


def channel_moments(layout):
    """Per-(sample, channel) moments about a shift, stat-shaped.

    Returns `(shift, mean_delta, m2)`: the mean is `shift + mean_delta` and
    `m2 = Σ(x − mean)²`. Keeping the mean as a shift (a sample of the data)
    plus a small delta lets later steps form `x − mean` as
    `(x − shift) − mean_delta` without losing digits when |mean| >> std.
    """
    shift = layout.first(layout.x3)
    d, d2 = _shifted(layout.x3, shift)
    sum_d = layout.spatial_sum(d)
    sum_d2 = layout.spatial_sum(d2)
    mean_delta = sum_d / layout.count
    m2 = tf.maximum(sum_d2 - sum_d * mean_delta, 0.0)
    return shift, mean_delta, m2


def combine_groups(layout, shift, mean_delta, m2, groups):
    """Group moments over (spatial, C/G) from per-channel ones (Chan et al.).

    Returns `(reference, mean_delta, variance)`, stat-shaped and repeated over
    each group's channels; the group mean is `reference + mean_delta`.
    """
    shift_g = layout.to_groups(shift, groups)
    reference = shift_g[:, :, :1]
    delta = (shift_g - reference) + layout.to_groups(mean_delta, groups)
    group_delta = tf.reduce_mean(delta, axis=2, keepdims=True)
    spread = tf.reduce_sum(tf.square(delta - group_delta), axis=2, keepdims=True)
    per_group = tf.cast(tf.shape(delta)[2], tf.float32)
    m2_sum = tf.reduce_sum(layout.to_groups(m2, groups), axis=2, keepdims=True)
    variance = (m2_sum / layout.count + spread) / per_group
    return tuple(layout.from_groups(t, groups) for t in (reference, group_delta, variance))


def combine_batch(shift, mean_delta, m2, count):
    """Batch moments over (N, spatial) from per-(sample, channel) ones (Chan et al.).

    Returns `(reference, mean_delta, variance)`, each shaped like one sample's
    statistics (`[1, 1, C]` or `[1, C, 1]`).
    """
    reference = shift[:1]
    delta = (shift - reference) + mean_delta
    batch_delta = tf.reduce_mean(delta, axis=0, keepdims=True)
    spread = tf.reduce_mean(tf.square(delta - batch_delta), axis=0, keepdims=True)
    return reference, batch_delta, tf.reduce_mean(m2, axis=0, keepdims=True) / count + spread


# -- B-series -----------------------------------------------------------------------


def _right_branch(kind, x, v, instance):
    if kind == "b0":
        return v * x + instance
    if kind == "b1":
        return (x + 1.0) * instance
    return instance - x


@_elementwise
def _b_forward(kind, x3, v, instance, batch_std, gamma, beta):
    den = tf.maximum(batch_std, _right_branch(kind, x3, v, instance))
    return x3 / den * gamma + beta


@_elementwise
def _b_backward_terms(kind, x3, dy, v, instance, batch_std):
    right = _right_branch(kind, x3, v, instance)
    den = tf.maximum(batch_std, right)
    p = dy * x3 / den
    on_right = tf.cast(right > batch_std, tf.float32)
    p_right = on_right * p
    terms = [p, p_right]
    if kind in ("b0", "b2"):
        terms.append(p_right / den)
    if kind == "b0":
        terms.append(p_right * x3 / den)
    return terms


@_elementwise
def _b_backward_dx(kind, x3, dy, v, instance, batch_std, gamma, centred_terms):
    right = _right_branch(kind, x3, v, instance)
    den = tf.maximum(batch_std, right)
    # On the instance branch 1 − x·∂r/∂x / den equals instance/den for all of
    # B0, B1, B2 (r − x·∂r/∂x is σ_i, ρ, ρ): no cancellation.
    direct = gamma * dy / den * tf.where(right > batch_std, instance / den, 1.0)
    for coefficient, reference, delta in centred_terms:
        direct += coefficient * ((x3 - reference) - delta)
    return direct


def b_series(kind, x, gamma, beta, v, batch_variance, epsilon, data_format):
    """EvoNorm-B0/B1/B2 (`kind` "b0", "b1", "b2") with a hand-written gradient.

    Args:
      x: float32 activations, rank 3 to 5.
      gamma, beta, v: `[C]` vectors (`v` is ignored unless kind is "b0").
      batch_variance: the batch variance to use (`[C]` or broadcastable
        keepdims shape), or None to compute it from x (training); its
        gradient reaches x in both cases.
    Returns:
      `(y, batch_variance)`: y float32 like x, the batch variance as `[C]`.
    """
    given_variance = batch_variance is not None
    if v is None:
        v = tf.ones_like(gamma)
    inputs = [x, gamma, beta, v] + ([batch_variance] if given_variance else [])

    @tf.custom_gradient
    def op(*tensors):
        x, gamma, beta, v = tensors[:4]
        layout = _Layout(x, data_format)
        x3 = layout.x3
        shift, mean_delta, m2 = channel_moments(layout)
        if kind == "b0":
            instance = tf.sqrt(m2 / layout.count + epsilon)
        else:
            instance = tf.sqrt(m2 / layout.count + tf.square(shift + mean_delta) + epsilon)
        if given_variance:
            variance = tf.reshape(tensors[4], [-1])
        else:
            batch_reference, batch_delta, variance = combine_batch(shift, mean_delta, m2, layout.count)
            variance = tf.reshape(variance, [-1])
        batch_std = layout.vector(tf.sqrt(variance + epsilon))
        g3, b3, v3 = layout.vector(gamma), layout.vector(beta), layout.vector(v)
        y3 = _b_forward(kind, x3, v3, instance, batch_std, g3, b3)

        def grad(dy, unused_dvariance):
            dy3 = tf.reshape(dy, tf.shape(x3))
            terms = _b_backward_terms(kind, x3, dy3, v3, instance, batch_std)
            sums = [layout.spatial_sum(t) for t in [dy3] + list(terms)]
            sum_dy, sum_p, sum_p_right = sums[:3]
            dbeta = layout.channel_sum(sum_dy)
            dgamma = layout.channel_sum(sum_p)
            # Batch term: ∂L/∂σ_b from the elements where σ_b won the max.
            dbatch_std = -g3 / batch_std * tf.reduce_sum(sum_p - sum_p_right, axis=0, keepdims=True)
            dvariance = dbatch_std / (2.0 * batch_std)
            # Instance term: ∂L/∂σ_i (B0) or ∂L/∂ρ (B1, B2), then ∂L/∂statistic · 2/S.
            if kind == "b1":
                dinstance = -g3 * sum_p_right / instance
            else:
                dinstance = -g3 * sums[3]
            coefficient = dinstance / (2.0 * instance) * (2.0 / layout.count)
            if kind == "b0":  # a variance: 2(x − mean)/S
                centred = [(coefficient, shift, mean_delta)]
            else:  # a second moment: 2x/S
                centred = [(coefficient, 0.0, 0.0)]
            if given_variance:
                dvariance_in = tf.reshape(dvariance, tf.shape(tensors[4]))
            else:
                total = layout.count * tf.cast(layout.batch, tf.float32)
                centred.append((dvariance * (2.0 / total), batch_reference, batch_delta))
            dx3 = _b_backward_dx(kind, x3, dy3, v3, instance, batch_std, g3, centred)
            dv = -layout.channel_sum(g3 * sums[4]) if kind == "b0" else tf.zeros_like(v)
            grads = [layout.restore(dx3), dgamma, dbeta, dv]
            if given_variance:
                grads.append(dvariance_in)
            return grads

        return (layout.restore(y3), tf.stop_gradient(variance)), grad

    return op(*inputs)


# -- S-series -----------------------------------------------------------------------


@_elementwise
def _s_forward(x3, v, scale, beta):
    return x3 * tf.sigmoid(v * x3) * scale + beta


# σ'(z) is written σ(z)·(1 − σ(z)), as TF's own SigmoidGrad: XLA's logistic is
# much faster than an exp-based σ(z)·σ(−z), whose extra accuracy only matters
# where σ' < ~1e-6 and contributes nothing anyway.


@_elementwise
def _s_backward_terms(with_v, x3, dy, v):
    s = tf.sigmoid(v * x3)
    p = dy * x3 * s
    if with_v:
        return [p, p * x3 * (1.0 - s)]
    return [p]


@_elementwise
def _s_backward_dx(x3, dy, v, scale, coefficient, reference, delta):
    z = v * x3
    s = tf.sigmoid(z)
    return dy * scale * s * (1.0 + z * (1.0 - s)) + coefficient * ((x3 - reference) - delta)


def s_series(x, gamma, beta, v, groups, epsilon, data_format, centered=True):
    """`x·σ(v·x) / sqrt(stat + ε) · γ + β` with a hand-written gradient.

    `stat` is the group variance (`centered=True`: S0, S1) or the group second
    moment (S2); `v` is a `[C]` vector, or None for σ(x) (S1, S2).
    """
    with_v = v is not None
    inputs = [x, gamma, beta] + ([v] if with_v else [])

    @tf.custom_gradient
    def op(*tensors):
        x, gamma, beta = tensors[:3]
        v = tensors[3] if with_v else tf.ones_like(gamma)
        layout = _Layout(x, data_format)
        x3 = layout.x3
        shift, mean_delta, m2 = channel_moments(layout)
        if centered:
            reference, group_delta, statistic = combine_groups(layout, shift, mean_delta, m2, groups)
        else:
            # Second moment: E[x²] = M2/S + mean² per channel, averaged over the group.
            second = layout.to_groups(m2 / layout.count + tf.square(shift + mean_delta), groups)
            statistic = layout.from_groups(tf.reduce_mean(second, axis=2, keepdims=True), groups)
            reference = group_delta = tf.zeros_like(statistic)
        inverse = tf.math.rsqrt(statistic + epsilon)
        g3, b3, v3 = layout.vector(gamma), layout.vector(beta), layout.vector(v)
        y3 = _s_forward(x3, v3, inverse * g3, b3)

        def grad(dy):
            dy3 = tf.reshape(dy, tf.shape(x3))
            terms = _s_backward_terms(with_v, x3, dy3, v3)
            sum_dy = layout.spatial_sum(dy3)
            sum_f = layout.spatial_sum(terms[0])
            dbeta = layout.channel_sum(sum_dy)
            dgamma = layout.channel_sum(sum_f * inverse)
            # ∂L/∂stat = ∂L/∂ρ⁻¹ · (−ρ⁻³/2), ∂L/∂ρ⁻¹ summed over each group.
            dinverse = layout.from_groups(
                tf.reduce_sum(layout.to_groups(g3 * sum_f, groups), axis=2, keepdims=True), groups
            )
            per_group = tf.cast(layout.channels // groups, tf.float32) * layout.count
            coefficient = dinverse * (-0.5) * inverse ** 3 * (2.0 / per_group)
            dx3 = _s_backward_dx(x3, dy3, v3, inverse * g3, coefficient, reference, group_delta)
            grads = [layout.restore(dx3), dgamma, dbeta]
            if with_v:
                grads.append(layout.channel_sum(g3 * inverse * layout.spatial_sum(terms[1])))
            return grads

        return layout.restore(y3), grad

    return op(*inputs)

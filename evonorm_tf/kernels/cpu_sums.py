"""Layout and per-(sample, channel) sums of the cpu kernels (`evonorm_tf.kernels.cpu`).

Why the sums take this form on CPU (short blocks, addition trees, sums passed
through a matmul) is explained in the docstring of `evonorm_tf.kernels.cpu`.
"""

import tensorflow as tf

from evonorm_tf.kernels import cpu_launch, native
from evonorm_tf.statistics import DOWNSCALE

# -- layout -------------------------------------------------------------------------
# Kernels see x as `[N, R, B, C]` (channels_last) or `[N, C, R, B]`
# (channels_first): the spatial positions split into R blocks of B, where B is
# the largest divisor of the spatial size up to `B_BLOCK`, `S_BLOCK` or `S_BLOCK_NARROW`
# (see `_block_sums`).
# Per-(sample, channel) statistics are "stat"-shaped, `[N, 1, 1, C]` /
# `[N, C, 1, 1]`; per-channel vectors `[1, 1, 1, C]` / `[1, C, 1, 1]`.

#: B-series kernels sum blocks of at most this many spatial positions (see `_block_sums`).
B_BLOCK = 8
#: The same for the S-series kernels on float32 x.
S_BLOCK = 16
#: The same for the S-series kernels on float16 or bfloat16 x (widened in the
#: summing loop) where it divides the spatial size (`s_block_limit`).
S_BLOCK_NARROW = 8


def _block_size(spatial, limit):
    if spatial is None:
        return 1
    return max(d for d in range(1, min(spatial, limit) + 1) if spatial % d == 0)


def s_block_limit(x, data_format):
    """The block limit of the S-series kernels for x: `S_BLOCK_NARROW` or `S_BLOCK`.

    Blocks of 8 where x is float16 or bfloat16 and 8 divides its spatial size,
    of up to 16 otherwise. EvoNorm-S0's forward and backward in bfloat16 ran 9%
    (56²×256) and 13% (28²×512) faster over blocks of 8 than of 16, while over
    float32 x blocks of 16 were the faster by as much, and at 14²×1024 blocks
    of 14 beat blocks of 7 (`bench/kernels.py --dtype bfloat16 --cpu-time`).
    """
    shape = x.shape.as_list()
    spatial_dims = shape[1:-1] if data_format == "channels_last" else shape[2:]
    if x.dtype == tf.float32 or None in spatial_dims or _product(spatial_dims) % S_BLOCK_NARROW:
        return S_BLOCK
    return S_BLOCK_NARROW


def _blocked(x, data_format, limit):
    """x reshaped to the kernels' 4-D view with blocks of at most `limit`, and whether it is channels_last."""
    channels_last = data_format == "channels_last"
    shape = x.shape.as_list()
    spatial_dims = shape[1:-1] if channels_last else shape[2:]
    spatial = None if None in spatial_dims else _product(spatial_dims)
    block = _block_size(spatial, limit)
    channels = shape[-1] if channels_last else shape[1]
    if channels is None:
        channels = tf.shape(x)[-1] if channels_last else tf.shape(x)[1]
    batch = shape[0] if shape[0] is not None else tf.shape(x)[0]
    if channels_last:
        return tf.reshape(x, [batch, -1, block, channels]), True
    return tf.reshape(x, [batch, channels, -1, block]), False


def _product(values):
    product = 1
    for value in values:
        product *= value
    return product


def _vector(v, channels_last):
    return tf.reshape(v, [1, 1, 1, -1] if channels_last else [1, -1, 1, 1])


def _batch_sum(stat):
    """Sum of a stat-shaped tensor over the batch, keeping its rank (`[1, ...]`).

    By `_tree_sum`: a reduction over the batch of `[N, C]` is a column
    reduction, scalar code in XLA (0.2 ms for `[32, 1024]`, a dozen per layer).
    """
    batch = stat.shape[0] if stat.shape[0] is not None else tf.shape(stat)[0]
    rows = tf.reshape(stat, [1, batch, 1, -1])
    return tf.reshape(_tree_sum(rows), tf.shape(stat[:1]))


def _channel_sum(stat):
    """Sum of a stat-shaped tensor over the batch, as a `[C]` vector."""
    return tf.reshape(_batch_sum(stat), [-1])


def _spatial_axes(channels_last):
    """The axes of the kernels' 4-D view that hold the spatial positions."""
    return [1, 2] if channels_last else [2, 3]


def _spatial_count(x4, channels_last):
    shape = tf.shape(x4)
    return tf.cast(shape[1] * shape[2] if channels_last else shape[2] * shape[3], tf.float32)


def _to_groups(stat, groups):
    """`[N, G, C/G]` view of a stat-shaped tensor."""
    return tf.reshape(stat, [tf.shape(stat)[0], groups, -1])


def _from_groups(grouped, like):
    """Repeats `[N, G, 1]` over each group's channels, shaped like the stat `like`.

    As a matmul with the `[G, C]` group membership matrix (exact: one product
    per output): XLA fuses a broadcast into the x-sized loop that reads its
    result and redoes its index arithmetic for every element, but not a matmul.
    """
    groups = grouped.shape[1]
    # [N, C, 1, 1] (channels_first: C at axis 1 is always static) or [N, 1, 1, C].
    channels = like.shape[1] if like.shape[1] not in (None, 1) else like.shape[-1]
    channels = channels or groups  # channels_first with one channel, shape-generic
    membership = tf.one_hot(tf.range(channels) // (channels // groups), groups, dtype=grouped.dtype)
    return tf.reshape(tf.linalg.matmul(grouped[:, :, 0], membership, transpose_b=True), tf.shape(like))


# -- statistics ---------------------------------------------------------------------

#: Roots above this make the gradients' slopes per unit of (x − centre)/root (see `_unit`).
_LARGE_ROOT = 2.0**40


def _unit(root):
    """1, or `1/root` where `root` is above `_LARGE_ROOT` (stat-sized).

    The gradient of a statistic with root σ passes `c·(x − centre)` to x with
    c of order 1/σ²: below float32 for σ above ~1e19. Gradients take it as
    `(c/unit)·((x − centre)·unit)` instead; for ordinary inputs unit is 1.
    """
    return tf.where(root > _LARGE_ROOT, 1.0 / root, tf.ones_like(root))



def _first(x4, channels_last):
    """The first spatial element of each (sample, channel), stat-shaped."""
    return x4[:, :1, :1, :] if channels_last else x4[:, :, :1, :1]


def _block_sums(channels_last, *terms):
    """Sums of x-sized terms over each block of B positions, stacked: `[N, R, k, C]` or `[N, k, C, R]`.

    Inside a kernel, for terms that take more than a few operations per
    element: XLA on CPU vectorises such a fused reduction only over short
    blocks (`B_BLOCK`, `S_BLOCK`; over 32 positions it emits scalar code,
    several times slower), and one reduction of the stacked terms reads the
    inputs once (a reduction per term was 1.5× slower). XLA still evaluates
    each output element on its own, so work shared by two terms runs once per
    term (see `_s_backward_partials` for a way round). The partial sums, k/B
    of x's size, are finished by `_finish`.
    """
    if terms[0].shape[1 if channels_last else 2] is None:
        # Shape-generic: one reduction per term, nothing x-sized stacked; `[N, 1, k, C]` or `[N, k, C, 1]`.
        sums = tf.stack([tf.reduce_sum(t, axis=_spatial_axes(channels_last)) for t in terms], axis=1)
        return sums[:, None] if channels_last else sums[..., None]
    if channels_last:
        return tf.reduce_sum(tf.stack(terms, axis=3), axis=2)
    return tf.reduce_sum(tf.stack(terms, axis=1), axis=4)


def _tree_sum(rows):
    """Sum over axis 1 of `[N, R, k, C]` as explicit additions of halves, `[N, 1, k, C]`.

    XLA emits this column reduction as scalar code (and merges it with the
    block reduction before it into one long, slow reduction); R − 1 slice
    additions fuse into one loop vectorised over k·C. An odd row is set aside
    and added at the end (a concatenation inside the loop stops its
    vectorisation).
    """
    if rows.shape[1] is None or not cpu_launch.compiling():
        return tf.reduce_sum(rows, axis=1, keepdims=True)
    leftovers = []
    while rows.shape[1] > 1:
        half = rows.shape[1] // 2
        if rows.shape[1] % 2:
            leftovers.append(rows[:, 2 * half:])
        rows = rows[:, :half] + rows[:, half:2 * half]
    for leftover in leftovers:
        rows = rows + leftover
    return rows


def _materialized(t):
    """`t`, bit for bit, computed once: XLA cannot fuse it into its consumers.

    XLA fuses a cheap producer into every consumer and recomputes it there:
    the sums of `_finish` feed a dozen small statistics, some reduced over the
    batch, and each would redo the whole addition tree over the partials (B0
    ran up to 1.8x slower). A matmul is never fused on CPU, so the sums pass
    through one: their bits as int32 rows of 16 (or 8, 4, 2) times the
    identity, exact (x·1 + y·0 in integers) whatever the floats are, NaN and
    inf included. Rows of 16: with rows of 2 the loop writing the matmul's
    input ran 10x slower (XLA does not vectorise an innermost dimension of 2).
    """
    count = t.shape.num_elements()
    width = next((w for w in (16, 8, 4, 2) if count and count % w == 0), None) if cpu_launch.compiling() else None
    if width is None:
        return t
    bits = tf.reshape(tf.bitcast(t, tf.int32), [-1, width])
    bits = tf.linalg.matmul(bits, tf.eye(width, dtype=tf.int32))
    return tf.reshape(tf.bitcast(bits, t.dtype), tf.shape(t))


def _finish(channels_last, partials):
    """The k per-(sample, channel) sums of `_block_sums` partials, each stat-shaped.

    Inside the kernel that made the partials, which saves a launch and a dozen
    TensorFlow ops per sum (in a ResNet-50 step those, not the arithmetic, were
    most of EvoNorm's extra time). channels_first partials are summed by a row
    reduction, which XLA vectorises; channels_last ones by `_tree_sum`.
    Complex partials are summed as they are and split only then: the real
    parts' k sums, then the imaginary parts' (splitting the partials first
    wrote them out again, as float32, in a loop of its own).
    """
    if not channels_last:
        total = tf.reduce_sum(partials, axis=3)  # [N, k, C]
        total = _materialized(_real_parts(total, 1))
        return [total[:, i, :, None, None] for i in range(total.shape[1])]
    total = _materialized(_real_parts(_tree_sum(partials), 2))  # [N, 1, k, C]
    return [total[:, :, i:i + 1, :] for i in range(total.shape[2])]


def _real_parts(total, axis):
    """A complex `total`'s real and imaginary parts concatenated along `axis` (real totals as they are)."""
    if not total.dtype.is_complex:
        return total
    return tf.concat([tf.math.real(total), tf.math.imag(total)], axis)


def channel_moments(x4, channels_last, fused_norm=False):
    """Per-(sample, channel) moments about a shift, stat-shaped.

    Returns `(shift, mean_delta, m2, m2_small)`: the mean is `shift +
    mean_delta`, `m2 = Σ(x − mean)²` (inf where it overflows float32) and
    `m2_small`, the same of `(x − shift)·DOWNSCALE`, summed in the same
    reduction: finite at any scale, used only where m2 is inf (squares that
    underflow in it are negligible there; `evonorm_tf.statistics.root`).
    Keeping the
    mean as a shift (a sample of the data) plus a small delta lets later
    steps form `x − mean` as `(x − shift) − mean_delta` without losing
    digits when |mean| >> std. As plain TensorFlow ops see
    `_two_pass_moments` (which takes `fused_norm`).
    """
    if not cpu_launch.compiling():
        if native.available(channels_last):
            return native.channel_moments(x4)
        return _two_pass_moments(x4, channels_last, fused_norm)
    return _shifted_moments(x4, channels_last)


def _shifted_moments(x4, channels_last):
    shift = _first(x4, channels_last)
    d = x4 - shift
    u = d * DOWNSCALE
    sum_d, sum_d2, sum_u2 = _finish(channels_last, _block_sums(channels_last, d, d * d, u * u))
    count = _spatial_count(x4, channels_last)
    mean_delta = sum_d / count
    m2 = tf.maximum(sum_d2 - sum_d * mean_delta, 0.0)
    sum_u = sum_d * DOWNSCALE
    return shift, mean_delta, m2, tf.maximum(sum_u2 - sum_u * (sum_u / count), 0.0)


def _two_pass_moments(x4, channels_last, fused_norm):
    """`channel_moments` as plain TensorFlow ops: four passes over x where nothing overflows.

    Each plain op is a pass over x (no fusion), and the blocked form makes
    seven. Here the shift is the float32 mean, whose rounding (of order
    ε·|mean|, far above ε·std where |mean| >> std) the sums of the centred
    values correct, as in the corrected two-pass algorithm: the mean, x
    minus it, and their sum and sum of squares. With `fused_norm` the last
    is one op, the Euclidean norm squared (`EuclideanNorm` has no TFLite
    kernel, so only training takes it), else x² and a sum. `m2_small` is
    then m2 scaled (exact: powers of 2). Where any m2 is not finite (a sum
    beyond float32, or NaN) the blocked form runs instead, under a `tf.cond`.
    """
    axes = _spatial_axes(channels_last)
    shift = tf.reduce_mean(x4, axis=axes, keepdims=True)
    centred = x4 - shift
    sum_d = tf.reduce_sum(centred, axis=axes, keepdims=True)
    mean_delta = sum_d / _spatial_count(x4, channels_last)
    if fused_norm:
        sum_d2 = tf.square(tf.math.reduce_euclidean_norm(centred, axis=axes, keepdims=True))
    else:
        sum_d2 = tf.reduce_sum(tf.square(centred), axis=axes, keepdims=True)
    m2 = tf.maximum(sum_d2 - sum_d * mean_delta, 0.0)
    return tf.cond(tf.reduce_all(tf.math.is_finite(m2)),
                   lambda: (shift, mean_delta, m2, (m2 * DOWNSCALE) * DOWNSCALE),
                   lambda: _shifted_moments(x4, channels_last))


def mean_square(x4, channels_last):
    """Per-(sample, channel) means of x² and of (x·DOWNSCALE)², stat-shaped (see `channel_moments`).

    As plain TensorFlow ops the second is x²'s scaled (one pass fewer) where all of those are finite.
    """
    count = _spatial_count(x4, channels_last)
    if not cpu_launch.compiling():
        if native.available(channels_last):
            return native.mean_square(x4)
        mean_x2 = tf.reduce_sum(tf.square(x4), axis=_spatial_axes(channels_last), keepdims=True) / count
        return tf.cond(tf.reduce_all(tf.math.is_finite(mean_x2)),
                       lambda: (mean_x2, (mean_x2 * DOWNSCALE) * DOWNSCALE),
                       lambda: _blocked_mean_square(x4, channels_last, count))
    return _blocked_mean_square(x4, channels_last, count)


def _blocked_mean_square(x4, channels_last, count):
    u = x4 * DOWNSCALE
    sum_x2, sum_u2 = _finish(channels_last, _block_sums(channels_last, x4 * x4, u * u))
    return sum_x2 / count, sum_u2 / count


def combine_groups(shift, mean_delta, m2, m2_small, count, groups):
    """Group moments over (spatial, C/G) from per-channel ones (Chan et al.).

    Returns `(reference, mean_delta, variance, variance_small)` per group,
    `[N, G, 1]` (see `_from_groups`); the group mean is `reference +
    mean_delta`; `variance_small` is the same at `DOWNSCALE²` (see `channel_moments`).
    """
    shift_g = _to_groups(shift, groups)
    reference = shift_g[:, :, :1]
    delta = (shift_g - reference) + _to_groups(mean_delta, groups)
    group_delta = tf.reduce_mean(delta, axis=2, keepdims=True)
    spread = tf.reduce_mean(tf.square(delta - group_delta), axis=2, keepdims=True)
    spread_small = tf.reduce_mean(tf.square((delta - group_delta) * DOWNSCALE), axis=2, keepdims=True)
    variance = tf.reduce_mean(_to_groups(m2, groups), axis=2, keepdims=True) / count + spread
    variance_small = tf.reduce_mean(_to_groups(m2_small, groups), axis=2, keepdims=True) / count + spread_small
    return reference, group_delta, variance, variance_small


def combine_batch(shift, mean_delta, m2, m2_small, count):
    """Batch moments over (N, spatial) from per-(sample, channel) ones (Chan et al.).

    Returns `(reference, mean_delta, variance, variance_small)`, each shaped
    like one sample's statistics (`[1, 1, C]` or `[1, C, 1]`), with
    `variance_small` the same at `DOWNSCALE²` (see `channel_moments`).
    """
    reference = shift[:1]
    delta = (shift - reference) + mean_delta
    batch = tf.cast(tf.shape(shift)[0], tf.float32)
    batch_delta = _batch_sum(delta) / batch
    spread = _batch_sum(tf.square(delta - batch_delta)) / batch
    spread_small = _batch_sum(tf.square((delta - batch_delta) * DOWNSCALE)) / batch
    variance = _batch_sum(m2) / (batch * count) + spread
    variance_small = _batch_sum(m2_small) / (batch * count) + spread_small
    return reference, batch_delta, variance, variance_small

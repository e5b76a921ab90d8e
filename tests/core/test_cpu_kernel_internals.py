"""Details of the `cpu` kernel path alone (`evonorm_tf.kernels.cpu`, `cpu_sums`, `cpu_launch`).

What the paths compute is checked on every path in `test_fused.py`,
`test_kernels_baselines.py` and `test_kernels_paths.py`; here: the block
sizes, the addition tree and the bit-exact barrier of the sums, plain-op
launches against compiled ones, and that mixed-precision inputs are widened
inside the kernels (no x-sized cast around them).
"""

import numpy as np
import pytest
import tensorflow as tf

from evonorm_tf import kernels
from evonorm_tf.kernels import cpu_b_series, cpu_dtypes, cpu_launch, cpu_s_series, cpu_sums

EPS = 1e-5
CPU = kernels.Selection("cpu")
NAMES = ["b0", "b1", "b2", "s0", "s1", "s2", "group_norm", "filter_response_norm", "frn_tlu"]


def _layer_function(name, gamma, beta, v):
    """`x → y` of one cpu kernel, or FRN + TLU (training mode, channels_last, 4 groups)."""
    if name in ("b0", "b1", "b2"):
        return lambda x: CPU.evonorm_b_training(name, x, gamma, beta, v if name == "b0" else None, EPS)[0]
    if name == "s0":
        return lambda x: CPU.evonorm_s0(x, gamma, beta, v, 4, EPS)
    if name in ("s1", "s2"):
        return lambda x: getattr(CPU, f"evonorm_{name}")(x, gamma, beta, 4, EPS)
    if name == "group_norm":
        return lambda x: CPU.group_norm(x, gamma, beta, 4, EPS)
    if name == "filter_response_norm":
        return lambda x: CPU.filter_response_norm(x, gamma, beta, EPS)
    # FRN then TLU, with v as the threshold τ.
    return lambda x: CPU.thresholded_linear_unit(CPU.filter_response_norm(x, gamma, beta, EPS), v - 1.0)


def _weights(channels, seed):
    rng = np.random.default_rng(seed)
    return [tf.constant(rng.uniform(0.5, 1.5, channels), tf.float32) for _ in range(3)]


def _gradients(name, x, dy):
    gamma, beta, v = weights = _weights(x.shape[-1], seed=25)
    function = _layer_function(name, gamma, beta, v)
    x = tf.constant(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch([x] + weights)
        y = function(x)
    grads = tape.gradient(y, [x] + weights, output_gradients=tf.constant(dy, tf.float32))
    return [y.numpy()] + [None if g is None else g.numpy() for g in grads]


def _compiled_gradients(name, x, dy):
    """`_gradients` from the compiled kernels: eagerly, a shape's first calls run plain ops (`cpu_launch`)."""
    for _ in range(cpu_launch.COMPILE_AFTER):
        result = _gradients(name, x, dy)
    return result


@pytest.mark.parametrize("name", NAMES)
def test_uncompiled_kernels_match_compiled(name):
    """`cpu_launch.COMPILED = False` runs the same kernels as plain TF ops: same values and gradients."""
    rng = np.random.default_rng(23)
    x = rng.normal(0.3, 1.5, size=(2, 6, 8, 8))
    dy = np.random.default_rng(24).normal(size=x.shape)
    compiled = _compiled_gradients(name, x, dy)
    cpu_launch.COMPILED = False
    try:
        plain = _gradients(name, x, dy)
    finally:
        cpu_launch.COMPILED = True
    for a, b in zip(compiled, plain):
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(a).max()))


@pytest.mark.parametrize("spatial,b_block,s_block,s_block_narrow", [
    (3136, 8, 16, 8), (784, 8, 16, 8), (196, 7, 14, 7), (49, 7, 7, 7), (48, 8, 16, 8), (37, 1, 1, 1),
    (6, 6, 6, 6), (None, 1, 1, 1)])
def test_block_size_is_the_largest_divisor_up_to_the_block(spatial, b_block, s_block, s_block_narrow):
    """Short blocks are what keeps the cpu kernels' sums vectorised (see cpu_sums._block_sums)."""
    assert cpu_sums._block_size(spatial, cpu_sums.B_BLOCK) == b_block
    assert cpu_sums._block_size(spatial, cpu_sums.S_BLOCK) == s_block
    assert cpu_sums._block_size(spatial, cpu_sums.S_BLOCK_NARROW) == s_block_narrow


@pytest.mark.parametrize("dtype,side,block", [
    (tf.float32, 8, 16), (tf.bfloat16, 8, 8), (tf.float16, 8, 8), (tf.bfloat16, 14, 14), (tf.float32, 14, 14)])
def test_s_series_sums_blocks_of_8_over_half_width_x_where_8_divides_the_size(dtype, side, block):
    """The S-series kernels see x as [N, R, B, C], B by x's dtype and size (cpu_sums.s_block_limit)."""
    seen = []
    forward = cpu_s_series._s_forward

    def recording(channels_last, groups, centered, epsilon, x4, *rest):
        seen.append(x4.shape.as_list())
        return forward(channels_last, groups, centered, epsilon, x4, *rest)

    x = tf.cast(tf.random.stateless_normal([2, side, side, 4], seed=[1, 2]), dtype)
    ones = tf.ones([4])
    cpu_s_series._s_forward = recording
    try:
        y = cpu_s_series.evonorm_s0(x, ones, 0 * ones, ones, 2)
    finally:
        cpu_s_series._s_forward = forward
    assert seen == [[2, side * side // block, block, 4]]
    assert y.dtype == dtype


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 6, 7, 12, 37])
def test_tree_sum_adds_every_row_once(rows):
    """The halving additions of cpu_sums._tree_sum, odd rows set aside, against NumPy's sum."""
    x = np.random.default_rng(rows).normal(size=(2, rows, 3, 4)).astype(np.float32)
    got = tf.function(cpu_sums._tree_sum, jit_compile=True)(tf.constant(x)).numpy()
    assert got.shape == (2, 1, 3, 4)
    np.testing.assert_allclose(got, x.astype(np.float64).sum(axis=1, keepdims=True), rtol=1e-6, atol=1e-6)


def _plain_gradients(name, x, dy):
    cpu_launch.COMPILED = False
    try:
        return _gradients(name, x, dy)
    finally:
        cpu_launch.COMPILED = True


@pytest.mark.parametrize("name", ["b0", "b1", "b2"])
def test_plain_b_series_without_fused_bn_ops_match_with_them(name, monkeypatch):
    """As plain ops the B-series take γ·(x/den) + β, Σ dy and Σ dy·x/den from fused BN ops (ε 0)
    where no GPU is in sight; the products and sums they stand for give the same values."""
    rng = np.random.default_rng(31)
    x = rng.normal(0.3, 1.5, size=(3, 5, 7, 8))
    dy = np.random.default_rng(32).normal(size=x.shape)
    fused = _plain_gradients(name, x, dy)
    monkeypatch.setattr(cpu_b_series, "fused_bn_ops", lambda: False)
    unfused = _plain_gradients(name, x, dy)
    for a, b in zip(fused, unfused):
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(a).max()))


@pytest.mark.parametrize("name", ["b0", "b2", "s0", "s1", "s2"])
def test_uncompiled_kernels_at_scale_1e20(name):
    """Plain ops where the gradient's units are not 1 (roots above 2⁴⁰) and the squares overflow.

    The plain-op backward passes take a shorter form where every unit is 1; this checks the
    other form. B0 and B2 are scale-invariant (y(s·x) = y(x), dx(s·x) = dx(x)/s); the
    S-series are checked against their compiled kernels, exact at this scale.
    """
    rng = np.random.default_rng(29)
    x = rng.normal(0.3, 1.5, size=(2, 6, 8, 8))
    dy = np.random.default_rng(30).normal(size=x.shape)
    scale = 1e20
    big = _plain_gradients(name, x * scale, dy)
    if name in ("b0", "b2"):
        unit = _plain_gradients(name, x, dy)
        np.testing.assert_allclose(big[0], unit[0], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(big[1] * scale, unit[1], rtol=1e-3, atol=1e-3 * np.abs(unit[1]).max())
    else:
        compiled = _compiled_gradients(name, x * scale, dy)
        for a, b in zip(compiled[:2], big[:2]):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * max(1e-30, np.abs(a).max()))
    assert all(np.all(np.isfinite(g)) for g in big if g is not None)


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("channels_last", [True, False])
def test_finish_sums_complex_partials_as_real_then_imaginary_parts(channels_last, compiled):
    """`_finish` of complex64 partials: the real parts' sums, then the imaginary parts', stat-shaped.

    (The S-series backward pass sums dy·f and dy·x²·σ' as one complex term.)
    """
    rng = np.random.default_rng(27)
    # k = 2 terms over R = 7 blocks (odd: the tree sets a row aside), C = 5, N = 3.
    shape = (3, 7, 2, 5) if channels_last else (3, 2, 5, 7)
    block_axis = 1 if channels_last else 3
    parts = rng.normal(size=(2,) + shape).astype(np.float32)
    partials = tf.complex(tf.constant(parts[0]), tf.constant(parts[1]))
    cpu_launch.COMPILED = compiled
    try:
        finish = tf.function(lambda p: cpu_sums._finish(channels_last, p), jit_compile=compiled)
        sums = [t.numpy() for t in finish(partials)]
    finally:
        cpu_launch.COMPILED = True
    expected = parts.astype(np.float64).sum(axis=1 + block_axis)  # [2, N, k, C] either way
    assert len(sums) == 4
    for i, got in enumerate(sums):
        assert got.shape == ((3, 1, 1, 5) if channels_last else (3, 5, 1, 1)) and got.dtype == np.float32
        part, term = divmod(i, 2)
        want = np.take(expected[part], term, axis=1)
        np.testing.assert_allclose(got.reshape(3, 5), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [48, 40, 12, 6, 7])
def test_materialized_keeps_every_bit(size):
    """The int32 identity matmul that keeps XLA from fusing the sums changes no bit, NaN and inf included.

    Sizes divisible by 16, 8, 4 and 2 (the matmul's row widths) and an odd one (no matmul).
    """
    special = [np.nan, np.inf, -np.inf, -0.0, 1e-45, 3.4e38, 1.0, -2.5]
    values = np.resize(np.array(special, np.float32), size).reshape(1, 1, 1, size)
    got = tf.function(cpu_sums._materialized, jit_compile=True)(tf.constant(values)).numpy()
    assert got.shape == values.shape
    assert got.tobytes() == values.tobytes()


def test_rounded_to_bfloat16_is_the_cast_bit_for_bit():
    """The kernels' float32 → bfloat16 rounding by integer operations gives TensorFlow's cast, bit for bit.

    Random bit patterns (every exponent: denormals, ties, the largest values
    rounding to inf) and the edge cases; NaN stays NaN with its sign.
    """
    rng = np.random.default_rng(27)
    edges = np.array([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7F7FFFFF, 0xFF7FFFFF, 0x00000001, 0x00008000,
                      0x00018000, 0x3F808000, 0x3F818000, 0x3F807FFF, 0x3F80FFFF, 0x7FC00000, 0xFFC00001,
                      0x7F800001, 0x7F80FFFF], np.uint32)
    bits = np.concatenate([edges, rng.integers(0, 2**32, size=1 << 18, dtype=np.uint64).astype(np.uint32)])
    x = tf.constant(bits.view(np.float32))
    compiled = tf.function(cpu_dtypes._rounded_to_bfloat16, jit_compile=True, autograph=False)
    got = tf.bitcast(compiled(x), tf.uint16).numpy()
    want = tf.bitcast(tf.cast(x, tf.bfloat16), tf.uint16).numpy()
    nan = np.isnan(bits.view(np.float32))
    np.testing.assert_array_equal(got[~nan], want[~nan])
    assert np.all((got[nan] & 0x7F80) == 0x7F80) and np.all(got[nan] & 0x007F)  # NaN: exponent all ones, payload
    np.testing.assert_array_equal(got[nan] >> 15, bits[nan] >> 31)  # and its sign


def _x_sized_casts(graph, shape):
    return [op for op in graph.get_operations()
            if op.type == "Cast" and op.outputs[0].shape.as_list() == list(shape)]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_mixed_precision_inputs_are_widened_inside_the_kernels(name, dtype):
    """y and dx come out of the kernels in x's dtype; no x-sized cast runs outside them.

    (Outside, a cast of x to float32, of y back and the same for dy and dx
    are four x-sized passes more per step; inside, XLA fuses them.)
    """
    shape = (2, 6, 8, 8)
    gamma, beta, v = weights = _weights(shape[-1], seed=26)
    function = _layer_function(name, gamma, beta, v)

    def step(x):
        with tf.GradientTape() as tape:
            tape.watch([x] + weights)
            y = function(x)
        return (y,) + tuple(tape.gradient(y, [x] + weights))

    x = tf.cast(tf.random.stateless_normal(shape, [1, 2]), dtype)
    for _ in range(cpu_launch.COMPILE_AFTER):  # eager calls until the shape's kernels are compiled
        eager = step(x)
    graph = tf.function(step).get_concrete_function(tf.TensorSpec(shape, dtype)).graph
    assert not _x_sized_casts(graph, shape), [op.name for op in _x_sized_casts(graph, shape)]
    y, dx, *small = eager
    assert y.dtype == dtype and dx.dtype == dtype
    assert all(g is None or g.dtype == tf.float32 for g in small)

"""The dtypes the cpu kernels read and write (`evonorm_tf.kernels.cpu`).

x may be float32, float16 or bfloat16 (mixed precision): the kernels read it
in its own dtype and widen it to float32 inside the XLA kernel, where every
statistic and sum is float32, and write y (forward) and dx (backward) in x's
dtype. Casting outside the kernels instead costs three x-sized passes more per
direction (a float32 copy of x, a float32 y or dx, its narrowing), more than
the kernel's own passes over half-width data. The other outputs (the batch
variance, dγ, dβ, dv) and every weight are float32.
"""

import tensorflow as tf

from evonorm_tf.kernels.cpu_launch import compiling

__all__ = ["KERNEL_DTYPES"]

#: The dtypes of x the kernels read as they are (any other is cast to float32 first).
KERNEL_DTYPES = (tf.float32, tf.float16, tf.bfloat16)


def _widened(x4):
    """`(x4 as float32, x4's dtype)`: inside a kernel XLA fuses the cast into every loop reading x4."""
    return (x4 if x4.dtype == tf.float32 else tf.cast(x4, tf.float32)), x4.dtype


def _narrowed(t, dtype):
    """float32 `t` (y or dx) in x's dtype `dtype`.

    Inside a kernel, bfloat16 is rounded by integer operations on the bits
    (`_rounded_to_bfloat16`), bit for bit what a cast gives: XLA on CPU
    vectorised the loop of EvoNorm-S0's output with a cast to bfloat16 at
    its end poorly (6.7–8.8 ms against 4.5 ms at 32×28²×512; a float32
    output took 4.2 ms, twice the bytes).
    """
    if dtype == tf.float32:
        return t
    if dtype == tf.bfloat16 and compiling():
        return _rounded_to_bfloat16(t)
    return tf.cast(t, dtype)


def _rounded_to_bfloat16(t):
    """float32 `t` rounded to bfloat16, to nearest with ties to even, by integer operations on its bits.

    The upper 16 bits of `bits + 0x7FFF + (bit 16 of bits)`: a carry out of
    the lower half rounds up, ties round to an even last bit, the largest
    finite values round to inf as they should. NaN keeps its sign and upper
    payload, made quiet (the carry could otherwise turn it into inf).
    """
    bits = tf.bitcast(t, tf.uint32)
    upper = tf.bitwise.right_shift(bits, 16)
    rounded = tf.bitwise.right_shift(bits + (0x7FFF + tf.bitwise.bitwise_and(upper, 1)), 16)
    quiet_nan = tf.bitwise.bitwise_or(upper, 0x0040)
    return tf.bitcast(tf.cast(tf.where(tf.math.is_nan(t), quiet_nan, rounded), tf.uint16), tf.bfloat16)


def _float32(t):
    """A weight or statistic as float32 (None stays None)."""
    if t is None:
        return None
    t = tf.convert_to_tensor(t)
    return t if t.dtype == tf.float32 else tf.cast(t, tf.float32)


def _activations(x):
    """x as the kernels take it: float16, bfloat16 and float32 as they are, any other dtype as float32."""
    x = tf.convert_to_tensor(x)
    return x if x.dtype in KERNEL_DTYPES else tf.cast(x, tf.float32)

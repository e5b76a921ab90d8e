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

__all__ = ["KERNEL_DTYPES"]

#: The dtypes of x the kernels read as they are (any other is cast to float32 first).
KERNEL_DTYPES = (tf.float32, tf.float16, tf.bfloat16)


def _widened(x4):
    """`(x4 as float32, x4's dtype)`: inside a kernel XLA fuses the cast into every loop reading x4."""
    return (x4 if x4.dtype == tf.float32 else tf.cast(x4, tf.float32)), x4.dtype


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

"""The hard inputs of the robustness tests, shared by both front-ends and every Keras backend.

Two sets, each as channels_last NumPy arrays:

* `edge_input`: small inputs at the edges of the statistics: zero variance
  (zeros, a constant), one element per statistic (batch 1, 1x1 spatial,
  both), and |x| up to 1e4 with a channel of large constant value
  (`tests/core/test_robustness.py`, `tests/backends/test_backend_layers.py`);
* `sweep_input`: the adversarial sweep's cases, which add values at the
  edges of float32's range: scale 1e30 (both signs), a constant -1e30,
  scale 1e-30, mean 1e4 (`tests/core/test_robustness_sweep.py`,
  `tests/backends/test_backend_extreme_scales.py`).
"""

import numpy as np

CHANNELS = 4
EDGE_CASES = ("constant_zero", "constant", "batch_1", "spatial_1x1", "batch_1_spatial_1x1", "large")
SWEEP_CASES = ("zeros", "constant", "scale_1e30", "constant_minus_1e30", "scale_1e-30", "mean_1e4",
               "batch_1", "spatial_1x1", "spatial_prime_7x5", "channels_4096")
#: The sweep's cases of extreme values.
SCALE_CASES = ("zeros", "constant", "scale_1e30", "constant_minus_1e30", "scale_1e-30", "mean_1e4")
#: What the 1e30 cases become where the compute dtype is float16 (largest value 65504).
FLOAT16_LARGEST_SCALE = 1e4


def edge_input(case, rng, channels=CHANNELS):
    """One of `EDGE_CASES` as a float32 array of 3x4x4 (or fewer) samples of `channels` channels."""
    if case == "constant_zero":
        return np.zeros([3, 4, 4, channels], np.float32)
    if case == "constant":
        return np.full([3, 4, 4, channels], 2.5, np.float32)
    if case == "batch_1":
        return rng.normal(0.5, 1.0, [1, 4, 4, channels]).astype(np.float32)
    if case == "spatial_1x1":
        return rng.normal(0.5, 1.0, [3, 1, 1, channels]).astype(np.float32)
    if case == "batch_1_spatial_1x1":
        return rng.normal(0.5, 1.0, [1, 1, 1, channels]).astype(np.float32)
    if case == "large":
        # |x| up to 1e4, including a channel of large constant value.
        x = rng.uniform(-1e4, 1e4, [3, 4, 4, channels]).astype(np.float32)
        x[..., 0] = 1e4
        return x
    raise ValueError(f"case must be one of {EDGE_CASES}, received {case!r}")


def sweep_input(case, rng, compute_dtype="float32"):
    """`(float64 input, groups for grouped layers)` of one of `SWEEP_CASES`.

    Give the input in the policy's compute dtype: float16 cannot hold 1e30,
    so there the two 1e30 cases use `FLOAT16_LARGEST_SCALE` (and 1e-30
    rounds to zero).
    """
    large = FLOAT16_LARGEST_SCALE if compute_dtype == "float16" else 1e30
    shape, groups = (3, 4, 4, 8), 4
    if case == "zeros":
        x = np.zeros(shape)
    elif case == "constant":
        x = np.full(shape, 2.5)
    elif case == "scale_1e30":
        x = rng.normal(0.0, 1.0, shape) * large
    elif case == "constant_minus_1e30":
        x = np.full(shape, -large)
    elif case == "scale_1e-30":
        x = rng.normal(0.0, 1.0, shape) * 1e-30
    elif case == "mean_1e4":
        x = rng.normal(1e4, 1.0, shape)
    elif case == "batch_1":
        x = rng.normal(0.5, 1.0, (1, 4, 4, 8))
    elif case == "spatial_1x1":
        x = rng.normal(0.5, 1.0, (4, 1, 1, 8))
    elif case == "spatial_prime_7x5":
        x = rng.normal(0.5, 1.0, (2, 7, 5, 8))
    elif case == "channels_4096":
        x, groups = rng.normal(0.5, 1.0, (2, 3, 3, 4096)), 32
    else:
        raise ValueError(f"case must be one of {SWEEP_CASES}, received {case!r}")
    return x, groups

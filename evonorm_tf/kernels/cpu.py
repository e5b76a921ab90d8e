"""The cpu kernel path: one-pass statistics and hand-written gradients.

`evonorm_tf.formulas` defines each EvoNorm once, as readable TensorFlow; this
module computes the same functions faster on CPUs, and registers them as the
`cpu` implementations (`evonorm_tf.kernels`). Some of its devices (integer
matmuls that materialise sums, one-hot matmuls at default precision, complex
pairs) are CPU-specific: on TPU and GPU layers take the `portable` path. What
makes them fast on CPU (each point measured, see `bench/layers.py`):

1. **One XLA launch per direction.** The forward pass is one kernel
   (statistics, their small per-(sample, channel) and per-group arithmetic,
   and the pass writing y), the backward pass another (the gradient sums,
   their coefficients, the pass writing dx). In a ResNet-50 train step the
   launches and the small TensorFlow ops between kernels, each waiting on a
   thread pool busy with convolutions, cost more than the arithmetic: one
   launch per direction took EvoNorm-S0's step from 1.13x to 1.08x BN's.
2. **Sums fused into short blocks, never written at x's size.** Every
   per-(sample, channel) sum (the statistics of the forward pass, and those
   of dy and the gradient terms in the backward pass) is read from x (and
   dy) once, as partial sums over blocks of 8 (B-series) or 16 (S-series;
   8 on float16 or bfloat16 x where 8 divide the size) spatial positions, all terms stacked into one
   reduction (`cpu_sums._block_sums`), then finished by an addition tree
   (`cpu_sums._finish`). On CPU, writing an
   x-sized tensor costs several times reading one (fresh pages,
   write-allocate), and XLA emits a reduction fused with more than a few
   operations per element as scalar code unless its blocks are short: over
   32 positions the same kernels ran 1.5–3× slower. (The B-series' terms,
   with a division and a max, are fastest over 8, the S-series' over 16.)
   `x₀`, the first spatial element of each (sample, channel), keeps
   `Σd² − (Σd)²/S` (d = x − x₀) free of cancellation when |mean| >> std.
   Group and batch statistics are exact (Chan et al.) combinations of the
   per-channel ones, so the B-series get their batch variance without
   another pass. Second moments (B1, B2 at inference, S2) are one sum of x².
   Each sum of squares has a twin over the values times 2⁻⁸⁰, a third term
   of the same reduction, used where float32 overflows (inputs of scale
   1e30: `evonorm_tf.statistics.root`, docs/robustness.md).
3. **Small math kept out of the x-sized loops.** XLA fuses cheap producers
   into each consumer and recomputes them there, per element in an x-sized
   loop. So the finished sums are materialised once (`cpu_sums._materialized`), group
   repeats are matmuls (`cpu_sums._from_groups`), and the S-series backward pass
   takes v twice (`cpu_s_series._s_backward`).
4. **One written pass each way.** The forward pass writes y, the backward
   pass dx; nothing x-sized is saved but x (the statistics are reused, the
   cheap elementwise work recomputed).
5. **No autodiff copies, no compile per passing shape.** See
   `evonorm_tf.kernels.cpu_launch`: kernels hidden from gradient tapes,
   compiled per static shape only once a shape recurs, a bounded cache,
   shape-generic graphs otherwise; inside a compiled model they are inlined.
   Layout and sums are in `evonorm_tf.kernels.cpu_sums`.
6. **Native passes where they serve.** Outside a compiled caller, the
   passes over channels_last x are native TensorFlow ops
   (`evonorm_tf.kernels.native`): one pass each, as in the compiled
   kernels, at any shape. Where they can be built, kernels run them at
   static shapes too, rather than compile (faster than XLA's loops, whose
   launches and sigmoid cost EvoNorm-S0 most of its extra time in a
   ResNet-50 step); the XLA kernels serve channels_first x, machines without
   a C++ compiler, and compiled callers.

The B-series kernels are in `evonorm_tf.kernels.cpu_b_series`, the S-series
ones in `evonorm_tf.kernels.cpu_s_series` (each with its derivations); the
cpu GroupNorm, FRN and TLU in `evonorm_tf.kernels.cpu_baselines`. Every kernel
takes inputs of rank 3 to 5 in either data format, float32, float16 or
bfloat16 (`evonorm_tf.kernels.cpu_dtypes`), and is XLA-compilable. This module
gathers their public names.
"""
from evonorm_tf.kernels.cpu_b_series import (  # noqa: F401 (kernels re-exported for tests and benchmarks)
    _b_backward,
    _b_forward,
    b_series,
    evonorm_b0,
    evonorm_b1,
    evonorm_b2,
    evonorm_b_training,
)
from evonorm_tf.kernels.cpu_dtypes import KERNEL_DTYPES
from evonorm_tf.kernels.cpu_s_series import (  # noqa: F401
    _s_backward,
    _s_forward,
    evonorm_s0,
    evonorm_s1,
    evonorm_s2,
    group_statistics,
    s_series,
)
from evonorm_tf.kernels.cpu_sums import B_BLOCK, S_BLOCK, S_BLOCK_NARROW  # noqa: F401

__all__ = ["KERNEL_DTYPES", "b_series", "group_statistics", "s_series"]

"""The truncation trick: latents from a truncated normal, and a curve of metrics over thresholds.

BigGAN (Brock, Donahue, Simonyan 2019, arXiv:1809.11096, section 3.1) samples
z from N(0, I) truncated to |z_i| ≤ t (values outside are resampled) to trade
variety for fidelity; its figures plot FID against IS as t falls.

    z = sample_latents(np.random.default_rng(0), 64, 120, truncation=0.5)
    curve = truncation_curve(evaluate, thresholds=(2.0, 1.0, 0.5))

`evaluate(truncation)` is any callable returning a dict of metrics (the digits
CLI and the Model Garden task pass their own); `truncation_curve` returns one
row per threshold, `None` (no truncation) first when requested.
"""

import numpy as np
import scipy.stats

__all__ = ["check_truncation", "sample_latents", "truncation_curve"]


def check_truncation(truncation):
    """Returns `truncation` as a float > 0, or None; raises ValueError otherwise."""
    if truncation is None:
        return None
    if isinstance(truncation, bool) or not isinstance(truncation, (int, float)) or not (
            truncation > 0 and np.isfinite(truncation)):
        raise ValueError(f"truncation must be a positive finite number or None, "
                         f"received {truncation!r}")
    return float(truncation)


def sample_latents(rng, batch_size, z_dim, truncation=None):
    """`[batch_size, z_dim]` float32 latents from N(0, I), truncated to ±`truncation` if given.

    Args:
      rng: a `numpy.random.Generator`.
      batch_size, z_dim: the shape.
      truncation: threshold t > 0 (each coordinate drawn from N(0, 1)
        conditioned on |z| ≤ t), or None for the full normal.
    """
    truncation = check_truncation(truncation)
    if truncation is None:
        return rng.standard_normal((batch_size, z_dim)).astype(np.float32)
    values = scipy.stats.truncnorm.rvs(-truncation, truncation, size=(batch_size, z_dim),
                                       random_state=rng)
    return values.astype(np.float32)


def truncation_curve(evaluate, thresholds, include_untruncated=True):
    """Metrics at each truncation threshold.

    Args:
      evaluate: callable `truncation → dict` of metrics (truncation None or a
        float).
      thresholds: iterable of positive thresholds.
      include_untruncated: evaluate without truncation first. Default True.

    Returns:
      A list of dicts `{"truncation": t, **evaluate(t)}`.
    """
    thresholds = [check_truncation(t) for t in thresholds]
    if None in thresholds:
        raise ValueError("thresholds must be positive numbers; the untruncated point is "
                         "include_untruncated=True")
    points = ([None] if include_untruncated else []) + thresholds
    return [{"truncation": t, **evaluate(t)} for t in points]

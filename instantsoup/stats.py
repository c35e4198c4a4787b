"""The statistics of the reports: mean ± 95 % CI over seeds, a paired two-level bootstrap, and the
equivalence verdict at a margin (docs/results.md, "Analysis")."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

# two-sided 95 % quantiles of Student's t, df = 1..30 (beyond: the normal 1.96 is within 2 %)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t975(df: int) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError(f"t975: df must be >= 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of the 95 % t interval); the half-width is NaN for fewer than 2 values."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan
    if v.size == 1:
        return float(v[0]), math.nan
    return float(v.mean()), float(t975(v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))


def paired_bootstrap(diffs: Sequence[np.ndarray], n_boot: int = 10_000, seed: int = 0,
                     chunk: int = 500) -> tuple[float, float, float]:
    """Mean of per-example paired differences and its 95 % percentile interval.

    ``diffs``: one array per seed of per-example differences (e.g. correct_A - correct_B on the same
    test examples). Each resample draws the seeds with replacement, then, within each drawn seed, its
    examples with replacement; the statistic is the mean over all drawn (seed, example) pairs.
    Returns (estimate on the original data, 2.5 % quantile, 97.5 % quantile).
    """
    if not diffs:
        raise ValueError("paired_bootstrap: no seeds")
    n = {len(d) for d in diffs}
    if len(n) != 1 or 0 in n:
        raise ValueError(f"paired_bootstrap: every seed needs the same non-zero number of examples, got {sorted(n)}")
    D = np.stack([np.asarray(d, dtype=np.float64) for d in diffs])  # (S, n)
    S, N = D.shape
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    for a in range(0, n_boot, chunk):
        c = min(chunk, n_boot - a)
        si = rng.integers(0, S, size=(c, S))
        ei = rng.integers(0, N, size=(c, S, N))
        stats[a:a + c] = D[si[:, :, None], ei].mean(axis=(1, 2))
    lo, hi = np.quantile(stats, [0.025, 0.975])
    return float(D.mean()), float(lo), float(hi)


def pack_bits(correct: np.ndarray) -> str:
    """0/1 per example as hex of the packed bits (big-endian bit order, as numpy.packbits)."""
    return np.packbits(np.asarray(correct, dtype=bool)).tobytes().hex()


def unpack_bits(hexstr: str, n: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: a bool array of length ``n``."""
    return np.unpackbits(np.frombuffer(bytes.fromhex(hexstr), dtype=np.uint8))[:n].astype(bool)


def verdict(lo: float, hi: float, margin: float) -> str:
    """Equivalence reading of an interval [lo, hi] of a difference at ``±margin`` (same units)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "n/a"
    if -margin < lo and hi < margin:
        return "equivalent"
    if lo > margin:
        return "better"
    if hi < -margin:
        return "worse"
    if lo > -margin:
        return "non-inferior"
    return "inconclusive"

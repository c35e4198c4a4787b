"""GLUE's official metrics in NumPy (checked against scikit-learn / SciPy in the tests).

accuracy; F1 of the positive class (id 1) for MRPC/QQP; Matthews correlation for CoLA;
Pearson and Spearman correlation (average ranks for ties) for STS-B. All return Python floats.
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

__all__ = ["accuracy", "f1_score", "matthews_corrcoef", "pearson", "spearman", "compute", "METRICS", "accuracy_metric"]


def _pair(preds, labels):
    p = np.asarray(preds)
    y = np.asarray(labels)
    if p.shape != y.shape or p.ndim != 1:
        raise ValueError(f"metrics: predictions {p.shape} and labels {y.shape} must be equal 1-D shapes")
    if p.size == 0:
        raise ValueError("metrics: no examples")
    return p, y


def accuracy(preds, labels) -> float:
    """Fraction of exact matches."""
    p, y = _pair(preds, labels)
    return float(np.mean(p == y))


def f1_score(preds, labels, positive: int = 1) -> float:
    """Binary F1 of class ``positive`` (0.0 when there are no true or predicted positives)."""
    p, y = _pair(preds, labels)
    tp = float(np.sum((p == positive) & (y == positive)))
    fp = float(np.sum((p == positive) & (y != positive)))
    fn = float(np.sum((p != positive) & (y == positive)))
    denom = 2.0 * tp + fp + fn
    return 0.0 if denom == 0 else 2.0 * tp / denom


def matthews_corrcoef(preds, labels) -> float:
    """Matthews correlation (multiclass form, Gorodkin 2004; equals the binary phi coefficient)."""
    p, y = _pair(preds, labels)
    classes, inv = np.unique(np.concatenate([y, p]), return_inverse=True)
    k = len(classes)
    yi, pi = inv[: len(y)], inv[len(y):]
    cm = np.zeros((k, k), dtype=np.float64)
    np.add.at(cm, (yi, pi), 1.0)
    t = cm.sum(axis=1)          # true occurrences per class
    q = cm.sum(axis=0)          # predicted occurrences per class
    c = np.trace(cm)
    s = cm.sum()
    cov_ytyp = c * s - t @ q
    cov_ypyp = s * s - q @ q
    cov_ytyt = s * s - t @ t
    denom = cov_ytyt * cov_ypyp
    return 0.0 if denom == 0 else float(cov_ytyp / np.sqrt(denom))


def pearson(preds, labels) -> float:
    """Pearson correlation coefficient (nan when either side is constant)."""
    p, y = _pair(preds, labels)
    p = p.astype(np.float64) - p.mean(dtype=np.float64)
    y = y.astype(np.float64) - y.mean(dtype=np.float64)
    denom = np.sqrt(np.dot(p, p) * np.dot(y, y))
    if denom == 0:
        return float("nan")
    return float(np.clip(np.dot(p, y) / denom, -1.0, 1.0))


def _rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (scipy.stats.rankdata 'average')."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    boundaries = np.concatenate([[True], xs[1:] != xs[:-1], [True]])
    starts = np.flatnonzero(boundaries)
    # group g covers sorted positions [starts[g], starts[g+1]); its average rank is the mean of
    # (positions + 1)
    avg = (starts[:-1] + starts[1:] - 1) / 2.0 + 1.0
    group = np.cumsum(boundaries[:-1]) - 1
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = avg[group]
    return ranks


def spearman(preds, labels) -> float:
    """Spearman rank correlation: Pearson of the average ranks."""
    p, y = _pair(preds, labels)
    return pearson(_rankdata(p.astype(np.float64)), _rankdata(y.astype(np.float64)))


METRICS = {
    "accuracy": accuracy,
    "f1": f1_score,
    "matthews_correlation": matthews_corrcoef,
    "pearson": pearson,
    "spearmanr": spearman,
}


def compute(names: Sequence[str], preds, labels) -> Dict[str, float]:
    """{name: value} for each metric name in ``names`` (keys of :data:`METRICS`)."""
    out = {}
    for name in names:
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}; known: {sorted(METRICS)}")
        out[name] = METRICS[name](preds, labels)
    return out


def accuracy_metric(preds: np.ndarray, labels: np.ndarray) -> dict:
    """``{"accuracy": ...}``: a TaskData's ``metric`` for a task scored by accuracy alone (image tasks)."""
    return {"accuracy": float(np.mean(np.asarray(preds) == np.asarray(labels)))}

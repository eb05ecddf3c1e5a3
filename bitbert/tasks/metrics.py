"""GLUE evaluation metrics on a 0-100 scale, numpy only (no scipy/sklearn dependency).

Every metric's main key is the metric's own name, and it is the first key of the result, so
``compute_metrics(...)[main_metric(spec)]`` is the number to select checkpoints by.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Union

import numpy as np

if TYPE_CHECKING:  # tasks imports this module; avoid the cycle at runtime
    from .specs import TaskSpec

METRICS: tuple[str, ...] = ("accuracy", "f1", "mcc", "pearson_spearman")
REGRESSION_METRICS: frozenset[str] = frozenset({"pearson_spearman"})

SpecOrMetric = Union["TaskSpec", str]


def _metric_name(spec_or_metric: SpecOrMetric) -> str:
    metric = getattr(spec_or_metric, "metric", spec_or_metric)
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known metrics: {', '.join(METRICS)}")
    return metric


def main_metric(spec_or_metric: SpecOrMetric) -> str:
    """Key of the headline number in ``compute_metrics``'s result (higher is better)."""
    main_key = getattr(spec_or_metric, "main_key", None)
    return main_key or _metric_name(spec_or_metric)


def compute_metrics(spec_or_metric: SpecOrMetric, predictions: np.ndarray,
                    labels: np.ndarray) -> dict[str, float]:
    """Score predictions against labels, every value on a 0-100 scale.

    Classification predictions are class ids (the caller takes the argmax); regression predictions
    are floats. Keys: ``accuracy``; ``f1`` + ``accuracy``; ``mcc`` + ``accuracy``;
    ``pearson_spearman`` (mean) + ``pearson`` + ``spearman``. The main key comes first.
    """
    metric = _metric_name(spec_or_metric)
    preds, gold = np.asarray(predictions), np.asarray(labels)
    if preds.ndim != 1 or preds.shape != gold.shape:
        raise ValueError(f"predictions {preds.shape} and labels {gold.shape} must be 1-D and the same "
                         "length (for classification pass class ids, i.e. logits.argmax(-1))")
    if preds.size == 0:
        raise ValueError("cannot compute metrics on zero examples")

    if metric in REGRESSION_METRICS:
        p, s = pearson(preds, gold), spearman(preds, gold)
        return {"pearson_spearman": 50.0 * (p + s), "pearson": 100.0 * p, "spearman": 100.0 * s}

    accuracy = 100.0 * float(np.mean(preds == gold))
    if metric == "f1":
        return {"f1": 100.0 * f1_binary(preds, gold), "accuracy": accuracy}
    if metric == "mcc":
        return {"mcc": 100.0 * matthews_corrcoef(preds, gold), "accuracy": accuracy}
    return {"accuracy": accuracy}


def f1_binary(preds: np.ndarray, labels: np.ndarray, positive: int = 1) -> float:
    """F1 of the positive class (0.0 when there are no positive predictions nor labels)."""
    pred_pos, gold_pos = preds == positive, labels == positive
    tp = np.sum(pred_pos & gold_pos)
    denom = np.sum(pred_pos) + np.sum(gold_pos)  # = 2tp + fp + fn
    return float(2 * tp / denom) if denom else 0.0


def matthews_corrcoef(preds: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Matthews correlation (Gorodkin's R_K; the usual MCC for two classes).

    Returns 0.0 when undefined (all predictions or all labels one class), as sklearn does.
    """
    preds, labels = np.asarray(preds, np.int64), np.asarray(labels, np.int64)
    k = int(max(preds.max(), labels.max())) + 1
    confusion = np.bincount(labels * k + preds, minlength=k * k).reshape(k, k).astype(np.float64)
    true_counts, pred_counts = confusion.sum(axis=1), confusion.sum(axis=0)
    n, correct = confusion.sum(), np.trace(confusion)
    cov_tp = correct * n - true_counts @ pred_counts
    cov_pp = n * n - pred_counts @ pred_counts
    cov_tt = n * n - true_counts @ true_counts
    denom = np.sqrt(cov_pp * cov_tt)
    return float(cov_tp / denom) if denom else 0.0


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; 0.0 when either side is constant (undefined, e.g. a collapsed model)."""
    dx = np.asarray(x, np.float64) - np.mean(x, dtype=np.float64)
    dy = np.asarray(y, np.float64) - np.mean(y, dtype=np.float64)
    denom = np.sqrt((dx @ dx) * (dy @ dy))
    return float((dx @ dy) / denom) if denom else 0.0


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation, ties given their average rank (as scipy.stats.spearmanr)."""
    return pearson(_average_ranks(np.asarray(x)), _average_ranks(np.asarray(y)))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    first_rank = np.cumsum(counts) - counts + 1  # 1-based rank of each distinct value's first copy
    return (first_rank + (counts - 1) / 2.0)[inverse.ravel()]

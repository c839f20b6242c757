"""Task metrics with numpy / scipy only: accuracy, macro-F1, MCC (classification), Pearson, Spearman (regression).

`score(kind, predictions, labels)` returns every metric of the task kind; `MAIN_METRIC[kind]` selects the lr.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAIN_METRIC = {"classification": "accuracy", "regression": "spearman"}
CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "mcc")
REGRESSION_METRICS = ("pearson", "spearman")


def _arrays(pred: Sequence[float] | np.ndarray, gold: Sequence[float] | np.ndarray) -> tuple[np.ndarray, ...]:
    p, g = np.asarray(pred), np.asarray(gold)
    if p.shape != g.shape or p.ndim != 1:
        raise ValueError(f"predictions {p.shape} and labels {g.shape} must be 1-D of the same length")
    if p.size == 0:
        raise ValueError("no predictions to score")
    return p, g


def confusion_matrix(
    pred: Sequence[float] | np.ndarray, gold: Sequence[float] | np.ndarray, num_labels: int
) -> np.ndarray:
    """C[i, j] = number of examples with gold label i predicted as j; shape [num_labels, num_labels]."""
    p, g = _arrays(pred, gold)
    c = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(c, (g.astype(np.int64), p.astype(np.int64)), 1)
    return c


def accuracy(pred: Sequence[float] | np.ndarray, gold: Sequence[float] | np.ndarray) -> float:
    p, g = _arrays(pred, gold)
    return float((p == g).mean())


def macro_f1(
    pred: Sequence[float] | np.ndarray, gold: Sequence[float] | np.ndarray, num_labels: int | None = None
) -> float:
    """Unweighted mean of per-class F1 over the classes present in gold or predictions (F1 = 0 if undefined)."""
    p, g = _arrays(pred, gold)
    k = num_labels or int(max(p.max(), g.max())) + 1
    c = confusion_matrix(p, g, k)
    tp = np.diag(c).astype(float)
    fp = c.sum(0) - tp
    fn = c.sum(1) - tp
    denom = 2 * tp + fp + fn
    present = denom > 0
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=present)
    return float(f1[present].mean())


def mcc(
    pred: Sequence[float] | np.ndarray, gold: Sequence[float] | np.ndarray, num_labels: int | None = None
) -> float:
    """Matthews correlation, multi-class (Gorodkin's R_K); 0 when undefined (one class only)."""
    p, g = _arrays(pred, gold)
    k = num_labels or int(max(p.max(), g.max())) + 1
    c = confusion_matrix(p, g, k).astype(float)
    t = c.sum(1)  # true count per class
    q = c.sum(0)  # predicted count per class
    n = c.sum()
    correct = np.trace(c)
    cov_pg = correct * n - t @ q
    cov_pp = n * n - q @ q
    cov_gg = n * n - t @ t
    if cov_pp == 0 or cov_gg == 0:
        return 0.0
    return float(cov_pg / np.sqrt(cov_pp * cov_gg))


def pearson(pred: Sequence[float] | np.ndarray, gold: Sequence[float] | np.ndarray) -> float:
    """Pearson correlation; 0 when either side is constant."""
    p, g = (a.astype(float) for a in _arrays(pred, gold))
    pc, gc = p - p.mean(), g - g.mean()
    den = np.sqrt((pc * pc).sum() * (gc * gc).sum())
    return float((pc * gc).sum() / den) if den > 0 else 0.0


def _ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return np.asarray(rankdata(x), dtype=float)  # ties get their average rank


def spearman(pred: Sequence[float] | np.ndarray, gold: Sequence[float] | np.ndarray) -> float:
    """Spearman rank correlation (Pearson of average ranks); 0 when either side is constant."""
    p, g = _arrays(pred, gold)
    return pearson(_ranks(p.astype(float)), _ranks(g.astype(float)))


def score(
    kind: str, predictions: Sequence[float] | np.ndarray, labels: Sequence[float] | np.ndarray,
    num_labels: int | None = None,
) -> dict[str, float]:  # fmt: skip
    """Every metric for the task kind: {accuracy, macro_f1, mcc} or {pearson, spearman}."""
    if kind == "classification":
        return {
            "accuracy": accuracy(predictions, labels),
            "macro_f1": macro_f1(predictions, labels, num_labels),
            "mcc": mcc(predictions, labels, num_labels),
        }
    if kind == "regression":
        return {"pearson": pearson(predictions, labels), "spearman": spearman(predictions, labels)}
    raise ValueError(f"unknown task kind {kind!r}")

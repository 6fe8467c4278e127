"""Evaluation metrics for the three tasks, in plain numpy.

No sklearn / scipy here (they are only used by the tests, as references):

* :func:`accuracy`, :func:`confusion_matrix`, :func:`macro_f1` - match sklearn's
  ``accuracy_score``, ``confusion_matrix`` and ``f1_score(average="macro",
  zero_division=0)``;
* :func:`precision_recall_f1` - binary, positive class 1 (sklearn's ``average="binary"``);
* :func:`pearson`, :func:`spearman` - match ``scipy.stats.pearsonr`` /
  ``spearmanr`` (average ranks for ties), except that an undefined correlation
  (constant input, fewer than two points) is reported as ``0.0`` instead of ``nan``
  so that metric logs and JSON stay numeric;
* :func:`task_metrics` - the dictionary each task reports (``sst_acc`` ...).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "accuracy",
    "confusion_matrix",
    "macro_f1",
    "precision_recall_f1",
    "pearson",
    "spearman",
    "rankdata",
    "task_metrics",
]


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true).reshape(-1)
    p = np.asarray(y_pred).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} items but y_pred has {p.size}")
    return t, p


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Elementwise num / den with 0 where den == 0 (sklearn's zero_division=0)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of positions where ``y_true == y_pred``. Empty input raises ValueError."""
    t, p = _pair(y_true, y_pred)
    if t.size == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float(np.mean(t == p))


def confusion_matrix(y_true: Any, y_pred: Any, n_classes: int) -> np.ndarray:
    """``[n_classes, n_classes]`` int64 counts; row = true class, column = predicted
    (sklearn's convention). Labels must be integers in ``0 .. n_classes-1``."""
    t, p = _pair(y_true, y_pred)
    t = t.astype(np.int64)
    p = p.astype(np.int64)
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}")
    counts = np.bincount(t * n_classes + p, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes)


def _per_class_counts(
    t: np.ndarray, p: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, false positives and false negatives per label."""
    tp = np.array([np.sum((t == c) & (p == c)) for c in labels], dtype=np.float64)
    fp = np.array([np.sum((t != c) & (p == c)) for c in labels], dtype=np.float64)
    fn = np.array([np.sum((t == c) & (p != c)) for c in labels], dtype=np.float64)
    return tp, fp, fn


def macro_f1(y_true: Any, y_pred: Any, n_classes: int | None = None) -> float:
    """Unweighted mean of the per-class F1 scores.

    The classes are ``range(n_classes)`` when given, otherwise every label seen in
    ``y_true`` or ``y_pred``. A class with no true positive gets F1 = 0 (sklearn's
    ``zero_division=0``), so never predicting a class costs its full share.
    """
    t, p = _pair(y_true, y_pred)
    labels = np.arange(n_classes) if n_classes is not None else np.union1d(t, p)
    if labels.size == 0:
        raise ValueError("macro F1 of an empty set is undefined")
    tp, fp, fn = _per_class_counts(t, p, labels)
    f1 = _safe_div(2 * tp, 2 * tp + fp + fn)
    return float(np.mean(f1))


def precision_recall_f1(y_true: Any, y_pred: Any) -> tuple[float, float, float]:
    """Binary precision, recall and F1 with positive class 1 (0 when undefined)."""
    t, p = _pair(y_true, y_pred)
    t = t == 1
    p = p == 1
    tp = float(np.sum(t & p))
    fp = float(np.sum(~t & p))
    fn = float(np.sum(t & ~p))
    precision = float(_safe_div(tp, tp + fp))
    recall = float(_safe_div(tp, tp + fn))
    f1 = float(_safe_div(2 * tp, 2 * tp + fp + fn))
    return precision, recall, f1


def _float_pair(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = _pair(x, y)
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("correlation inputs must be finite numbers (found nan or inf)")
    return a, b


def pearson(x: Any, y: Any) -> float:
    """Pearson correlation coefficient.

    Returns ``0.0`` (not ``nan``) when it is undefined: fewer than two points or a
    constant input (e.g. a model that predicts the same score everywhere).
    """
    a, b = _float_pair(x, y)
    if a.size < 2:
        return 0.0
    # Test constancy on the raw values: centring a constant vector can leave float
    # noise that would otherwise turn into a meaningless correlation.
    if np.all(a == a[0]) or np.all(b == b[0]):
        return 0.0
    a = a - a.mean()
    b = b - b.mean()
    na = np.linalg.norm(a)
    nb = np.linalg.norm(b)
    r = float(np.dot(a / na, b / nb))
    return max(-1.0, min(1.0, r))


def rankdata(x: Any) -> np.ndarray:
    """1-based ranks, ties get the average of their ranks (scipy ``method="average"``)."""
    a = np.asarray(x).reshape(-1)
    sorter = np.argsort(a, kind="mergesort")
    inv = np.empty(a.size, dtype=np.intp)
    inv[sorter] = np.arange(a.size, dtype=np.intp)
    s = a[sorter]
    first = np.r_[True, s[1:] != s[:-1]]  # start of each run of equal values
    dense = np.cumsum(first)[inv]  # 1-based id of each value's run
    bounds = np.r_[np.nonzero(first)[0], a.size]  # run starts, plus the end
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def spearman(x: Any, y: Any) -> float:
    """Spearman rank correlation: Pearson of the average ranks (0.0 when undefined)."""
    a, b = _float_pair(x, y)
    return pearson(rankdata(a), rankdata(b))


def _to_labels(y_pred: Any, threshold: float | None) -> np.ndarray:
    """Class ids from predictions: argmax of a 2-D score array, a threshold on 1-D
    probabilities (binary), or the values themselves."""
    arr = np.asarray(y_pred)
    if arr.ndim == 2:
        return arr.argmax(axis=1)
    arr = arr.reshape(-1)
    if threshold is not None:
        return (arr >= threshold).astype(np.int64)
    if np.issubdtype(arr.dtype, np.floating):
        rounded = np.rint(arr)
        if not np.array_equal(rounded, arr):
            raise ValueError("class predictions must be whole numbers (or pass [n, k] scores)")
        arr = rounded
    return arr.astype(np.int64)


def task_metrics(task: str, y_true: Any, y_pred_or_scores: Any) -> dict[str, float | int]:
    """The metrics one task reports.

    * ``sst``: ``y_pred_or_scores`` is class ids ``[n]`` or scores ``[n, 5]`` (argmax);
      returns ``sst_acc``, ``sst_macro_f1`` (over all 5 classes), ``sst_n``.
    * ``qqp``: probabilities of paraphrase ``[n]`` (predicted 1 when ``>= 0.5``; 0/1
      predictions work too) or scores ``[n, 2]``; returns ``qqp_acc``, ``qqp_f1``
      (positive class 1), ``qqp_n``.
    * ``sts``: predicted similarity ``[n]``; returns ``sts_pearson``, ``sts_spearman``,
      ``sts_n``.

    Long task names (``sentiment``, ``paraphrase``, ``similarity``) are accepted.
    """
    from core.tasks import N_CLASSES, canonical_task

    task = canonical_task(task)
    if task == "sts":
        t, s = _float_pair(y_true, y_pred_or_scores)
        return {"sts_pearson": pearson(t, s), "sts_spearman": spearman(t, s), "sts_n": int(t.size)}

    t = _to_labels(y_true, None)
    p = _to_labels(y_pred_or_scores, 0.5 if task == "qqp" else None)
    t, p = _pair(t, p)
    if task == "sst":
        return {
            "sst_acc": accuracy(t, p),
            "sst_macro_f1": macro_f1(t, p, n_classes=N_CLASSES["sst"]),
            "sst_n": int(t.size),
        }
    _, _, f1 = precision_recall_f1(t, p)
    return {"qqp_acc": accuracy(t, p), "qqp_f1": f1, "qqp_n": int(t.size)}

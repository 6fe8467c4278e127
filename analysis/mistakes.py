"""Mistake analysis of a checkpoint's dev predictions: where and how it goes wrong.

    df = load_predictions("checkpoints/quick", "sst")       # analysis/predictions.py
    confusion(df)                     # [5, 5] counts, rows = gold, columns = predicted
    worst_examples(df, "sst", k=20)   # most confident mistakes
    worst_examples(df, "qqp", kind="fp")  # Quora false positives, most confident first
    worst_examples(df, "sts")         # largest |residual|
    slice_metrics(add_slices(df, "qqp"), "qqp", "overlap")

Reading the prediction files and deciding where two checkpoints disagree is
analysis/predictions.py (the frames' columns are documented there). This module was
``analysis/errors.py``, a name too close to core/errors.py (exceptions); that name
still imports.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from analysis.predictions import check_frame
from core.tasks import TASK_LABELS, canonical_task
from core.errors import MinbertError
from core.evaluation.metrics import (accuracy, confusion_matrix, macro_f1, pearson, precision_recall_f1,
                                     spearman)

NEGATION = re.compile(r"\b(?:not|no|never|nobody|nothing|none|neither|nor|nowhere|cannot|without)\b|n't",
                      re.IGNORECASE)
WORD = re.compile(r"[a-z0-9]+", re.IGNORECASE)
LENGTH_BINS = (0, 10, 20, 30, np.inf)
OVERLAP_BINS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
SLICES = {"sst": ("length", "negation", "label"),
          "qqp": ("length", "negation", "overlap", "label"),
          "sts": ("length", "negation", "overlap", "label")}


# ---------------------------------------------------------------------- tables
def confusion(df: pd.DataFrame, n_classes: int = 5) -> np.ndarray:
    """SST confusion matrix ``[gold, predicted]`` of counts."""
    return confusion_matrix(df["label"].to_numpy(int), df["pred"].to_numpy(int), n_classes)


def _confidence(df: pd.DataFrame, task: str) -> pd.Series:
    if task == "sst":
        return df["confidence"]
    if task == "qqp":
        return np.maximum(df["prob"], 1.0 - df["prob"])
    raise MinbertError("similarity has no confidence; rank by residual instead")


def worst_examples(df: pd.DataFrame, task: str, kind: str = "mistakes", k: int = 20) -> pd.DataFrame:
    """The ``k`` worst predictions.

    * sst, ``kind="mistakes"``: wrong predictions, most confident first.
    * qqp, ``kind="fp"`` / ``"fn"`` / ``"mistakes"``: false positives (predicted
      paraphrase, gold not), false negatives, or both, most confident first.
    * sts (any kind): largest ``|residual|`` first.

    Adds ``confidence`` (sst / qqp: probability of the predicted class) or
    ``abs_residual`` (sts).
    """
    task = canonical_task(task)
    df = check_frame(df, task)
    if task == "sts":
        out = df.assign(abs_residual=df["residual"].abs())
        return out.sort_values("abs_residual", ascending=False, kind="stable").head(k)
    out = df.assign(confidence=_confidence(df, task))
    wrong = out[~out["correct"].astype(bool)]
    if task == "qqp":
        if kind == "fp":
            wrong = wrong[wrong["pred"] == 1]
        elif kind == "fn":
            wrong = wrong[wrong["pred"] == 0]
        elif kind != "mistakes":
            raise MinbertError(f"unknown kind {kind!r} for paraphrase; choose fp, fn or mistakes")
    elif kind != "mistakes":
        raise MinbertError(f"unknown kind {kind!r} for sentiment; use mistakes")
    return wrong.sort_values("confidence", ascending=False, kind="stable").head(k)


# ---------------------------------------------------------------------- slices
def words(text: str) -> list[str]:
    return WORD.findall(str(text).lower())


def has_negation(text: str) -> bool:
    return bool(NEGATION.search(str(text)))


def lexical_overlap(a: str, b: str) -> float:
    """Jaccard overlap of the two sentences' lower-cased word sets (0 when both empty)."""
    sa, sb = set(words(a)), set(words(b))
    union = sa | sb
    return len(sa & sb) / len(union) if union else 0.0


def _bin_labels(edges) -> list[str]:
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        out.append(f"{lo:g}+" if np.isinf(hi) else f"{lo:g}-{hi:g}")
    return out


def add_slices(df: pd.DataFrame, task: str) -> pd.DataFrame:
    """Add slice columns:

    * ``length``: words in the input (both sentences for pairs), binned 0-10, 10-20, 20-30, 30+
      (bins include their upper edge).
    * ``negation``: a negation word (not, no, never, n't, ...) in either sentence.
    * ``overlap`` (pairs): Jaccard overlap of the word sets, binned by 0.2.
    * ``label``: SST class name; Quora "paraphrase" / "not paraphrase"; STS score binned by 1.
    """
    task = canonical_task(task)
    df = check_frame(df, task)
    texts = [df["sentence"]] if task == "sst" else [df["sentence1"], df["sentence2"]]
    n_words = sum(t.map(lambda s: len(words(s))) for t in texts)
    out = df.assign(n_words=n_words)
    out["length"] = pd.cut(n_words, LENGTH_BINS, labels=_bin_labels(LENGTH_BINS), include_lowest=True).astype(str)
    out["negation"] = np.logical_or.reduce([t.map(has_negation).to_numpy(bool) for t in texts])
    if task != "sst":
        out["overlap_value"] = [lexical_overlap(a, b) for a, b in zip(df["sentence1"], df["sentence2"])]
        out["overlap"] = pd.cut(out["overlap_value"], OVERLAP_BINS, labels=_bin_labels(OVERLAP_BINS),
                                include_lowest=True).astype(str)
    if task == "sts":
        edges = (0, 1, 2, 3, 4, 5)
        out["label_bin"] = pd.cut(df["label"], edges, labels=_bin_labels(edges), include_lowest=True).astype(str)
    else:
        names = TASK_LABELS[task]
        out["label_bin"] = df["label"].map(lambda v: names[int(v)])
    return out


def frame_metrics(df: pd.DataFrame, task: str) -> dict[str, float]:
    """The task's metrics on a (slice of a) prediction frame."""
    y, p = df["label"].to_numpy(), df["pred"].to_numpy()
    if task == "sst":
        return {"accuracy": accuracy(y.astype(int), p.astype(int)),
                "macro_f1": macro_f1(y.astype(int), p.astype(int), n_classes=5)}
    if task == "qqp":
        _, _, f1 = precision_recall_f1(y.astype(int), p.astype(int))
        return {"accuracy": accuracy(y.astype(int), p.astype(int)), "f1": f1}
    y, p = y.astype(float), p.astype(float)
    return {"pearson": pearson(y, p) if len(y) > 1 else float("nan"),
            "spearman": spearman(y, p) if len(y) > 1 else float("nan"),
            "mae": float(np.abs(p - y).mean())}


def _bin_start(value) -> float:
    """The lower edge of a bin label ("10-20" -> 10, "30+" -> 30, "0.2-0.4" -> 0.2)."""
    return float(str(value).split("-")[0].rstrip("+"))


def slice_order(values, task: str, by: str) -> list:
    """Slice values in their natural order: a label slice in class order (very negative
    ... very positive; not paraphrase, paraphrase), bins from low to high, negation
    False then True."""
    values = list(dict.fromkeys(values))
    if by == "label" and task in TASK_LABELS:
        return [v for v in TASK_LABELS[task] if v in values]
    if by in ("length", "overlap", "label"):
        return sorted(values, key=_bin_start)
    return sorted(values)


# Inside a slice of one gold label, metrics that average over classes say nothing
# (a macro-F1 over one present class; an F1 that is 0 or a function of accuracy).
ONE_LABEL_DROPS = {"sst": ("macro_f1",), "qqp": ("f1",), "sts": ()}


def slice_metrics(df: pd.DataFrame, task: str, by: str) -> pd.DataFrame:
    """One row per value of slice ``by`` (``length``, ``negation``, ``overlap``,
    ``label``) with ``n`` and the task's metrics, in :func:`slice_order`; frames without
    slice columns get them. Label slices of sst / qqp hold one gold label each, so they
    carry accuracy only (no macro-F1 / F1: :data:`ONE_LABEL_DROPS`)."""
    task = canonical_task(task)
    if by not in SLICES[task]:
        raise MinbertError(f"no slice {by!r} for {task}; choose one of {', '.join(SLICES[task])}")
    column = "label_bin" if by == "label" else by
    if column not in df:
        df = add_slices(df, task)
    drops = ONE_LABEL_DROPS[task] if by == "label" else ()
    rows = []
    for value in slice_order(df[column], task, by):
        part = df[df[column] == value]
        metrics = {k: v for k, v in frame_metrics(part, task).items() if k not in drops}
        rows.append({by: value, "n": len(part), **metrics})
    return pd.DataFrame(rows)

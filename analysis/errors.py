"""Error analysis of a checkpoint's dev predictions.

    df = load_predictions("checkpoints/quick", "sst")       # predictions/sst-dev.csv
    confusion(df)                     # [5, 5] counts, rows = gold, columns = predicted
    worst_examples(df, "sst", k=20)   # most confident mistakes
    worst_examples(df, "qqp", kind="fp")  # Quora false positives, most confident first
    worst_examples(df, "sts")         # largest |residual|
    slice_metrics(add_slices(df, "qqp"), "qqp", "overlap")
    disagreements(df_a, df_b, "sst", names=("base", "tuned"))

The frames are what :func:`core.evaluate.prediction_frame` writes (``python -m
core.evaluate CKPT`` or the trainer): ``id``, the sentence column(s), ``label`` and

    sst  prob_0..prob_4, pred, confidence, correct
    qqp  prob (of paraphrase), pred, correct
    sts  pred, residual (= pred - label)
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from core.data import TASK_LABELS, canonical_task
from core.errors import DataError, MinbertError
from core.metrics import accuracy, confusion_matrix, macro_f1, pearson, precision_recall_f1, spearman

REQUIRED = {
    "sst": ["id", "sentence", "label", "pred", "confidence"],
    "qqp": ["id", "sentence1", "sentence2", "label", "prob", "pred"],
    "sts": ["id", "sentence1", "sentence2", "label", "pred"],
}
NEGATION = re.compile(r"\b(?:not|no|never|nobody|nothing|none|neither|nor|nowhere|cannot|without)\b|n't",
                      re.IGNORECASE)
WORD = re.compile(r"[a-z0-9]+", re.IGNORECASE)
LENGTH_BINS = (0, 10, 20, 30, np.inf)
OVERLAP_BINS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# The one rule for "two checkpoints disagree" (used by the Errors and Compare pages):
# sst / qqp: different predicted classes; sts: predicted similarities at least this far
# apart on the 0-5 scale (a fifth of the scale; the Errors page lets the user move it).
STS_DISAGREE = 1.0
SLICES = {"sst": ("length", "negation", "label"),
          "qqp": ("length", "negation", "overlap", "label"),
          "sts": ("length", "negation", "overlap", "label")}


# ------------------------------------------------------------------------ load
def predictions_path(checkpoint: str | os.PathLike, task: str, split: str = "dev") -> Path:
    """``CHECKPOINT/predictions/{task}-{split}.csv``; ``pretrained`` uses
    ``checkpoints/pretrained/predictions`` (where ``core.evaluate pretrained`` writes)."""
    from analysis.checkpoints import PRETRAINED, checkpoints_root
    task = canonical_task(task)
    base = checkpoints_root() / PRETRAINED if str(checkpoint) == PRETRAINED else Path(checkpoint)
    return base / "predictions" / f"{task}-{split}.csv"


def check_frame(df: pd.DataFrame, task: str) -> pd.DataFrame:
    """Validate a prediction frame's columns (DataError naming what is missing)."""
    task = canonical_task(task)
    missing = [c for c in REQUIRED[task] if c not in df.columns]
    if missing:
        raise DataError(f"{task} predictions lack columns {missing}; they are written by "
                        f"`python -m core.evaluate CHECKPOINT` (columns: {REQUIRED[task]})")
    out = df.copy()
    out["id"] = out["id"].astype(str)
    if task == "qqp" and "correct" not in out:
        out["correct"] = out["pred"] == out["label"]
    if task == "sst" and "correct" not in out:
        out["correct"] = out["pred"] == out["label"]
    if task == "sts" and "residual" not in out:
        out["residual"] = out["pred"] - out["label"]
    return out


def load_predictions(checkpoint: str | os.PathLike, task: str, split: str = "dev") -> pd.DataFrame:
    """A checkpoint's per-example predictions for ``task`` (see the module docstring)."""
    task = canonical_task(task)
    path = predictions_path(checkpoint, task, split)
    if not path.is_file():
        raise MinbertError(f"no {split} predictions for {task} in {path.parent}: run "
                           f"`python -m core.evaluate {checkpoint}` to write them")
    try:
        df = pd.read_csv(path, dtype={"id": str}, keep_default_na=False, na_values=[""])
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{path} is not a readable predictions CSV ({e})") from None
    if df.empty:
        raise DataError(f"{path} has no rows")
    return check_frame(df, task)


# ---------------------------------------------------------------------- tables
def name_sentiment(df: pd.DataFrame, columns) -> pd.DataFrame:
    """A copy of ``df`` whose SST class columns (those of ``columns`` it has) hold the
    class names ("very negative" ... "very positive") instead of indices."""
    names = dict(enumerate(TASK_LABELS["sst"]))
    return df.assign(**{c: df[c].astype(int).map(names) for c in columns if c in df.columns})


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


def slice_metrics(df: pd.DataFrame, task: str, by: str) -> pd.DataFrame:
    """One row per value of slice ``by`` (``length``, ``negation``, ``overlap``,
    ``label``) with ``n`` and the task's metrics; frames without slice columns get them."""
    task = canonical_task(task)
    if by not in SLICES[task]:
        raise MinbertError(f"no slice {by!r} for {task}; choose one of {', '.join(SLICES[task])}")
    column = "label_bin" if by == "label" else by
    if column not in df:
        df = add_slices(df, task)
    rows = []
    for value, part in df.groupby(column, sort=True, observed=True):
        rows.append({by: value, "n": len(part), **frame_metrics(part, task)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------- disagreements
def disagreements(df_a: pd.DataFrame, df_b: pd.DataFrame, task: str, names: tuple[str, str] = ("A", "B"),
                  sts_threshold: float = STS_DISAGREE) -> pd.DataFrame:
    """Examples (matched by ``id``) on which two checkpoints disagree, and who was right.

    sst / qqp: different predicted classes; ``right`` is the name of the checkpoint that
    matches the gold label, or ``neither``. sts: predictions at least ``sts_threshold``
    apart; ``right`` is the one with the smaller absolute error (``tie`` if equal).
    Sorted by how sure the pair is about disagreeing (sts: the gap).
    """
    task = canonical_task(task)
    a, b = check_frame(df_a, task), check_frame(df_b, task)
    na, nb = names
    if na == nb:
        raise MinbertError("give the two checkpoints different names")
    text_cols = ["sentence"] if task == "sst" else ["sentence1", "sentence2"]
    keep = ["pred"] + (["confidence"] if task == "sst" else ["prob"] if task == "qqp" else [])
    merged = a[["id", *text_cols, "label", *keep]].merge(
        b[["id", *keep]], on="id", suffixes=(f"_{na}", f"_{nb}"), validate="one_to_one")
    pa, pb = merged[f"pred_{na}"], merged[f"pred_{nb}"]
    if task == "sts":
        gap = (pa - pb).abs()
        merged = merged.assign(gap=gap)[gap >= sts_threshold]
        ea = (merged[f"pred_{na}"] - merged["label"]).abs()
        eb = (merged[f"pred_{nb}"] - merged["label"]).abs()
        merged["right"] = np.where(ea < eb, na, np.where(eb < ea, nb, "tie"))
        return merged.sort_values("gap", ascending=False, kind="stable").reset_index(drop=True)
    merged = merged[pa != pb].copy()
    ok_a = merged[f"pred_{na}"] == merged["label"]
    ok_b = merged[f"pred_{nb}"] == merged["label"]
    merged["right"] = np.where(ok_a, na, np.where(ok_b, nb, "neither"))
    if task == "sst":
        sure = np.maximum(merged[f"confidence_{na}"], merged[f"confidence_{nb}"])
    else:
        sure = (merged[f"prob_{na}"] - merged[f"prob_{nb}"]).abs()
    merged["sureness"] = sure
    return merged.sort_values("sureness", ascending=False, kind="stable").reset_index(drop=True)


def agreement(df_a: pd.DataFrame, df_b: pd.DataFrame, task: str, sts_threshold: float = STS_DISAGREE) -> dict:
    """How many dev examples the two checkpoints share and disagree on (the rule of
    :func:`disagreements`)."""
    n = len(df_a[["id"]].merge(df_b[["id"]], on="id"))
    d = len(disagreements(df_a, df_b, task, sts_threshold=sts_threshold))
    return {"shared": n, "disagree": d, "agree_rate": (n - d) / n if n else float("nan")}


def disagreement_summary(table: pd.DataFrame, names: tuple[str, str] = ("A", "B")) -> dict[str, int]:
    """Counts of who was right among the disagreements."""
    counts = table["right"].value_counts()
    out = {"disagreements": int(len(table))}
    for key in (*names, "neither", "tie"):
        out[key] = int(counts.get(key, 0))
    return out

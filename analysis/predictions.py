"""A checkpoint's per-example dev predictions, and the one rule for "two checkpoints disagree".

    df = load_predictions("checkpoints/quick", "sst")     # predictions/sst-dev.csv, checked
    df = load_predictions(path, "qqp", missing_ok=True)    # None when there is none
    disagreements(df_a, df_b, "sts", names=("base", "tuned"))   # the examples, who was right
    agreement(df_a, df_b, "sts")                           # {"shared", "disagree", "agree_rate"}

The frames are what :func:`core.evaluation.evaluator.prediction_frame` writes (``python -m
core.evaluate CKPT`` or the trainer): ``id``, the sentence column(s), ``label`` and

    sst  prob_0..prob_4, pred, confidence, correct
    qqp  prob (of paraphrase), pred, correct
    sts  pred, residual (= pred - label)

The disagreement rule, one per task (:data:`DISAGREE`), used by the Compare and the
Errors pages alike:

    sst  the predicted classes differ
    qqp  the predicted classes differ (paraphrase when the probability is >= 0.5)
    sts  the predicted similarities are at least 1.0 apart on the 0-5 scale (a fifth of it)

No Streamlit and no model here: only the files training and evaluation leave behind.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from core.data.datasets import texts_for_ids
from core.tasks import TASK_LABELS, TASK_SPECS, canonical_task
from core.errors import DataError, MinbertError

REQUIRED = {
    "sst": ["id", "sentence", "label", "pred", "confidence"],
    "qqp": ["id", "sentence1", "sentence2", "label", "prob", "pred"],
    "sts": ["id", "sentence1", "sentence2", "label", "pred"],
}
# sts: the similarity gap from which two predictions disagree (the Errors page lets the
# user move it; its default and the Compare page use this).
STS_DISAGREE = 1.0
DISAGREE = {"sst": "the predicted classes differ",
            "qqp": "the predicted classes differ (paraphrase at probability >= 0.5)",
            "sts": f"the predicted similarities are at least {STS_DISAGREE:g} apart (0-5 scale)"}


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


def load_predictions(checkpoint: str | os.PathLike, task: str, split: str = "dev",
                     missing_ok: bool = False) -> pd.DataFrame | None:
    """A checkpoint's per-example predictions for ``task`` (see the module docstring).
    ``missing_ok=True``: None instead of an error when the file is missing, unreadable
    or incomplete (pages that show what there is)."""
    if missing_ok:
        try:
            return load_predictions(checkpoint, task, split)
        except MinbertError:
            return None
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
    return check_frame(with_texts(df, task, split, str(path)), task)


def with_texts(df: pd.DataFrame, task: str, split: str = "dev", where: str = "predictions") -> pd.DataFrame:
    """``df`` with its sentence columns; a frame stored by id only (``core.evaluation.evaluator.
    slim_predictions``: the study's runs) gets them from the repository's data files."""
    columns = list(TASK_SPECS[task].columns[0])
    if all(c in df.columns for c in columns) or "id" not in df.columns:
        return df
    texts = texts_for_ids(task, df["id"], split, where)
    out = df.copy()
    for k, column in enumerate(columns):
        out.insert(1 + k, column, [t[k] for t in texts])
    return out


# ---------------------------------------------------------------------- tables
def name_sentiment(df: pd.DataFrame, columns) -> pd.DataFrame:
    """A copy of ``df`` whose SST class columns (those of ``columns`` it has) hold the
    class names ("very negative" ... "very positive") instead of indices."""
    names = dict(enumerate(TASK_LABELS["sst"]))
    return df.assign(**{c: df[c].astype(int).map(names) for c in columns if c in df.columns})


def name_classes(df: pd.DataFrame, task: str, columns) -> pd.DataFrame:
    """A copy of ``df`` whose class columns (those of ``columns`` it has) hold class
    names: sst "very negative" ... "very positive", qqp "not paraphrase" / "paraphrase";
    sts (a score) is returned unchanged."""
    task = canonical_task(task)
    if task not in TASK_LABELS:
        return df.copy()
    names = dict(enumerate(TASK_LABELS[task]))
    return df.assign(**{c: df[c].astype(int).map(names) for c in columns if c in df.columns})


# --------------------------------------------------------------- disagreements
def disagreements(df_a: pd.DataFrame, df_b: pd.DataFrame, task: str, names: tuple[str, str] = ("A", "B"),
                  sts_threshold: float = STS_DISAGREE) -> pd.DataFrame:
    """Examples (matched by ``id``) on which two checkpoints disagree (:data:`DISAGREE`),
    and who was right.

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

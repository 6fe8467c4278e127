"""Predictions for people: checked inputs, one-off predictions, batch CSV files.

The app's Predict page (and anything else that takes text from a user) goes through
here, so that every bad input - an empty text, a 20,000-character paste, a CSV with the
wrong columns, a file that is too big or not a CSV at all - becomes a
:class:`~core.errors.MinbertError` whose message says what is wrong and what to do.

    check_text(text)                        -> the stripped text, or MinbertError
    predict_one(model, task, a, b=None)     -> {"probs": [5]} | {"prob": p} | {"score": s}
    read_csv_upload(raw_bytes)              -> DataFrame (size, encoding, shape checked)
    text_columns(df) / guess_columns(df, task)
    predict_frame({name: model}, task, df, col_a, col_b) -> df with prediction columns
"""
from __future__ import annotations

import csv
import io
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from core.data import PAIR_TASKS, TASK_LABELS, TASK_NAMES, canonical_task
from core.errors import DataError, MinbertError

MAX_TEXT_CHARS = 2_000          # per text box / CSV cell
MAX_UPLOAD_MB = 20              # keep in step with server.maxUploadSize in .streamlit/config.toml
MAX_BATCH_ROWS = 5_000          # rows of an uploaded CSV predicted at once
SENTIMENT_LABELS = TASK_LABELS["sst"]

EXAMPLES: dict[str, list] = {
    "sst": [
        "A gorgeous, witty, seductive movie.",
        "The plot is paper-thin and the jokes fall flat.",
        "It's not a masterpiece, but it's an enjoyable way to spend two hours.",
        "An utterly joyless, interminable slog.",
        "The performances are fine; the script is merely adequate.",
    ],
    "qqp": [
        ("How do I learn Python quickly?", "What is the fastest way to learn Python?"),
        ("How do I lose weight fast?", "How can I gain weight in a healthy way?"),
        ("What is the capital of Australia?", "Which city is Australia's capital?"),
        ("Why is the sky blue?", "Why do cats purr?"),
    ],
    "sts": [
        ("A man is playing a guitar.", "A person plays the guitar."),
        ("A woman is slicing an onion.", "A woman is cutting an onion."),
        ("A dog runs across the field.", "A cat is sleeping on the sofa."),
        ("The stock market fell sharply today.", "Shares dropped steeply on Monday."),
    ],
}

# Column names tried, in order, when guessing which CSV columns hold the texts.
_SINGLE_NAMES = ("sentence", "text", "review", "sentence1", "question1", "phrase")
_PAIR_NAMES = (("sentence1", "sentence2"), ("question1", "question2"), ("text_a", "text_b"),
               ("text1", "text2"), ("a", "b"))


def check_text(text: str | None, what: str = "text", max_chars: int = MAX_TEXT_CHARS) -> str:
    """The text, stripped; an empty or over-long text raises :class:`MinbertError`."""
    if text is None or not str(text).strip():
        raise MinbertError(f"the {what} is empty: type a sentence")
    text = str(text).strip()
    if len(text) > max_chars:
        raise MinbertError(f"the {what} is {len(text):,} characters long; the limit is {max_chars:,} "
                           f"characters (models read at most a few hundred words anyway): shorten it")
    return text


def has_task(model, task: str) -> bool:
    """Whether ``model`` can predict ``task`` (a trained head, or zero-shot pair tasks)."""
    task = canonical_task(task)
    return task in model.heads or task in PAIR_TASKS


def predict_one(model, task: str, text_a: str, text_b: str | None = None) -> dict:
    """One prediction: sst -> {"probs": [5 floats], "label"}; qqp -> {"prob"}; sts -> {"score"}.
    Texts are checked with :func:`check_text` first."""
    task = canonical_task(task)
    a = check_text(text_a, "first sentence" if task in PAIR_TASKS else "sentence")
    if task in PAIR_TASKS:
        b = check_text(text_b, "second sentence")
    if task == "sst":
        probs = model.predict_sentiment([a])[0]
        return {"probs": [float(p) for p in probs], "label": SENTIMENT_LABELS[int(np.argmax(probs))]}
    if task == "qqp":
        return {"prob": float(model.predict_paraphrase([a], [b])[0])}
    return {"score": float(model.predict_similarity([a], [b])[0])}


# ------------------------------------------------------------------------ batch
def read_csv_upload(raw: bytes, max_mb: float = MAX_UPLOAD_MB, max_rows: int = MAX_BATCH_ROWS) -> pd.DataFrame:
    """Parse an uploaded CSV (comma, tab or semicolon separated; UTF-8 or Latin-1)."""
    size_mb = len(raw) / 2**20
    if size_mb > max_mb:
        raise DataError(f"the file is {size_mb:.1f} MB; the limit is {max_mb:g} MB: split it into smaller files")
    if not raw.strip():
        raise DataError("the file is empty: upload a CSV with a header row and one text per row")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    if "\x00" in text[:4096]:
        raise DataError("this is not a text file (it contains binary data): upload a .csv file")
    try:
        df = pd.read_csv(io.StringIO(text), sep=_delimiter(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error, ValueError) as e:
        raise DataError(f"the file could not be read as CSV ({str(e).splitlines()[0]}): "
                        f"use comma-separated columns with a header row") from None
    df.columns = [str(c).strip() for c in df.columns]
    df = df.loc[:, [c for c in df.columns if c and not c.startswith("Unnamed:")] or df.columns]
    if df.shape[1] == 0 or len(df) == 0:
        raise DataError("the file has a header but no rows: add one text (or pair) per row")
    if len(df) > max_rows:
        raise DataError(f"the file has {len(df):,} rows; the limit is {max_rows:,} rows per upload "
                        f"(CPU inference): split it, or run `python -m core.evaluate` for whole data sets")
    return df


def _delimiter(text: str) -> str:
    """The field separator among comma, tab, semicolon and bar (comma if unclear)."""
    try:
        return csv.Sniffer().sniff(text[:65_536], delimiters=",\t;|").delimiter
    except csv.Error:
        return ","


def text_columns(df: pd.DataFrame) -> list[str]:
    """Columns that hold text (not only numbers / ids), in file order."""
    cols = []
    for c in df.columns:
        values = df[c].astype(str).str.strip()
        values = values[values != ""]
        if len(values) and not pd.to_numeric(values, errors="coerce").notna().all():
            cols.append(c)
    return cols


def guess_columns(df: pd.DataFrame, task: str) -> list[str]:
    """The text column(s) a task most likely reads: by name, else the first text columns.
    Raises :class:`DataError` when the file has too few text columns."""
    task = canonical_task(task)
    need = 2 if task in PAIR_TASKS else 1
    texts = text_columns(df)
    lower = {c.lower(): c for c in df.columns}
    if need == 1:
        for name in _SINGLE_NAMES:
            if name in lower and lower[name] in texts:
                return [lower[name]]
    else:
        for a, b in _PAIR_NAMES:
            if a in lower and b in lower:
                return [lower[a], lower[b]]
    if len(texts) < need:
        found = ", ".join(map(str, df.columns)) or "none"
        wanted = "two text columns (one sentence of each pair)" if need == 2 else "a text column"
        raise DataError(
            f"{TASK_NAMES[task]} needs {wanted}, "
            f"but the file has {len(texts)} text column(s) (columns: {found}). "
            + ("Use a header such as sentence1,sentence2." if need == 2 else "Use a header such as sentence."))
    return texts[:need]


def predict_frame(models: Mapping[str, object], task: str, df: pd.DataFrame, col_a: str,
                  col_b: str | None = None) -> pd.DataFrame:
    """The input texts plus, per model, its prediction columns. Rows with an empty or
    over-long text get no prediction and a note saying why."""
    task = canonical_task(task)
    for col in (col_a, col_b) if task in PAIR_TASKS else (col_a,):
        if col is None or col not in df.columns:
            raise DataError(f"column {col!r} is not in the file (columns: {', '.join(df.columns)})")
    a = df[col_a].astype(str).str.strip()
    b = df[col_b].astype(str).str.strip() if task in PAIR_TASKS else None
    out = pd.DataFrame({col_a: a}) if b is None else pd.DataFrame({col_a: a, col_b: b})
    note = pd.Series("", index=df.index)
    for series, what in ((a, col_a), (b, col_b)):
        if series is None:
            continue
        note[series == ""] = f"empty {what}"
        note[series.str.len() > MAX_TEXT_CHARS] = f"{what} longer than {MAX_TEXT_CHARS:,} characters"
    ok = (note == "").to_numpy()
    rows = np.flatnonzero(ok)
    for name, model in models.items():
        if not has_task(model, task):
            raise MinbertError(f"{name} has no {TASK_NAMES[task]} head: pick a trained checkpoint")
        texts_a = a.iloc[rows].tolist()
        texts_b = b.iloc[rows].tolist() if b is not None else None
        if task == "sst":
            probs = model.predict_sentiment(texts_a) if len(rows) else np.zeros((0, 5))
            label = pd.Series(pd.NA, index=df.index, dtype="object")
            conf = pd.Series(np.nan, index=df.index)
            label.iloc[rows] = [SENTIMENT_LABELS[i] for i in probs.argmax(1)]
            conf.iloc[rows] = probs.max(1) if len(rows) else []
            out[f"{name}: sentiment"] = label
            out[f"{name}: confidence"] = conf.round(4)
        else:
            values = (model.predict_paraphrase if task == "qqp" else model.predict_similarity)(texts_a, texts_b) \
                if len(rows) else np.zeros(0)
            col = pd.Series(np.nan, index=df.index)
            col.iloc[rows] = values
            out[f"{name}: {'paraphrase probability' if task == 'qqp' else 'similarity (0-5)'}"] = col.round(4)
    if not ok.all():
        out["note"] = note
    return out


def sentiment_frame(results: Mapping[str, Sequence[float]]) -> pd.DataFrame:
    """Long table (model, label, probability) for a grouped bar chart."""
    rows = [{"model": name, "label": SENTIMENT_LABELS[k], "probability": float(p)}
            for name, probs in results.items() for k, p in enumerate(probs)]
    return pd.DataFrame(rows, columns=["model", "label", "probability"])

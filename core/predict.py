"""Predictions for people: checked inputs, one-off predictions, batch CSV files.

The app's Predict page (and anything else that takes text from a user) goes through
here, so that every bad input - an empty text, a 20,000-character paste, a CSV with the
wrong columns, a file that is too big or not a CSV at all - becomes a
:class:`~core.errors.MinbertError` whose message says what is wrong and what to do.

    check_text(text)                        -> the stripped text, or MinbertError
    predict_one(model, task, a, b=None)     -> {"probs": [5]} | {"prob": p} | {"score": s},
                                               + "tokens" read, "windows", "max_len"
    read_csv_upload(raw_bytes or file)      -> DataFrame (size, encoding, shape checked
                                               while reading); df.attrs["warnings"]
    text_columns(df) / guess_columns(df, task)
    predict_frame({name: model}, task, df, col_a, col_b) -> df with prediction columns
"""
from __future__ import annotations

import csv
import io
import time
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from core.data import PAIR_TASKS, TASK_LABELS, TASK_NAMES, canonical_task, has_visible_text
from core.errors import DataError, MinbertError
from core.model import MultitaskBert, check_input_text
from core.precision import quantize_model, resolve_mode

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


def check_text(text, what: str = "text", max_chars: int = MAX_TEXT_CHARS) -> str:
    """The text, stripped. :class:`MinbertError` for: not a string (``None`` counts as
    empty), an empty text, a text longer than ``max_chars``, an unpaired surrogate, or
    a text with no visible characters (only control / zero-width characters)."""
    if text is None:
        raise MinbertError(f"the {what} is empty: type a sentence")
    if not isinstance(text, str):
        raise MinbertError(f"the {what} must be text (a string), got {type(text).__name__}")
    text = text.strip()
    if not text:
        raise MinbertError(f"the {what} is empty: type a sentence")
    if len(text) > max_chars:
        raise MinbertError(f"the {what} is {len(text):,} characters long; the limit is {max_chars:,} "
                           f"characters: shorten it")
    return check_input_text(text, f"the {what}")


def has_task(model, task: str) -> bool:
    """Whether ``model`` serves ``task`` (:meth:`core.model.MultitaskBert.served_tasks`)."""
    return canonical_task(task) in model.served_tasks()


def predict_one(model, task: str, text_a: str, text_b: str | None = None) -> dict:
    """One prediction: sst -> {"probs": [5 floats], "label"}; qqp -> {"prob"}; sts -> {"score"};
    each also with ``tokens`` (tokens read: the whole text, both texts of a pair),
    ``windows`` (how many windows of ``max_len`` tokens were predicted: 1 when the text
    fits the length the model was trained on) and ``max_len``. Texts are checked with
    :func:`check_text` first."""
    if not isinstance(task, str):
        raise MinbertError(f"task must be a name such as 'sentiment', got {type(task).__name__}")
    task = canonical_task(task)
    a = check_text(text_a, "first sentence" if task in PAIR_TASKS else "sentence")
    b = check_text(text_b, "second sentence") if task in PAIR_TASKS else None
    values, info = model.predict_task(task, [a], [b] if b is not None else None, return_info=True)
    read = {"tokens": int(info["read_tokens"][0]), "windows": int(info["windows"][0]),
            "max_len": int(info["max_len"])}
    if task == "sst":
        probs = values[0]
        return {"probs": [float(p) for p in probs], "label": SENTIMENT_LABELS[int(np.argmax(probs))], **read}
    if task == "qqp":
        return {"prob": float(values[0]), **read}
    return {"score": float(values[0]), **read}


# --------------------------------------------------------------------- serving
# Sentences that warm_up sends through every task: one short, one long (first-call costs
# of the tokenizer, oneDNN kernel choice and allocator pools are paid for both sizes).
_WARM_UP = ("A short sentence.",
            "A considerably longer sentence, with a subordinate clause and several commas, "
            "so that the warm-up also runs a batch of a few dozen tokens through every layer.")


def warm_up(model, tasks=None) -> float:
    """Run one tiny prediction per task (and one embedding) so that the first user request
    after a server start costs what later ones cost. Returns the seconds it took."""
    start = time.perf_counter()
    model.embed(list(_WARM_UP))
    for task in tasks or model.served_tasks():
        b = list(_WARM_UP[::-1]) if task != "sst" else None
        for n in (1, 2):   # one input (the Predict page) and a small batch
            model.predict_task(task, list(_WARM_UP[:n]), None if b is None else b[:n])
    return time.perf_counter() - start


def load_for_serving(path: str = "pretrained", device: str | torch.device = "cpu",
                     quantize: str | None = "auto", warm: bool = True):
    """``MultitaskBert.load(path, quantize=...)`` then :func:`warm_up`: what a server calls
    at start for its default model. On CUDA the model is loaded in fp32 and then switched
    to bf16 (``"auto"``/``"bf16"``), which ``MultitaskBert.load`` itself refuses today."""
    device = torch.device(device)
    if device.type == "cpu":
        model = MultitaskBert.load(path, device=device, quantize=quantize)
    else:
        if resolve_mode(quantize, device) == "int8":
            raise MinbertError("int8 dynamic quantization runs on CPU only: use quantize='auto' or 'bf16' on a GPU")
        model = quantize_model(MultitaskBert.load(path, device=device), quantize)
    if warm:
        model.warm_up_seconds = round(warm_up(model), 3)
    return model


# ------------------------------------------------------------------------ batch
def read_csv_upload(raw, max_mb: float = MAX_UPLOAD_MB, max_rows: int = MAX_BATCH_ROWS) -> pd.DataFrame:
    """Parse an uploaded CSV (comma, tab, semicolon or bar separated), from bytes or a
    binary file object (e.g. Streamlit's UploadedFile).

    Limits are enforced while reading: at most ``max_mb`` MB are read from a file
    object, and parsing stops at row ``max_rows + 1``. Text that is not valid UTF-8 is
    never rejected silently nor turned into mojibake: a few invalid bytes are replaced
    by U+FFFD, a file that is mostly not UTF-8 is read as Latin-1, and either way
    ``df.attrs["warnings"]`` holds a sentence to show the user (empty list otherwise)."""
    limit = int(max_mb * 2**20)
    from_file = hasattr(raw, "read")
    if isinstance(raw, (bytes, bytearray, memoryview)):
        raw = bytes(raw)
    elif hasattr(raw, "read"):
        raw = raw.read(limit + 1)
        if not isinstance(raw, (bytes, bytearray)):
            raise DataError("the upload could not be read as bytes: upload a .csv file")
        raw = bytes(raw)
    else:
        raise DataError(f"expected the file's bytes, got {type(raw).__name__}: upload a .csv file")
    if len(raw) > limit:
        size = f"more than {max_mb:g}" if from_file else f"{len(raw) / 2**20:.1f}"
        raise DataError(f"the file is {size} MB; the limit is {max_mb:g} MB: split it into smaller files")
    if not raw.strip():
        raise DataError("the file is empty: upload a CSV with a header row and one text per row")
    if b"\x00" in raw[:4096]:
        raise DataError("this is not a text file (it contains binary data): upload a .csv file")
    text, warnings = _decode(raw)
    delimiter = _delimiter(text)
    rows: list[list[str]] = []
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        header = next(reader, None)
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue   # blank line
            rows.append(fields)
            if len(rows) > max_rows:   # stop here: the rest of the file is never parsed
                raise DataError(f"the file has more than {max_rows:,} rows; the limit is {max_rows:,} rows "
                                f"per upload (CPU inference): split it, or run `python -m core.evaluate` "
                                f"for whole data sets")
    except csv.Error as e:
        raise DataError(f"the file could not be read as CSV (line {reader.line_num}: {e}): "
                        f"use comma-separated columns with a header row") from None
    if not header or not any(h.strip() for h in header):
        raise DataError("the file has no header row: put column names (e.g. sentence) on the first line")
    header = [h.strip() for h in header]
    width = len(header)
    for i, fields in enumerate(rows):
        if len(fields) > width:
            raise DataError(f"the file could not be read as CSV: data row {i + 1} has {len(fields)} fields "
                            f"where the header has {width}: quote texts that contain the separator "
                            f"{delimiter!r}")
        if len(fields) < width:
            fields.extend([""] * (width - len(fields)))
    names = [h or f"Unnamed: {j}" for j, h in enumerate(header)]
    df = pd.DataFrame(rows, columns=pd.Index(names, dtype=object), dtype=object) if rows else \
        pd.DataFrame(columns=names)
    df = df.loc[:, [c for c in df.columns if c and not str(c).startswith("Unnamed:")] or list(df.columns)]
    if df.shape[1] == 0 or len(df) == 0:
        raise DataError("the file has a header but no rows: add one text (or pair) per row")
    df.attrs["warnings"] = warnings
    return df


def _decode(raw: bytes) -> tuple[str, list[str]]:
    """(text, warnings): UTF-8 (a BOM is dropped); a few invalid bytes replaced by
    U+FFFD with a warning naming the lines (the file has valid UTF-8 characters too, so
    it is UTF-8 with a few damaged bytes); a file without any valid multi-byte UTF-8
    character is read as Latin-1, with a warning."""
    try:
        return raw.decode("utf-8-sig"), []
    except UnicodeDecodeError:
        pass
    text = raw.decode("utf-8-sig", errors="replace")
    bad = text.count("\ufffd") - raw.decode("utf-8-sig", errors="ignore").count("\ufffd")
    lines = [i + 1 for i, line in enumerate(text.splitlines()) if "\ufffd" in line]
    valid_utf8 = any(ord(c) > 127 for c in raw.decode("utf-8-sig", errors="ignore"))
    if not valid_utf8:   # no valid multi-byte character at all: a Latin-1 / Windows file
        return raw.decode("latin-1"), [
            "The file is not UTF-8; it was read as Latin-1 (Windows Western European). Check that "
            "accented letters look right, or save the file as UTF-8 and upload it again."]
    where = ", ".join(map(str, lines[:5])) + (" ..." if len(lines) > 5 else "")
    return text, [f"{bad} byte(s) of the file are not valid UTF-8 and were replaced by \ufffd "
                  f"(line{'s' if len(lines) > 1 else ''} {where}); save the file as UTF-8 to keep "
                  f"those characters."]


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
        visible = series.map(lambda t: has_visible_text(t) and not any("\ud800" <= c <= "\udfff" for c in t))
        note[~visible.astype(bool)] = f"{what} has no readable characters"
        note[series == ""] = f"empty {what}"
        note[series.str.len() > MAX_TEXT_CHARS] = f"{what} longer than {MAX_TEXT_CHARS:,} characters"
    ok = (note == "").to_numpy()
    rows = np.flatnonzero(ok)
    tokens = pd.Series(pd.NA, index=df.index, dtype="Int64")
    for name, model in models.items():
        if not has_task(model, task):
            raise MinbertError(f"{name} has no {TASK_NAMES[task]} head: pick a trained checkpoint")
        texts_a = a.iloc[rows].tolist()
        texts_b = b.iloc[rows].tolist() if b is not None else None
        if len(rows):
            values, info = model.predict_task(task, texts_a, texts_b, return_info=True)
            tokens.iloc[rows] = info["read_tokens"]
        if task == "sst":
            probs = values if len(rows) else np.zeros((0, 5))
            label = pd.Series(pd.NA, index=df.index, dtype="object")
            conf = pd.Series(np.nan, index=df.index)
            label.iloc[rows] = [SENTIMENT_LABELS[i] for i in probs.argmax(1)]
            conf.iloc[rows] = probs.max(1) if len(rows) else []
            out[f"{name}: sentiment"] = label
            out[f"{name}: confidence"] = conf.round(4)
        else:
            values = values if len(rows) else np.zeros(0)
            col = pd.Series(np.nan, index=df.index)
            col.iloc[rows] = values
            out[f"{name}: {'paraphrase probability' if task == 'qqp' else 'similarity (0-5)'}"] = col.round(4)
    if not ok.all():
        out["note"] = note
    # tokens each row's prediction read (whole texts, in windows of max_len): for the page
    # (plain lists: Streamlit serializes attrs as JSON)
    out.attrs["tokens_read"] = [None if pd.isna(t) else int(t) for t in tokens]
    out.attrs["max_len"] = max((int(m.config.model.max_len) for m in models.values()
                                if hasattr(m, "config")), default=None)
    return out


def sentiment_frame(results: Mapping[str, Sequence[float]]) -> pd.DataFrame:
    """Long table (model, label, probability) for a grouped bar chart."""
    rows = [{"model": name, "label": SENTIMENT_LABELS[k], "probability": float(p)}
            for name, probs in results.items() for k, p in enumerate(probs)]
    return pd.DataFrame(rows, columns=["model", "label", "probability"])

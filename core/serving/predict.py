"""Predictions for people: one-off predictions, batch predictions of a table, and the
model a server loads for them.

    load_for_serving(path)                  -> MultitaskBert on the fast path, warmed up
    predict_one(model, task, a, b=None)     -> {"probs": [5]} | {"prob": p} | {"score": s},
                                               + "tokens" read, "windows", "max_len"
    predict_frame({name: model}, task, df, col_a, col_b) -> df with prediction columns
    estimate_windows(model, task, a, b)     -> windows each input will be read in
    csv_export_bytes(df)                    -> the download: formula cells neutralized

The app's Predict page (and anything else that takes text from a user) goes through
here; the inputs are checked by core/data/inputs.py (``check_text``, ``readable_problem``:
the one "is this text readable" rule; ``read_csv_upload``, ``guess_columns``,
``csv_export_bytes`` are imported from there). What each prediction read comes back
from ``MultitaskBert.read`` as a typed ``Reading``; how many windows an input takes is
core/model/windows.py's rule. Cost is bounded per input (``MAX_TEXT_CHARS`` characters,
``MAX_WINDOWS`` windows) and per upload (``MAX_BATCH_WINDOWS``).
"""
from __future__ import annotations

import time
from typing import Mapping

import numpy as np
import pandas as pd
import torch

from core.tasks import PAIR_TASKS, TASK_LABELS, TASK_NAMES, canonical_task
from core.data.inputs import MAX_BATCH_WINDOWS, MAX_TEXT_CHARS, MAX_WINDOWS, check_text, readable_problem
from core.errors import DataError, MinbertError
from core.model import windows as model_windows
from core.model.multitask import MultitaskBert
from core.model.precision import quantize_model, resolve_mode
from core.model.windows import MAX_READ_TOKENS

# Kept only for tests/test_fuzz.py (csv_export_bytes) and tests/test_hypothesis_inputs.py
# (read_csv_upload), which are not this module's owner's files: their home is
# core/data/inputs.py; this line goes when those tests import from there.

SENTIMENT_LABELS = TASK_LABELS["sst"]


def has_task(model, task: str) -> bool:
    """Whether ``model`` serves ``task`` (:meth:`core.model.multitask.MultitaskBert.served_tasks`)."""
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
    windows = estimate_windows(model, task, [a], [b] if b is not None else None)[0]
    if windows > MAX_WINDOWS:
        raise MinbertError(_too_many_windows(model, task, windows))
    reading = model.read(task, [a], [b] if b is not None else None)
    values = reading.values
    read = {"tokens": int(reading.read_tokens[0]), "windows": int(reading.windows[0]),
            "max_len": int(reading.max_len)}
    if task == "sst":
        probs = values[0]
        return {"probs": [float(p) for p in probs], "label": SENTIMENT_LABELS[int(np.argmax(probs))], **read}
    if task == "qqp":
        return {"prob": float(values[0]), **read}
    return {"score": float(values[0]), **read}


def token_counts(model, texts) -> list[int]:
    """Tokens of each text (no special tokens), from the model's own tokenizer."""
    return [len(ids) for ids in model.tokenizer(list(texts), add_special_tokens=False, truncation=False,
                                                verbose=False)["input_ids"]]


def estimate_windows(model, task: str, texts_a, texts_b=None) -> list[int]:
    """Windows ``model.read`` will take for each input, from token counts alone (the
    windowing rule's owner: :func:`core.model.windows.estimate_windows`)."""
    n_b = token_counts(model, texts_b) if texts_b is not None else None
    return model_windows.estimate_windows(model, task, token_counts(model, texts_a), n_b)


def _too_many_windows(model, task: str, windows: int) -> str:
    max_len = model.config.model.max_len
    how = ("every window of one sentence with every window of the other" if task in PAIR_TASKS
           else "overlapping windows")
    return (f"this input would be read in {windows:,} windows of {max_len} tokens ({how}); the limit is "
            f"{MAX_WINDOWS} windows per prediction: shorten the text" + ("s" if task in PAIR_TASKS else ""))


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
        readable = series.map(lambda t: readable_problem(t) is None)
        note[~readable.astype(bool)] = f"{what} has no readable characters"
        note[series == ""] = f"empty {what}"
        note[series.str.len() > MAX_TEXT_CHARS] = f"{what} longer than {MAX_TEXT_CHARS:,} characters"
    _note_costly_rows(models, task, a, b, note)
    ok = (note == "").to_numpy()
    rows = np.flatnonzero(ok)
    tokens = pd.Series(pd.NA, index=df.index, dtype="Int64")
    for name, model in models.items():
        if not has_task(model, task):
            raise MinbertError(f"{name} has no {TASK_NAMES[task]} head: pick a trained checkpoint")
        texts_a = a.iloc[rows].tolist()
        texts_b = b.iloc[rows].tolist() if b is not None else None
        if len(rows):
            reading = model.read(task, texts_a, texts_b)
            values = reading.values
            tokens.iloc[rows] = reading.read_tokens
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


def _note_costly_rows(models: Mapping[str, object], task: str, a: pd.Series, b: pd.Series | None,
                      note: pd.Series) -> None:
    """Rows whose texts are over ``MAX_READ_TOKENS`` tokens or ``MAX_WINDOWS`` windows (for
    any of ``models``) get a note instead of a prediction; the remaining rows together may
    take at most ``MAX_BATCH_WINDOWS`` windows (else DataError: split the file)."""
    idx = np.flatnonzero((note == "").to_numpy())
    if not len(idx):
        return
    texts_a = a.iloc[idx].tolist()
    texts_b = b.iloc[idx].tolist() if b is not None else None
    total = 0
    for model in models.values():
        if not hasattr(model, "tokenizer"):
            continue
        longest = np.maximum(token_counts(model, texts_a),
                             token_counts(model, texts_b) if texts_b is not None else 0)
        windows = np.array(estimate_windows(model, task, texts_a, texts_b))
        over_tokens, over_windows = longest > MAX_READ_TOKENS, windows > MAX_WINDOWS
        note.iloc[idx[over_tokens]] = f"longer than {MAX_READ_TOKENS:,} tokens"
        note.iloc[idx[over_windows & ~over_tokens]] = f"too long: more than {MAX_WINDOWS} windows"
        total += int(windows[~(over_tokens | over_windows)].sum())
    if total > MAX_BATCH_WINDOWS:
        raise DataError(f"the file's texts would be read in {total:,} windows of the models' max_len tokens; "
                        f"the limit per upload is {MAX_BATCH_WINDOWS:,} (minutes of CPU): split the file, "
                        f"shorten the texts, or pick fewer checkpoints")

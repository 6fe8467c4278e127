"""Long texts: how the predict API reads a text of any length, and what it read.

    read(model, task, a, b, batch_size, long_text) -> Reading(values, tokens, windows,
                                                              read_tokens, max_len)
    estimate_windows(model, task, n_a, n_b)        windows each input will take, from
                                                   token counts alone (no prediction)
    MAX_READ_TOKENS                                tokens of one text the API reads

The windowing rule has one owner, here: a text longer than the ``model.max_len``
tokens the model was trained on is cut into windows of that length (half-overlapping
for one text, end to end for each text of a pair), each window is predicted, and the
windows' predictions are combined (:func:`_windowed`). ``long_text="truncate"`` reads
the first ``max_len`` tokens only. The result is a typed :class:`Reading` returned to
the caller, never state written onto the (shared) model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.errors import MinbertError
from core.model.batching import as_texts, featurize, predict_plain
from core.model.heads import zero_shot
from core.tasks import N_CLASSES, TASKS

# Tokens of one text that the predict API reads through windows (about 8,000
# characters of English); longer texts raise a MinbertError instead of taking minutes.
MAX_READ_TOKENS = 2_048


@dataclass(frozen=True)
class Reading:
    """One predict call's answer: ``values`` (sst probabilities [n, 5]; qqp probability
    [n]; sts score in [0, 5] [n]) and, per input, ``tokens`` (tokens of the input: both
    texts of a pair), ``windows`` (windows predicted) and ``read_tokens`` (tokens the
    prediction read); ``max_len`` is the window length."""
    values: np.ndarray
    tokens: list[int] = field(default_factory=list)
    windows: list[int] = field(default_factory=list)
    read_tokens: list[int] = field(default_factory=list)
    max_len: int = 0


def read(model, task: str, texts_a, texts_b=None, batch_size: int = 64, long_text: str = "window") -> Reading:
    """``model``'s predictions for ``task`` with what each one read (see the module
    docstring for ``long_text``). Inputs are checked (:func:`core.model.batching.as_texts`)."""
    if task not in TASKS:
        raise MinbertError(f"unknown task {task!r}: use 'sst', 'qqp' or 'sts'")
    if long_text not in ("window", "truncate"):
        raise MinbertError(f"long_text must be 'window' or 'truncate', got {long_text!r}")
    texts_a = as_texts(texts_a, "texts")
    if task != "sst":
        texts_b = as_texts(texts_b, "second texts")
        if len(texts_a) != len(texts_b):
            raise MinbertError(f"pair inputs differ in length: {len(texts_a)} vs {len(texts_b)}")
    else:
        texts_b = None
    if task == "sst" and "sst" not in model.heads:
        zero_shot("sst", None, None)   # raises: no sentiment head
    max_len = model.config.model.max_len
    if not texts_a:
        return Reading(np.zeros((0, N_CLASSES["sst"]) if task == "sst" else (0,), dtype=np.float32),
                       max_len=max_len)
    if long_text == "truncate":
        return _truncated(model, task, texts_a, texts_b, batch_size)
    return _windowed(model, task, texts_a, texts_b, batch_size)


# ------------------------------------------------------------------ the rule
def token_offsets(tokenizer, texts: list[str]) -> list[list[tuple[int, int]]]:
    """Character span of every token of each text (no special tokens, no limit)."""
    enc = tokenizer(list(texts), add_special_tokens=False, truncation=False,
                    return_offsets_mapping=True, verbose=False)
    return [[tuple(o) for o in offs] for offs in enc["offset_mapping"]]


def capacities(model, task: str) -> dict[str, int]:
    """Text tokens one input of each part holds within ``model.max_len``: "single"
    (a sentence alone, parts a / b) and "ab" (both texts of a joint input together),
    special tokens and prompt templates subtracted."""
    max_len = model.config.model.max_len
    feats = featurize(model, task, ["a"], ["a"] if task != "sst" else None)
    caps: dict[str, int] = {}
    for part, enc in feats.parts.items():
        n = len(enc.input_ids[0])
        if part == "ab":
            caps["ab"] = max(2, max_len - (n - 2))
        else:
            caps["single"] = min(caps.get("single", max_len), max(1, max_len - (n - 1)))
    return caps


def window_budget(model, task: str) -> int:
    """Tokens of one text that fit one window of ``model.max_len`` positions in this
    task's input layout (a pair's joint input shares them between both texts)."""
    caps = capacities(model, task)
    budget = min(caps.get("single", caps.get("ab", 0) // 2 or 10**9),
                 caps["ab"] // 2 if "ab" in caps else 10**9)
    return max(1, budget)


def pair_fits(caps: dict[str, int], n_a: int, n_b: int) -> bool:
    """Whether a pair is read whole without windows (as with truncation)."""
    return (("single" not in caps or max(n_a, n_b) <= caps["single"])
            and ("ab" not in caps or n_a + n_b <= caps["ab"]))


def split_windows(text: str, offsets: list[tuple[int, int]], budget: int, stride: int) -> list[str]:
    """The text itself when it fits ``budget`` tokens, else windows of ``budget``
    tokens every ``stride`` tokens, the last one ending at the text's end."""
    n = len(offsets)
    if n <= budget:
        return [text]
    starts = list(range(0, n - budget, stride)) + [n - budget]
    return [text[offsets[s][0]:offsets[s + budget - 1][1]] for s in starts]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def estimate_windows(model, task: str, n_a: list[int], n_b: list[int] | None = None) -> list[int]:
    """Windows :func:`read` takes for each input, from its token counts alone (``n_b``:
    the second texts' of a pair): the rule of :func:`_windowed` without predicting."""
    budget = window_budget(model, task)
    if n_b is None:
        return [1 if n <= budget else _ceil_div(n - budget, max(1, budget // 2)) + 1 for n in n_a]
    caps = capacities(model, task)
    return [1 if pair_fits(caps, a, b) else max(1, _ceil_div(a, budget)) * max(1, _ceil_div(b, budget))
            for a, b in zip(n_a, n_b)]


# ------------------------------------------------------------- predictions
def _truncated(model, task: str, texts_a: list[str], texts_b: list[str] | None, batch_size: int) -> Reading:
    """Each input read up to ``max_len`` tokens: one window, ``read_tokens`` what fit."""
    values = predict_plain(model, task, texts_a, texts_b, batch_size)
    n_a = [len(o) for o in token_offsets(model.tokenizer, texts_a)]
    n_b = [len(o) for o in token_offsets(model.tokenizer, texts_b)] if texts_b is not None else [0] * len(n_a)
    budget = window_budget(model, task)
    read_tokens = [min(a, budget) + min(b, budget) if texts_b is not None else min(a, budget)
                   for a, b in zip(n_a, n_b)]
    return Reading(values, [a + b for a, b in zip(n_a, n_b)], [1] * len(n_a), read_tokens,
                   model.config.model.max_len)


def _check_read_limit(offsets: list[list[tuple[int, int]]] | None, what: str) -> None:
    for i, o in enumerate(offsets or []):
        if len(o) > MAX_READ_TOKENS:
            raise MinbertError(f"{what} item {i} is {len(o):,} tokens long; the limit is "
                               f"{MAX_READ_TOKENS:,} tokens per text: shorten it or split it")


def _windowed(model, task: str, texts_a: list[str], texts_b: list[str] | None, batch_size: int) -> Reading:
    """Whole-text predictions from windows of the length the model was trained on.

    One text (sentiment): windows of ``budget`` tokens every ``budget // 2`` tokens;
    the prediction is the average of the windows' class probabilities (every window
    has the same number of tokens, so this is the token-weighted average). A pair:
    each text cut end to end into windows, every window of the first text predicted
    with every window of the second, and the matrix S of those predictions combined
    by symmetric best match, ``(mean_i max_j S_ij + mean_j max_i S_ij) / 2``: each
    part of one text is compared with the part of the other that matches it best,
    so two identical long texts score as identical. Inputs that fit one window are
    predicted exactly as with ``long_text="truncate"``."""
    budget = window_budget(model, task)
    offs_a = token_offsets(model.tokenizer, texts_a)
    offs_b = token_offsets(model.tokenizer, texts_b) if texts_b is not None else None
    _check_read_limit(offs_a, "texts")
    _check_read_limit(offs_b, "second texts")
    if task == "sst":
        wins = [split_windows(t, o, budget, max(1, budget // 2)) for t, o in zip(texts_a, offs_a)]
        raw = predict_plain(model, task, [w for ws in wins for w in ws], None, batch_size)
        out, k = [], 0
        for ws in wins:
            out.append(raw[k:k + len(ws)].mean(0))
            k += len(ws)
        tokens = [len(o) for o in offs_a]
        return Reading(np.stack(out).astype(np.float32), tokens, [len(ws) for ws in wins], tokens,
                       model.config.model.max_len)
    return _windowed_pairs(model, task, texts_a, texts_b, offs_a, offs_b, budget, batch_size)


def _windowed_pairs(model, task, texts_a, texts_b, offs_a, offs_b, budget: int, batch_size: int) -> Reading:
    """The pair half of :func:`_windowed`: every window of one text with every window of
    the other, combined by symmetric best match."""
    caps = capacities(model, task)
    wa, wb = [], []
    for ta, oa, tb, ob in zip(texts_a, offs_a, texts_b, offs_b):
        if pair_fits(caps, len(oa), len(ob)):
            wa.append([ta])
            wb.append([tb])
        else:
            wa.append(split_windows(ta, oa, budget, budget))
            wb.append(split_windows(tb, ob, budget, budget))
    flat_a = [x for xs, ys in zip(wa, wb) for x in xs for _ in ys]
    flat_b = [y for xs, ys in zip(wa, wb) for _ in xs for y in ys]
    raw = predict_plain(model, task, flat_a, flat_b, batch_size)
    out, k = [], 0
    for xs, ys in zip(wa, wb):
        S = raw[k:k + len(xs) * len(ys)].reshape(len(xs), len(ys))
        k += len(xs) * len(ys)
        out.append(S[0, 0] if S.size == 1 else 0.5 * (S.max(1).mean() + S.max(0).mean()))
    tokens = [len(a) + len(b) for a, b in zip(offs_a, offs_b)]
    return Reading(np.stack(out).astype(np.float32), tokens, [len(xs) * len(ys) for xs, ys in zip(wa, wb)],
                   tokens, model.config.model.max_len)

"""Inference batching: a task's texts tokenized once in the layout its head reads, run
through the model in length-sorted batches of a token budget, results in input order.

    as_texts(texts, what)                 the predict API's inputs as checked strings
    TaskTokens                            a task's inputs tokenized once, unpadded
    featurize(model, task, a, b)          -> TaskTokens in the layout of the task's head
    token_budget_batches(lengths, n)      indices in batches of at most n padded tokens
    map_batches(model, features, fn, bs)  fn over those batches -> one array, input order
    predict_plain(model, task, a, b, bs)  one prediction per input, each cut at max_len

``MultitaskBert.featurize`` / ``map_batches`` are thin methods over these. Long texts
(windows of max_len) are core/model/windows.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from core.data.datasets import Tokenized, encode_pairs, encode_texts, pad_batch, sorted_batches
from core.data.inputs import check_input_text
from core.errors import MinbertError
from core.model.heads import MODE_PARTS

# Inference batches are sized in tokens: batch_size * 32. Measured on the STS dev
# sentences (2 CPU cores, batch_size 64): 2048-token batches 4.4 s, 64 sentences per
# batch 4.5-5.5 s, 8192-token batches 6.2-7.3 s (GEMM outputs outgrow the caches).
BATCH_TOKENS_PER_INPUT = 32


def as_texts(texts, what: str) -> list[str]:
    """The inputs of the predict API as a list of strings, each checked with
    :func:`core.data.inputs.check_input_text` (the one "is this text readable" rule)."""
    if texts is None:
        raise MinbertError(f"{what} are missing: pair tasks need two lists of sentences")
    if isinstance(texts, str):
        texts = [texts]
    elif isinstance(texts, (bytes, bytearray)) or not hasattr(texts, "__iter__"):
        raise MinbertError(f"{what} must be a list of strings, got {type(texts).__name__}")
    texts = list(texts)
    for i, t in enumerate(texts):
        check_input_text(t, f"{what} item {i}")
    return texts


@dataclass
class TaskTokens:
    """A task's inputs tokenized once, unpadded: ``a`` (and ``b``) for single/bi-encoder
    inputs, ``ab`` for the joint cross-encoder input (token ids, not features)."""
    parts: dict[str, Tokenized]
    pad_id: int = 0

    def __len__(self) -> int:
        return len(next(iter(self.parts.values())))

    @property
    def lengths(self) -> list[int]:
        per_part = [p.lengths for p in self.parts.values()]
        return [max(ls) for ls in zip(*per_part)]

    def batch(self, idx: Sequence[int], device: torch.device | str = "cpu") -> dict[str, dict[str, torch.Tensor]]:
        out = {}
        for name, enc in self.parts.items():
            padded = pad_batch([enc.input_ids[i] for i in idx],
                               [enc.token_type_ids[i] for i in idx], self.pad_id)
            if torch.device(device).type == "cuda":   # pinned host memory: asynchronous copies
                padded = {k: v.pin_memory() for k, v in padded.items()}
            out[name] = {k: v.to(device, non_blocking=True) for k, v in padded.items()}
        return out


def featurize(model, task: str, texts_a: Sequence[str], texts_b: Sequence[str] | None = None) -> TaskTokens:
    """Tokenize a task's inputs once, in the layout its head needs (``MODE_PARTS``; with
    prompts, report 001's templates: core/model/prompts.py)."""
    max_len, tok = model.config.model.max_len, model.tokenizer
    mode = model.head_mode(task)
    if model.config.model.prompts.enabled and task in model.heads:  # Q&ABERT (report 001)
        from core.model.prompts import encode_prompted
        enc = encode_prompted(tok, model.config.model.prompts, task, texts_a, texts_b, max_len)
        return TaskTokens({"a" if mode == "single" else "ab": enc}, pad_id=tok.pad_token_id or 0)
    build = {"a": lambda: encode_texts(tok, list(texts_a), max_len),
             "b": lambda: encode_texts(tok, list(texts_b), max_len),
             "ab": lambda: encode_pairs(tok, list(texts_a), list(texts_b), max_len)}
    return TaskTokens({part: build[part]() for part in MODE_PARTS[mode]}, pad_id=tok.pad_token_id or 0)


def token_budget_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Inference batching: indices sorted by length (longest first), each batch as many
    as fit ``max_tokens`` once padded to its first (longest) member; at least one."""
    order = sorted_batches(lengths, 1)   # one index per batch, longest first (stable)
    batches: list[list[int]] = []
    i = 0
    while i < len(order):
        size = max(1, max_tokens // max(1, lengths[order[i][0]]))
        batches.append([b[0] for b in order[i:i + size]])
        i += size
    return batches


def map_batches(model, features: TaskTokens, fn: Callable[[dict], torch.Tensor], batch_size: int) -> np.ndarray:
    """``fn`` over length-sorted batches, results in input order, in eval mode without
    gradients. A batch holds up to ``batch_size * BATCH_TOKENS_PER_INPUT`` padded tokens:
    ``batch_size`` inputs of a typical sentence's length, more of shorter ones, fewer of
    longer ones."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            order = token_budget_batches(features.lengths, batch_size * BATCH_TOKENS_PER_INPUT)
            results: list[np.ndarray | None] = [None] * len(features)
            for idx in order:
                out = fn(features.batch(idx, model.device)).float().cpu().numpy()
                for i, row in zip(idx, out):
                    results[i] = row
            return np.stack(results) if results else np.zeros((0,), dtype=np.float32)
    finally:
        model.train(was_training)


def predict_plain(model, task: str, texts_a: list[str], texts_b: list[str] | None, batch_size: int) -> np.ndarray:
    """One prediction per input (what the predict API returns), each read up to
    ``model.max_len`` tokens."""
    feats = featurize(model, task, texts_a, texts_b)
    return map_batches(model, feats, lambda batch: model.to_prediction(task, model(task, batch)),
                       batch_size).astype(np.float32)

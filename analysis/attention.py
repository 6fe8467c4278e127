"""Attention maps of the minBERT encoder for one input, and attention rollout.

    tokens, maps = attention_maps(model, "a sentence")           # maps [layers, heads, T, T]
    tokens, maps = attention_maps(model, "question one", "question two")
    flow = attention_rollout(maps)                               # [layers, T, T]

A pair is shown as the joint input ``[CLS] a [SEP] b [SEP]`` (what a cross-encoder
reads; a bi-encoder reads each side alone: pass one sentence to see that). Tokens are
the wordpieces (``##`` continuations kept) so rows line up with what the model saw;
:func:`sep_positions` and :func:`segments` mark the sentence boundaries.

``maps[l, h, i, j]`` is how much token ``i`` attends to token ``j`` in head ``h`` of
layer ``l``: the softmax probabilities our encoder returns with
``output_attentions=True`` (every row sums to 1).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from core.data.datasets import encode_pairs, encode_texts, pad_batch
from core.data.inputs import check_input_text
from core.errors import MinbertError


def tokenize_input(model, text_a: str, text_b: str | None = None) -> tuple[list[str], dict[str, torch.Tensor]]:
    """Wordpieces and a batch of one (``input_ids``, ``attention_mask``,
    ``token_type_ids``), truncated to the model's ``max_len`` like in training. Texts
    are checked by the predict API's rule (:func:`core.data.inputs.check_input_text`)."""
    check_input_text(text_a, "the first sentence")
    max_len = model.config.model.max_len
    if text_b is None:
        enc = encode_texts(model.tokenizer, [text_a], max_len)
    else:
        check_input_text(text_b, "the second sentence")
        enc = encode_pairs(model.tokenizer, [text_a], [text_b], max_len)
    batch = pad_batch(enc.input_ids, enc.token_type_ids, pad_id=model.tokenizer.pad_token_id or 0)
    tokens = model.tokenizer.convert_ids_to_tokens(enc.input_ids[0])
    return list(tokens), batch


@torch.inference_mode()
def attention_maps(model, text_a: str, text_b: str | None = None) -> tuple[list[str], np.ndarray]:
    """Per-layer, per-head attention probabilities for one input.

    Args:
        model: a :class:`core.model.multitask.MultitaskBert` (any checkpoint, or ``pretrained``).
        text_a: the sentence (or the first sentence of a pair).
        text_b: the second sentence of a pair, or ``None``.

    Returns:
        ``(tokens, maps)``: the ``T`` wordpieces, and a float32 array
        ``[layers, heads, T, T]`` whose rows sum to 1.
    """
    tokens, batch = tokenize_input(model, text_a, text_b)
    batch = {k: v.to(model.device) for k, v in batch.items()}
    was_training = model.training
    model.eval()
    try:
        out = model.bert(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                         output_attentions=True)
    finally:
        model.train(was_training)
    maps = torch.stack([a[0] for a in out.attentions]).float().cpu().numpy()
    return tokens, maps


def sep_positions(tokens: Sequence[str], sep_token: str = "[SEP]") -> list[int]:
    """Indices of the ``[SEP]`` tokens (sentence boundaries)."""
    return [i for i, t in enumerate(tokens) if t == sep_token]


def segments(tokens: Sequence[str], sep_token: str = "[SEP]") -> list[int]:
    """0 for ``[CLS] a [SEP]``, 1 for ``b [SEP]`` (the token type of each position)."""
    out, seg = [], 0
    for t in tokens:
        out.append(seg)
        if t == sep_token:
            seg = 1
    return out


def attention_rollout(maps: np.ndarray, residual: float = 0.5) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020) through the layers.

    Each layer's heads are averaged, the residual connection is modelled as
    ``residual * I + (1 - residual) * A`` (rows renormalised), and the layers are
    multiplied in order: ``rollout[l] = A_l @ ... @ A_0``. ``rollout[l, i, j]`` is how
    much input token ``j`` flows into position ``i`` after layer ``l``; rows sum to 1.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 4 or maps.shape[-1] != maps.shape[-2]:
        raise MinbertError(f"attention maps must be [layers, heads, T, T], got shape {maps.shape}")
    if not 0.0 <= residual < 1.0:
        raise MinbertError(f"residual must be in [0, 1), got {residual}")
    n_layers, T = maps.shape[0], maps.shape[-1]
    eye = np.eye(T)
    flow = eye.copy()
    out = np.empty((n_layers, T, T))
    for layer in range(n_layers):
        a = residual * eye + (1.0 - residual) * maps[layer].mean(0)
        a /= a.sum(-1, keepdims=True)
        flow = a @ flow
        out[layer] = flow
    return out.astype(np.float32)

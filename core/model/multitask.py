"""MultitaskBert: one shared minBERT encoder, a pooling, and one head per task.

    Pooling       token states -> one vector, chosen by name (cls, mean, max, mean_max)
    MLP           1..n fully connected layers
    PairFeatures  [u; v; |u - v|; u * v] (+ cos(u, v)) for bi-encoder pair heads
    TaskHead      single sentence | bi-encoder | cross-encoder | scaled cosine
    MultitaskBert the model, its checkpoint format, and the batched predict/embed API

Outputs of ``forward(task, inputs)``: sst -> logits [B, 5]; qqp -> logit [B];
sts -> score [B] (in [0, 5]; a "linear" cosine head gives 5 * cos, clipped when predicting).
``to_prediction`` turns them into what the predict API returns (probabilities, scores).

The model answers for its own math: which tasks it serves (``served_tasks``), its heads
and their probabilities (``head_forward``, ``to_prediction``, also from cached sentence
vectors: ``predict_from_embeddings``), and the encoding that attribution differentiates
(``forward(task, inputs, embeds=...)``: word embeddings in place of token ids).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.paths import CHECKPOINTS_DIR
from core.model import guard as checkpoint_guard
from core.atomic import check_free_space, link_or_copy, publish_dir, recover_swap, save_errors, staging_dir
from core.model.bert import BertConfig, BertModel, check_state_shapes, load_tokenizer, safetensors_shapes
from core.config.schema import Config, HeadConfig
from core.data.datasets import Tokenized, encode_pairs, encode_texts, has_visible_text, pad_batch, sorted_batches
from core.errors import CheckpointError, MinbertError
from core.model.precision import quantize_model, resolve_mode
from core.tasks import HEAD_OUT_DIMS, N_CLASSES, STS_RANGE, TASKS, served_tasks

log = logging.getLogger(__name__)

# The model shipped in the repository: ``MultitaskBert.load("minbert-multitask")`` finds it
# from any working directory (configs/best.yaml; README "Results").
SHIPPED = "minbert-multitask"
SHIPPED_DIR = CHECKPOINTS_DIR / SHIPPED
PRETRAINED = "pretrained"

CHECKPOINT_FORMAT = "minbert-checkpoint"
# 1: the first format (no completeness marker; still loads). 2: published atomically
# with a ``COMPLETE`` marker written last, which loaders require.
CHECKPOINT_VERSION = 2
COMPLETE_MARKER = "COMPLETE"
# Files a checkpoint publication writes itself; any other entry of the directory
# (train_log.jsonl, resume/, job logs, caches) is carried over when it is replaced.
CHECKPOINT_OWNED = {"model.safetensors", "config.json", COMPLETE_MARKER, "metrics.json", "predictions",
                    "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                    "added_tokens.json"}
N_SENTIMENT = N_CLASSES["sst"]
STS_MAX = STS_RANGE[1]

# Zero-shot paraphrase probability from the cosine of mean-pooled all-MiniLM-L6-v2
# embeddings: sigmoid((cos - center) * scale). Fitted once by logistic regression on
# quora-train.csv (never on dev), see `python -m core.evaluation.zeroshot`.
ZERO_SHOT_PARAPHRASE = {"center": 0.8133, "scale": 10.3411}


# ----------------------------------------------------------------------- pooling
class Pooling(nn.Module):
    """Reduce token states [B, T, H] to one vector per sequence; padding is ignored."""

    MODES = ("cls", "mean", "max", "mean_max")

    def __init__(self, mode: str = "mean"):
        super().__init__()
        if mode not in self.MODES:
            raise MinbertError(f"unknown pooling {mode!r}; choose one of {self.MODES}")
        self.mode = mode

    def output_dim(self, hidden_size: int) -> int:
        return 2 * hidden_size if self.mode == "mean_max" else hidden_size

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.mode == "cls":
            return tokens[:, 0]
        m = mask.unsqueeze(-1).to(tokens.dtype)
        mean = (tokens * m).sum(1) / m.sum(1).clamp_min(1.0)
        if self.mode == "mean":
            return mean
        mx = tokens.masked_fill(m == 0, torch.finfo(tokens.dtype).min).max(1).values
        return mx if self.mode == "max" else torch.cat([mean, mx], dim=-1)


# ------------------------------------------------------------------------- heads
class MLP(nn.Module):
    """``layers`` fully connected layers: (dropout, linear, ReLU) ... dropout, linear."""

    def __init__(self, in_dim: int, out_dim: int, layers: int = 1, hidden: int = 256,
                 dropout: float = 0.1):
        super().__init__()
        dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
        blocks: list[nn.Module] = []
        for i in range(layers):
            blocks += [nn.Dropout(dropout), nn.Linear(dims[i], dims[i + 1])]
            if i < layers - 1:
                blocks.append(nn.ReLU())
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PairFeatures(nn.Module):
    """Combine two sentence vectors: any of u, v, |u - v|, u * v, and optionally cos."""

    def __init__(self, features: Sequence[str], cosine: bool = False):
        super().__init__()
        self.features, self.cosine = list(features), cosine

    def output_dim(self, dim: int) -> int:
        return dim * len(self.features) + int(self.cosine)

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        parts = {"u": lambda: u, "v": lambda: v, "abs_diff": lambda: (u - v).abs(),
                 "prod": lambda: u * v}
        out = [parts[name]() for name in self.features]
        if self.cosine:
            out.append(F.cosine_similarity(u, v, dim=-1).unsqueeze(-1))
        return torch.cat(out, dim=-1)


def scaled_cosine(u: torch.Tensor, v: torch.Tensor, mapping: str = "affine") -> torch.Tensor:
    """STS score from the cosine: "affine" (1 + cos) * 5 / 2 in [0, 5] (report 000), or
    "linear" 5 * cos (clipped to [0, 5] only at prediction time, so training keeps its
    gradient for negative cosines)."""
    cos = F.cosine_similarity(u, v, dim=-1)
    return cos * STS_MAX if mapping == "linear" else (1.0 + cos) * (STS_MAX / 2)


@dataclass
class Encoding:
    """What the encoder gives a head for one batch of sequences."""
    tokens: torch.Tensor   # [B, T, H]
    mask: torch.Tensor     # [B, T]
    pooled: torch.Tensor   # [B, D]
    # hybrid heads only: the cross-encoding of the joint "[CLS] a [SEP] b [SEP]" input,
    # carried by the first sentence's Encoding (the second one is the pair's other side)
    joint: "Encoding | None" = None
    # report 002's shared upscaling (model.shared_upscale): [B, n, D] vectors of ``pooled``
    vectors: torch.Tensor | None = None


# Which encoded parts each head mode reads ("a", "b": the sentences alone; "ab": the
# joint cross-encoder input). The one place that decides the input layout of a head.
MODE_PARTS = {"single": ("a",), "bi": ("a", "b"), "cosine": ("a", "b"), "cross": ("ab",),
              "hybrid": ("a", "b", "ab")}


class HybridCombiner(nn.Module):
    """Two branch outputs -> one: ``w_cross * cross + w_bi * bi + bias``, initialized to
    their average (w = 0.5, 0.5; bias 0), then learned."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.full((2,), 0.5))
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, cross: torch.Tensor, bi: torch.Tensor) -> torch.Tensor:
        return self.weight[0] * cross + self.weight[1] * bi + self.bias


class CosineLogit(nn.Module):
    """Paraphrase logit from a cosine: ``scale * (cos - centre)``, initialized at the
    zero-shot calibration of all-MiniLM-L6-v2 (``ZERO_SHOT_PARAPHRASE``), then learned."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(ZERO_SHOT_PARAPHRASE["scale"]))
        self.center = nn.Parameter(torch.tensor(ZERO_SHOT_PARAPHRASE["center"]))

    def forward(self, cos: torch.Tensor) -> torch.Tensor:
        return self.scale * (cos - self.center)


class TaskHead(nn.Module):
    """reduce (pooled vector, or a CNN / BiLSTM over token states: ``cfg.arch``) ->
    combine (single/cross: as is; bi: PairFeatures; cosine: scaled cosine) -> ``ffn``,
    the feed-forward network (an MLP or a deep FFN; None for cosine heads). ``token_dim``
    is the encoder's hidden size (token-state reducers). ``mlp`` is the earlier name of
    ``ffn`` (checkpoints written before the rename store ``heads.<task>.mlp.*`` keys;
    :meth:`MultitaskBert.load` reads them as ``ffn``)."""
    uses_tokens = False  # heads that read token states (not only pooled) set this

    def __init__(self, cfg: HeadConfig, in_dim: int, out_dim: int, token_dim: int | None = None,
                 task: str | None = None, shared_upscale: bool = False):
        super().__init__()
        from core.model.heads import DeepFFN, make_pooled_reader, make_reducer
        self.mode = cfg.mode
        self.cosine_map = cfg.cosine_map
        self.task = task
        if cfg.mode == "hybrid":   # cross branch: the MLP below; bi branch: the cosine
            self.combine = HybridCombiner()
            if task == "qqp":
                self.cosine_logit = CosineLogit()
        # report 002's heads read the pooled vector through a reader (core/model/heads.py)
        self.reader = make_pooled_reader(cfg, in_dim, shared_upscale)
        self.reducer = None if self.reader is not None else \
            make_reducer(cfg.arch, token_dim or in_dim, cfg.hidden, cfg.kernel_sizes)
        if self.reader is not None:
            in_dim = self.reader.output_dim
        if self.reducer is not None:
            self.uses_tokens = True
            in_dim = self.reducer.output_dim
        if cfg.mode == "bi":
            self.pair = PairFeatures(cfg.features, cfg.cosine_feature)
            in_dim = self.pair.output_dim(in_dim)
        if cfg.mode == "cosine":
            self.ffn = None
        elif cfg.arch == "deep_ffn":
            self.ffn = DeepFFN(in_dim, out_dim, cfg.layers, cfg.hidden, cfg.dropout)
        else:
            self.ffn = MLP(in_dim, out_dim, cfg.layers, cfg.hidden, cfg.dropout)

    @property
    def mlp(self) -> nn.Module | None:
        """The earlier name of :attr:`ffn`."""
        return self.ffn

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # state written before the rename (checkpoints, resume state): ``mlp.*`` is ``ffn.*``
        for key in [k for k in state_dict if k.startswith(prefix + "mlp.")]:
            state_dict[_current_key(key)] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def vector(self, enc: Encoding) -> torch.Tensor:
        """One vector per sequence: the pooled one (read by a report-002 reader when the
        head has one), or the token-state reducer's."""
        if self.reducer is not None:
            return self.reducer(enc.tokens, enc.mask)
        return enc.pooled if self.reader is None else self.reader(enc.pooled, enc.vectors)

    def forward(self, a: Encoding, b: Encoding | None = None) -> torch.Tensor:
        return self.branches(a, b)["output"]

    def branches(self, a: Encoding, b: Encoding | None = None) -> dict[str, torch.Tensor]:
        """``{"output": ...}``; a hybrid head adds its two branches' own outputs, in the
        same units as the output ("cross", "bi"), so each can be trained on its own."""
        u = self.vector(a)
        if self.mode == "cosine":
            return {"output": scaled_cosine(u, self.vector(b), self.cosine_map)}
        if self.mode == "hybrid":
            if a.joint is None:
                raise MinbertError("a hybrid head needs the joint (cross-encoded) input as well")
            cross = self.ffn(self.vector(a.joint)).reshape(-1)
            cos = F.cosine_similarity(u, self.vector(b), dim=-1)
            if self.task == "qqp":      # logits
                bi = self.cosine_logit(cos)
            else:                       # similarity scores on 0..5
                cross, bi = torch.sigmoid(cross) * STS_MAX, cos * STS_MAX
            return {"output": self.combine(cross, bi), "cross": cross, "bi": bi}
        x = self.pair(u, self.vector(b)) if self.mode == "bi" else u
        return {"output": self.ffn(x)}


# ------------------------------------------------------------------------ inputs
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


TaskFeatures = TaskTokens   # the earlier name


# ------------------------------------------------------------------------- model
class MultitaskBert(nn.Module):
    # recipe options this model builds (core.training.trainer.check_model_support refuses the others)
    SUPPORTS = frozenset({"task_pooling", "shared_projection", "pooled_heads"})

    def __init__(self, config: Config, encoder: BertModel, tokenizer, tasks: Sequence[str] | None = None):
        super().__init__()
        self.config = config
        self.bert = encoder
        self.tokenizer = tokenizer
        hidden = encoder.config.hidden_size
        self.pooling = Pooling(config.model.pooling)   # the model's (embed) and every task's default
        tasks = config.head_tasks() if tasks is None else tasks
        # per-task pooling (report 000): a task's head may pool the token states its own way
        self.task_pooling = {t: Pooling(config.model.pooling_of(t)) for t in TASKS
                             if config.model.pooling_of(t) != config.model.pooling}
        # report 002: one linear layer shared by every task maps the pooled vector first
        width = config.model.shared_projection
        self.shared_projection = None
        if width is not None:
            pooled_dims = {self.pooling_for(t).output_dim(hidden) for t in TASKS}
            if len(pooled_dims) > 1:
                raise MinbertError("model.shared_projection needs one pooled width for every task: use "
                                   "per-task poolings of equal width (mean_max is twice the others)")
            self.shared_projection = nn.Linear(pooled_dims.pop(), width, bias=config.model.shared_projection_bias)
        self.shared_upscale = None
        if config.model.shared_upscale:   # report 002: one upscaling (+ ReLU) for every head that reads vectors
            from core.model.heads import ConvUpscale
            readers = [getattr(config.model, t) for t in TASKS
                       if getattr(config.model, t).arch in ("pooled_cnn", "pooled_bilstm")]
            self.shared_upscale = ConvUpscale(readers[0].vectors, readers[0].upscale_kernel)
        dims = {t: width or self.pooling_for(t).output_dim(hidden) for t in TASKS}
        self.heads = nn.ModuleDict({t: TaskHead(getattr(config.model, t), dims[t], HEAD_OUT_DIMS[t], hidden, task=t,
                                             shared_upscale=config.model.shared_upscale)
                                    for t in tasks})

    def pooling_for(self, task: str | None) -> Pooling:
        """The pooling a task's head reads (its own, else the model's)."""
        return self.task_pooling.get(task, self.pooling) if task is not None else self.pooling

    # ---------------------------------------------------------------- building
    @classmethod
    def from_config(cls, config: Config) -> "MultitaskBert":
        """A fresh model: pretrained encoder from ``config.model.encoder``, new heads."""
        encoder = BertModel.from_pretrained(config.model.encoder)
        return cls(config, encoder, load_tokenizer(config.model.encoder))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def served_tasks(self) -> list[str]:
        """Tasks this model predicts: its trained heads, plus the zero-shot pair tasks
        (the rule: :func:`core.tasks.served_tasks`)."""
        return served_tasks(self.heads)

    def heads_use_pooled_only(self) -> bool:
        """True when no head reads token states, so pooled vectors can be cached."""
        return not any(h.uses_tokens for h in self.heads.values())

    def head_mode(self, task: str) -> str:
        if task in self.heads:
            return self.heads[task].mode
        return {"sst": "single", "qqp": "bi", "sts": "cosine"}[task]

    # ----------------------------------------------------------------- forward
    def encode(self, inputs: dict[str, torch.Tensor], inputs_embeds: torch.Tensor | None = None,
               task: str | None = None) -> Encoding:
        """Token states and the pooled vector (``task``'s pooling; default: the model's)."""
        out = self.bert(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"],
                        inputs_embeds=inputs_embeds)
        mask = inputs["attention_mask"]
        return Encoding(out.last_hidden_state, mask, self.pooling_for(task)(out.last_hidden_state, mask))

    def encode_task(self, task: str, inputs: dict[str, dict[str, torch.Tensor]],
                    embeds: dict[str, torch.Tensor] | None = None) -> tuple[Encoding, Encoding | None]:
        """Encode a task batch in the layout its head reads: ``(a, None)`` for single and
        cross inputs, ``(a, b)`` for bi-encoder pairs. ``embeds`` (part name -> [B, T, H]
        input embeddings, e.g. SMART's perturbed ones) replaces the word-embedding lookup."""
        mode = self.head_mode(task)
        if mode in ("bi", "cosine", "hybrid") and embeds is None:
            a, b = self._encode_two(inputs["a"], inputs["b"], task)
            encoded = {"a": a, "b": b}
            if mode == "hybrid":
                encoded["ab"] = self.encode(inputs["ab"], task=task)
        else:
            encoded = {part: self.encode(inputs[part], None if embeds is None else embeds[part], task=task)
                       for part in MODE_PARTS[mode]}
        return self.head_inputs(task, encoded)

    def head_inputs(self, task: str, encoded: dict[str, Encoding]) -> tuple[Encoding, Encoding | None]:
        """The ``(a, b)`` a task's head reads, from the encodings of its input parts
        (``MODE_PARTS``): single/cross ``(a or ab, None)``; bi/cosine ``(a, b)``; hybrid
        ``(a with .joint = ab, b)``."""
        mode = self.head_mode(task)
        if mode in ("single", "cross"):
            return encoded["ab" if mode == "cross" else "a"], None
        a = encoded["a"]
        if mode == "hybrid":
            a = Encoding(a.tokens, a.mask, a.pooled, joint=encoded["ab"])
        return a, encoded["b"]

    def forward(self, task: str, inputs: dict[str, dict[str, torch.Tensor]],
                embeds: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        return self.head_forward(task, *self.encode_task(task, inputs, embeds))

    def head_forward(self, task: str, a: Encoding, b: Encoding | None = None) -> torch.Tensor:
        """The task output from already-encoded inputs (cached encodings included)."""
        return self.head_branches(task, a, b)["output"]

    def head_branches(self, task: str, a: Encoding, b: Encoding | None = None) -> dict[str, torch.Tensor]:
        """The task output (``"output"``, as :meth:`head_forward`) and, for a hybrid head,
        each branch's own output in the same units (``"cross"``, ``"bi"``)."""
        if task not in self.heads:
            return {"output": self._zero_shot(task, a, b)}
        mode = self.head_mode(task)
        if self.shared_projection is not None or self.shared_upscale is not None:
            a, b = self._project(a), None if b is None else self._project(b)
        out = self.heads[task].branches(a, b)
        if task == "sst":
            return out
        # [B, 1] (MLP) or [B] (cosine) -> [B]; squeeze(-1) made [1] a scalar
        out = {k: v.reshape(-1) for k, v in out.items()}
        if task == "sts" and mode not in ("cosine", "hybrid"):
            out["output"] = torch.sigmoid(out["output"]) * STS_MAX
        return out

    def to_prediction(self, task: str, output: torch.Tensor, clip: bool = True) -> torch.Tensor:
        """What the predict API returns for a task output: sst class probabilities
        (softmax), qqp probability of paraphrase (sigmoid), sts score (clipped to [0, 5]
        unless ``clip=False``, e.g. for gradients)."""
        if task == "sst":
            return output.softmax(-1)
        if task == "qqp":
            return torch.sigmoid(output)
        return output.clamp(0.0, STS_MAX) if clip else output

    def sentence_level(self, task: str) -> bool:
        """Whether ``task``'s prediction is a function of one pooled vector per sentence
        (single-sentence, bi-encoder and cosine heads without token-state reducers or
        prompts, and the zero-shot pair tasks), so it can be computed from embeddings
        (:meth:`predict_from_embeddings`)."""
        if task not in self.served_tasks() or self.head_mode(task) not in ("single", "bi", "cosine"):
            return False
        if task in self.task_pooling:   # its head pools differently from ``embed``
            return False
        if task in self.heads:
            return not (self.config.model.prompts.enabled or self.heads[task].uses_tokens)
        return True

    @torch.inference_mode()
    def predict_from_embeddings(self, task: str, emb_a: np.ndarray, emb_b: np.ndarray | None = None,
                                rows: int = 4096) -> np.ndarray:
        """``predict_task``'s output computed from pooled sentence vectors (``embed``'s,
        for a task where :meth:`sentence_level` holds): sst probabilities [n, 5], qqp
        probability [n], sts score [n]."""
        was_training = self.training
        self.eval()
        try:
            as_encoding = lambda e: Encoding(None, None, torch.as_tensor(
                np.ascontiguousarray(e), dtype=next(self.parameters()).dtype, device=self.device))
            out = []
            for i in range(0, len(emb_a), rows):
                a = as_encoding(emb_a[i:i + rows])
                b = None if emb_b is None else as_encoding(emb_b[i:i + rows])
                out.append(self.to_prediction(task, self.head_forward(task, a, b)).float().cpu().numpy())
        finally:
            self.train(was_training)
        if not out:
            return np.zeros((0, N_SENTIMENT) if task == "sst" else (0,), dtype=np.float32)
        return np.concatenate(out).astype(np.float32)

    def _project(self, enc: Encoding) -> Encoding:
        """The pooled vectors through report 002's shared layers: the projection, and the
        upscaling (+ ReLU) to ``vectors`` vectors that its CNN / BiLSTM heads read."""
        joint = None if enc.joint is None else self._project(enc.joint)
        pooled = enc.pooled if self.shared_projection is None else self.shared_projection(enc.pooled)
        vectors = None if self.shared_upscale is None else torch.relu(self.shared_upscale(pooled))
        return Encoding(enc.tokens, enc.mask, pooled, joint=joint, vectors=vectors)

    def _encode_two(self, a: dict, b: dict, task: str | None = None) -> tuple[Encoding, Encoding]:
        """Encode both sides of a bi-encoder pair in one encoder call."""
        n, T = a["input_ids"].shape[0], max(a["input_ids"].shape[1], b["input_ids"].shape[1])
        both = {k: torch.cat([F.pad(a[k], (0, T - a[k].shape[1])), F.pad(b[k], (0, T - b[k].shape[1]))])
                for k in a}
        enc = self.encode(both, task=task)
        split = lambda t: (t[:n], t[n:])
        (ta, tb), (ma, mb), (pa, pb) = split(enc.tokens), split(enc.mask), split(enc.pooled)
        return Encoding(ta, ma, pa), Encoding(tb, mb, pb)

    def _zero_shot(self, task: str, a: Encoding, b: Encoding | None) -> torch.Tensor:
        if task == "sst":
            raise MinbertError(
                "this model has no sentiment head (zero-shot 'pretrained' only scores "
                "similarity and paraphrase); train one, e.g. configs/starter.yaml")
        cos = F.cosine_similarity(a.pooled, b.pooled, dim=-1)
        if task == "sts":  # similarity: 5 * cos, clipped to the 0..5 scale
            return cos.clamp(0.0, 1.0) * STS_MAX
        z = ZERO_SHOT_PARAPHRASE
        return (cos - z["center"]) * z["scale"]  # a logit, like the trained head

    # ------------------------------------------------------------------ inputs
    def featurize(self, task: str, texts_a: Sequence[str], texts_b: Sequence[str] | None = None) -> TaskTokens:
        """Tokenize a task's inputs once, in the layout its head needs."""
        max_len, tok = self.config.model.max_len, self.tokenizer
        mode = self.head_mode(task)
        if self.config.model.prompts.enabled and task in self.heads:  # Q&ABERT (report 001)
            from core.model.prompts import encode_prompted
            enc = encode_prompted(tok, self.config.model.prompts, task, texts_a, texts_b, max_len)
            return TaskTokens({"a" if mode == "single" else "ab": enc}, pad_id=tok.pad_token_id or 0)
        build = {"a": lambda: encode_texts(tok, list(texts_a), max_len),
                 "b": lambda: encode_texts(tok, list(texts_b), max_len),
                 "ab": lambda: encode_pairs(tok, list(texts_a), list(texts_b), max_len)}
        return TaskTokens({part: build[part]() for part in MODE_PARTS[mode]}, pad_id=tok.pad_token_id or 0)

    # ----------------------------------------------------------------- predict
    @torch.inference_mode()
    def map_batches(self, features: TaskTokens, fn: Callable[[dict], torch.Tensor], batch_size: int) -> np.ndarray:
        """``fn`` over length-sorted batches, results in input order. A batch holds up to
        ``batch_size * BATCH_TOKENS_PER_INPUT`` padded tokens: ``batch_size`` inputs of a
        typical sentence's length, more of shorter ones, fewer of longer ones."""
        was_training = self.training
        self.eval()
        try:
            order = token_budget_batches(features.lengths, batch_size * BATCH_TOKENS_PER_INPUT)
            results: list[np.ndarray | None] = [None] * len(features)
            for idx in order:
                out = fn(features.batch(idx, self.device)).float().cpu().numpy()
                for i, row in zip(idx, out):
                    results[i] = row
            return np.stack(results) if results else np.zeros((0,), dtype=np.float32)
        finally:
            self.train(was_training)


    def predict_task(self, task: str, texts_a: Sequence[str], texts_b: Sequence[str] | None = None,
                     batch_size: int = 64, return_info: bool = False, long_text: str = "window"):
        """sst: probabilities [n, 5]; qqp: probability [n]; sts: score in [0, 5] [n].

        Long texts are read whole (``long_text="window"``, the default): a text longer
        than the ``model.max_len`` tokens the model was trained on is cut into windows
        of that length (half-overlapping for one text, end to end for pairs), each
        window is predicted, and the windows' predictions are combined (see
        :meth:`_predict_windows`). ``long_text="truncate"`` reads the first
        ``max_len`` tokens only. ``return_info=True`` returns ``(predictions, info)``
        with ``info["tokens"]`` (tokens of each input: both texts of a pair),
        ``info["windows"]`` (windows predicted per input) and ``info["read_tokens"]``
        (tokens the prediction read); the last call's ``read_tokens`` and ``windows``
        are also kept as ``model.last_read_tokens`` / ``model.last_windows``."""
        if task not in TASKS:
            raise MinbertError(f"unknown task {task!r}: use 'sst', 'qqp' or 'sts'")
        if long_text not in ("window", "truncate"):
            raise MinbertError(f"long_text must be 'window' or 'truncate', got {long_text!r}")
        texts_a = _as_texts(texts_a, "texts")
        if task != "sst":
            texts_b = _as_texts(texts_b, "second texts")
            if len(texts_a) != len(texts_b):
                raise MinbertError(f"pair inputs differ in length: {len(texts_a)} vs {len(texts_b)}")
        else:
            texts_b = None
        if task == "sst" and "sst" not in self.heads:
            self._zero_shot("sst", None, None)
        if not texts_a:
            out = np.zeros((0, N_SENTIMENT) if task == "sst" else (0,), dtype=np.float32)
            info = {"tokens": [], "windows": [], "read_tokens": [], "max_len": self.config.model.max_len}
        elif long_text == "truncate":
            out = self._predict_plain(task, texts_a, texts_b, batch_size)
            info = self._truncation_info(task, texts_a, texts_b)
        else:
            out, info = self._predict_windows(task, texts_a, texts_b, batch_size)
        self.last_read_tokens, self.last_windows = info["read_tokens"], info["windows"]
        return (out, info) if return_info else out

    def _predict_plain(self, task: str, texts_a: list[str], texts_b: list[str] | None,
                       batch_size: int) -> np.ndarray:
        """One prediction per input, each read up to ``model.max_len`` tokens."""
        feats = self.featurize(task, texts_a, texts_b)
        return self.map_batches(feats, lambda batch: self.to_prediction(task, self(task, batch)),
                                batch_size).astype(np.float32)

    # ------------------------------------------------------------ long texts
    def _token_offsets(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Character span of every token of each text (no special tokens, no limit)."""
        enc = self.tokenizer(list(texts), add_special_tokens=False, truncation=False,
                             return_offsets_mapping=True, verbose=False)
        return [[tuple(o) for o in offs] for offs in enc["offset_mapping"]]

    def _window_budget(self, task: str) -> int:
        """Tokens of one text that fit one window of ``model.max_len`` positions in this
        task's input layout (a pair's joint input shares them between both texts)."""
        caps = self._capacities(task)
        budget = min(caps.get("single", caps.get("ab", 0) // 2 or 10**9),
                     caps["ab"] // 2 if "ab" in caps else 10**9)
        return max(1, budget)

    def _capacities(self, task: str) -> dict[str, int]:
        """Text tokens one input of each part holds within ``model.max_len``: "single"
        (a sentence alone, parts a / b) and "ab" (both texts of a joint input together),
        special tokens and prompt templates subtracted."""
        max_len = self.config.model.max_len
        pair = task != "sst"
        feats = self.featurize(task, ["a"], ["a"] if pair else None)
        caps: dict[str, int] = {}
        for part, enc in feats.parts.items():
            n = len(enc.input_ids[0])
            if part == "ab":
                caps["ab"] = max(2, max_len - (n - 2))
            else:
                caps["single"] = min(caps.get("single", max_len), max(1, max_len - (n - 1)))
        return caps

    def _pair_fits(self, caps: dict[str, int], n_a: int, n_b: int) -> bool:
        """Whether a pair is read whole without windows (as with truncation)."""
        return (("single" not in caps or max(n_a, n_b) <= caps["single"])
                and ("ab" not in caps or n_a + n_b <= caps["ab"]))

    @staticmethod
    def _windows(text: str, offsets: list[tuple[int, int]], budget: int, stride: int) -> list[str]:
        """The text itself when it fits ``budget`` tokens, else windows of ``budget``
        tokens every ``stride`` tokens, the last one ending at the text's end."""
        n = len(offsets)
        if n <= budget:
            return [text]
        starts = list(range(0, n - budget, stride)) + [n - budget]
        return [text[offsets[s][0]:offsets[s + budget - 1][1]] for s in starts]

    def _truncation_info(self, task, texts_a, texts_b) -> dict:
        n_a = [len(o) for o in self._token_offsets(texts_a)]
        n_b = [len(o) for o in self._token_offsets(texts_b)] if texts_b is not None else [0] * len(n_a)
        budget = self._window_budget(task)
        tokens = [a + b for a, b in zip(n_a, n_b)]
        read = [min(a, budget) + min(b, budget) if texts_b is not None else min(a, budget)
                for a, b in zip(n_a, n_b)]
        return {"tokens": tokens, "windows": [1] * len(tokens), "read_tokens": read,
                "max_len": self.config.model.max_len}

    def _predict_windows(self, task: str, texts_a: list[str], texts_b: list[str] | None,
                         batch_size: int) -> tuple[np.ndarray, dict]:
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
        budget = self._window_budget(task)
        offs_a = self._token_offsets(texts_a)
        offs_b = self._token_offsets(texts_b) if texts_b is not None else None
        for offs, texts in ((offs_a, "texts"), (offs_b, "second texts")):
            for i, o in enumerate(offs or []):
                if len(o) > MAX_READ_TOKENS:
                    raise MinbertError(f"{texts} item {i} is {len(o):,} tokens long; the limit is "
                                       f"{MAX_READ_TOKENS:,} tokens per text: shorten it or split it")
        if task == "sst":
            wins = [self._windows(t, o, budget, max(1, budget // 2)) for t, o in zip(texts_a, offs_a)]
            flat = [w for ws in wins for w in ws]
            raw = self._predict_plain(task, flat, None, batch_size)
            out, k = [], 0
            for ws in wins:
                out.append(raw[k:k + len(ws)].mean(0))
                k += len(ws)
            tokens = [len(o) for o in offs_a]
            info = {"tokens": tokens, "windows": [len(ws) for ws in wins], "read_tokens": tokens}
        else:
            caps = self._capacities(task)
            wa, wb = [], []
            for ta, oa, tb, ob in zip(texts_a, offs_a, texts_b, offs_b):
                if self._pair_fits(caps, len(oa), len(ob)):
                    wa.append([ta])
                    wb.append([tb])
                else:
                    wa.append(self._windows(ta, oa, budget, budget))
                    wb.append(self._windows(tb, ob, budget, budget))
            flat_a = [x for xs, ys in zip(wa, wb) for x in xs for _ in ys]
            flat_b = [y for xs, ys in zip(wa, wb) for _ in xs for y in ys]
            raw = self._predict_plain(task, flat_a, flat_b, batch_size)
            out, k = [], 0
            for xs, ys in zip(wa, wb):
                S = raw[k:k + len(xs) * len(ys)].reshape(len(xs), len(ys))
                k += len(xs) * len(ys)
                out.append(S[0, 0] if S.size == 1 else 0.5 * (S.max(1).mean() + S.max(0).mean()))
            tokens = [len(a) + len(b) for a, b in zip(offs_a, offs_b)]
            info = {"tokens": tokens, "windows": [len(xs) * len(ys) for xs, ys in zip(wa, wb)],
                    "read_tokens": tokens}
        info["max_len"] = self.config.model.max_len
        return np.stack(out).astype(np.float32), info

    def predict_sentiment(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return self.predict_task("sst", texts, batch_size=batch_size)

    def predict_paraphrase(self, a: Sequence[str], b: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return self.predict_task("qqp", a, b, batch_size=batch_size)

    def predict_similarity(self, a: Sequence[str], b: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return self.predict_task("sts", a, b, batch_size=batch_size)

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Sentence embeddings [n, d] with this checkpoint's pooling."""
        texts = _as_texts(texts, "texts")
        if not texts:
            return np.zeros((0, self.pooling.output_dim(self.bert.config.hidden_size)), dtype=np.float32)
        feats = TaskTokens({"a": encode_texts(self.tokenizer, texts, self.config.model.max_len)},
                             pad_id=self.tokenizer.pad_token_id or 0)
        return self.map_batches(feats, lambda batch: self.encode(batch["a"]).pooled, batch_size).astype(np.float32)

    # ------------------------------------------------------------- checkpoints
    def save(self, directory: str | os.PathLike, extra: dict | None = None,
             dtype: torch.dtype | None = None, extra_files: dict[str, str | bytes] | None = None,
             populate: Callable[[Path], None] | None = None) -> Path:
        """Publish the checkpoint atomically: ``model.safetensors``, ``config.json``, the
        tokenizer files, ``extra_files`` (name -> content, e.g. ``metrics.json``) and
        whatever ``populate(staging_dir)`` writes (e.g. ``predictions/``) are built in a
        temporary directory beside ``directory``, the completeness marker ``COMPLETE``
        is written last, everything is fsynced, and the directory is swapped in by one
        rename (core/atomic.py). Files of an existing ``directory`` that are not part of
        a checkpoint (``train_log.jsonl``, ``resume/``, logs) are carried over.
        ``dtype=torch.float16`` stores the floating-point weights in half precision (half
        the size; :meth:`load` casts them back to the model's float32)."""
        if getattr(self, "quantization", None):
            raise MinbertError(f"this model is {self.quantization}-quantized for inference and cannot be "
                               f"saved as a checkpoint; save the fp32 model (load it without quantize=)")
        directory = Path(directory)
        with save_errors(directory, "the checkpoint"):   # an OS error names its cause (core/atomic.py)
            return self._save(directory, extra, dtype, extra_files, populate)

    def _save(self, directory: Path, extra: dict | None, dtype: torch.dtype | None,
              extra_files: dict[str, str | bytes] | None, populate: Callable[[Path], None] | None) -> Path:
        from safetensors.torch import save_file
        recover_swap(directory)
        if directory.exists() and not directory.is_dir():
            raise CheckpointError(f"{directory} is a file; pass a directory to save the checkpoint into")
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        check_free_space(directory, sum(v.numel() * v.element_size() for v in state.values()) + 2 ** 20)
        staging = staging_dir(directory)
        try:
            save_file(state, str(staging / "model.safetensors"), metadata={"format": CHECKPOINT_FORMAT})
            meta = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION,
                    "config": self.config.to_dict(), "encoder_config": self.bert.config.to_dict(),
                    "tasks": list(self.heads.keys()), "has_pooler": self.bert.pooler is not None,
                    **(extra or {})}
            (staging / "config.json").write_text(json.dumps(meta, indent=2))
            self.tokenizer.save_pretrained(str(staging))
            manifest = {p.name: p.stat().st_size for p in sorted(staging.iterdir()) if p.is_file()}
            for name, content in (extra_files or {}).items():
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
            if populate is not None:
                populate(staging)
            if directory.is_dir():   # the run's other files stay with the checkpoint
                for entry in directory.iterdir():
                    if not (staging / entry.name).exists() and _carried_over(entry.name):
                        link_or_copy(entry, staging / entry.name)
            # written last: a directory without it was not finished (see read_checkpoint_meta)
            (staging / COMPLETE_MARKER).write_text(json.dumps(
                {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "files": manifest}, indent=2))
            publish_dir(staging, directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return directory

    @classmethod
    def load(cls, path: str | os.PathLike = "pretrained", device: str | torch.device = "cpu",
             quantize: str | None = None) -> "MultitaskBert":
        """A trained checkpoint directory, or "pretrained" (the packaged encoder, no
        trained heads: zero-shot similarity and paraphrase from embedding cosine).
        ``quantize="int8"``: int8 dynamic quantization of the encoder's Linear layers
        for fast CPU inference (see core/model/precision.py; inference only)."""
        if quantize is not None and resolve_mode(quantize, device) == "int8" and torch.device(device).type != "cpu":
            raise MinbertError(f"quantize={quantize!r} is for CPU inference; use device='cpu' or quantize=None")
        if str(path) == PRETRAINED:
            config = Config(name="pretrained")
            model = cls(config, BertModel.from_pretrained(config.model.encoder),
                        load_tokenizer(config.model.encoder), tasks=[])
            return quantize_model(model.to(device).eval(), quantize)
        directory = Path(path)
        if not directory.is_dir() and str(path) == SHIPPED:
            directory = SHIPPED_DIR
        if not directory.is_dir():
            raise CheckpointError(f"checkpoint directory not found: {directory}")
        meta = read_checkpoint_meta(directory)
        config_path, weights_path = directory / "config.json", directory / "model.safetensors"
        try:
            config = Config.from_dict(meta["config"])
            bert_config = BertConfig.from_dict(meta["encoder_config"])
            tasks = meta.get("tasks")
            if tasks is not None and (not isinstance(tasks, list) or not set(tasks) <= set(TASKS)):
                raise CheckpointError(f"tasks must be a list of sst/qqp/sts, got {tasks!r}")
        except (MinbertError, KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{config_path} is corrupt or from an incompatible version: {e}") from None
        tokenizer = _checkpoint_tokenizer(directory, config)
        if not weights_path.is_file():
            raise CheckpointError(f"{directory} is incomplete: model.safetensors is missing")
        weights_path = checkpoint_guard.check_weights(directory)
        # Sizes first, from the safetensors header and a model skeleton on the "meta"
        # device: a config.json that does not match the weights allocates nothing.
        found = {_current_key(k): v for k, v in safetensors_shapes(weights_path).items()}
        try:
            with torch.device("meta"):
                skeleton = cls(config, BertModel(bert_config, add_pooler=meta.get("has_pooler", True)),
                               tokenizer, tasks=tasks)
        except (MinbertError, ValueError, TypeError, RuntimeError) as e:
            raise CheckpointError(f"{config_path} describes a model that cannot be built: {e}") from None
        check_state_shapes({k: tuple(v.shape) for k, v in skeleton.state_dict().items()}, found,
                           weights_path, config_path, error=CheckpointError)
        state = read_checkpoint_weights(directory)
        model = skeleton.to_empty(device="cpu")   # allocated now, at the sizes just checked
        model.tokenizer = tokenizer
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        model.checkpoint_dir = directory
        return quantize_model(model.to(device).eval(), quantize)


# --------------------------------------------------------------------- helpers
# Inference batches are sized in tokens: batch_size * 32. Measured on the STS dev
# sentences (2 CPU cores, batch_size 64): 2048-token batches 4.4 s, 64 sentences per
# batch 4.5-5.5 s, 8192-token batches 6.2-7.3 s (GEMM outputs outgrow the caches).
BATCH_TOKENS_PER_INPUT = 32


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


# Tokens of one text that the predict API reads through windows (about 8,000
# characters of English); longer texts raise a MinbertError instead of taking minutes.
MAX_READ_TOKENS = 2_048


def _as_texts(texts, what: str) -> list[str]:
    """The inputs of the predict API as a list of strings, each checked with
    :func:`check_input_text`."""
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


def check_input_text(text, what: str = "text") -> str:
    """``text`` unchanged if a model can read it, else :class:`MinbertError`: not a
    string; an unpaired surrogate (e.g. "\\ud800", which cannot be encoded as UTF-8);
    nothing visible (only whitespace, control or zero-width / format characters, which
    the tokenizer drops, leaving an empty input that would still get a confident
    prediction)."""
    if not isinstance(text, str):
        raise MinbertError(f"{what} must be a string, got {type(text).__name__}")
    for ch in text:
        if "\ud800" <= ch <= "\udfff":
            raise MinbertError(f"{what} contains an unpaired surrogate (U+{ord(ch):04X}), which is not "
                               f"valid Unicode text: decode the input correctly (e.g. as UTF-8) first")
    if not has_visible_text(text):
        raise MinbertError(f"{what} has no visible characters (only whitespace, control or zero-width "
                           f"characters): type some words")
    return text


def _current_key(key: str) -> str:
    """A tensor's name in this code: ``...heads.<task>.mlp.*`` (state written before
    ``TaskHead.mlp`` became ``TaskHead.ffn``) reads as ``...heads.<task>.ffn.*``."""
    parts = key.split(".")
    for i in range(len(parts) - 3):
        if parts[i] == "heads" and parts[i + 2] == "mlp":
            parts[i + 2] = "ffn"
    return ".".join(parts)


def checkpoint_tasks(path) -> list[str]:
    """The tasks a checkpoint serves (:meth:`MultitaskBert.served_tasks`), read from its
    config.json without loading the weights ("pretrained": the zero-shot tasks)."""
    if str(path) == PRETRAINED:
        return served_tasks([])
    directory = Path(path)
    if not directory.is_dir() and str(path) == SHIPPED:
        directory = SHIPPED_DIR
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {path}")
    return served_tasks(read_checkpoint_meta(directory).get("tasks") or [])


def _carried_over(name: str) -> bool:
    """Whether a directory entry survives a checkpoint publication (see ``CHECKPOINT_OWNED``);
    temporary entries of interrupted writers never do."""
    if name in CHECKPOINT_OWNED:
        return False
    return not (name.startswith(".") and (".staging-" in name or name.endswith((".previous", ".tmp"))))


def read_checkpoint_meta(directory: Path) -> dict:
    """``config.json`` of a checkpoint directory, checked: format, version, and for
    format_version >= 2 the ``COMPLETE`` marker and the sizes it lists. Checkpoints of
    format_version 1 (written before the marker existed) load as before."""
    directory = Path(directory)
    recover_swap(directory)
    meta = checkpoint_guard.read_config(directory)   # every field typed and ranged (core/model/guard.py)
    if meta.get("format_version", 0) >= 2:
        _check_complete(directory)
    return meta


def _check_complete(directory: Path) -> None:
    checkpoint_guard.check_complete(directory)


def read_checkpoint_weights(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    path = Path(directory) / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{directory} is incomplete: model.safetensors is missing")
    path = checkpoint_guard.check_weights(directory)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} is corrupt (not a readable safetensors file: {e})") from None


def _checkpoint_tokenizer(directory: Path, config: Config):
    """The checkpoint's own tokenizer files; never a fallback to another tokenizer (a
    different vocabulary would silently give wrong predictions) nor a download."""
    checkpoint_guard.check_tokenizer_files(directory)
    if (directory / "tokenizer.json").is_file() or (directory / "vocab.txt").is_file():
        try:
            return load_tokenizer(directory)
        except MinbertError as e:
            raise CheckpointError(f"{directory}: tokenizer files are corrupt ({e})") from None
    raise CheckpointError(
        f"{directory} has no tokenizer files (vocab.txt or tokenizer.json): copy them from the "
        f"encoder it was trained from ({config.model.encoder!r}; for 'minilm' see "
        f"core.model.bert.packaged_model_dir()), or save the checkpoint again with MultitaskBert.save")

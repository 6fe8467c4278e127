"""MultitaskBert: one shared minBERT encoder, a pooling, and one head per task - tensors
in, tensors out.

Outputs of ``forward(task, inputs)``: sst -> logits [B, 5]; qqp -> logit [B];
sts -> score [B] (in [0, 5]; a "linear" cosine head gives 5 * cos, clipped when predicting).
``to_prediction`` turns them into what the predict API returns (probabilities, scores).

The model answers for its own math: its encoder and poolings, which tasks it serves
(``served_tasks``), the input layout of each head (``head_mode``, ``encode_task``,
``head_inputs``), its heads and their probabilities (``head_forward``,
``to_prediction``, also from cached sentence vectors: ``predict_from_embeddings``), and
the encoding that attribution differentiates (``forward(task, inputs, embeds=...)``:
word embeddings in place of token ids). Beside it, each in its own module:

    core/model/heads.py       Pooling, Encoding, MODE_PARTS, TaskHead and the head bodies
    core/model/checkpoint.py  save / load, the checkpoint key map, the shipped-model alias
    core/model/batching.py    featurize, map_batches: inference in token-budget batches
    core/model/windows.py     long texts in windows; ``read`` -> a typed ``Reading``

The predict API (``load``, ``read``, ``predict_task``, ``predict_sentiment``,
``predict_paraphrase``, ``predict_similarity``, ``embed``, ``save``) is thin methods
over those modules; a call's result is returned, never written onto the model (the app
shares one model between sessions).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.config.schema import Config
from core.data.datasets import encode_texts
from core.errors import MinbertError
from core.model import batching, checkpoint, windows
from core.model.batching import TaskTokens
from core.model.bert import BertModel, load_tokenizer
from core.model.heads import MODE_PARTS, STS_MAX, Encoding, Pooling, TaskHead, zero_shot
from core.model.windows import Reading
from core.tasks import HEAD_OUT_DIMS, N_CLASSES, TASKS, served_tasks

N_SENTIMENT = N_CLASSES["sst"]


class MultitaskBert(nn.Module):
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
            return {"output": zero_shot(task, a, b)}
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

    # ------------------------------------------------------------- inference
    def featurize(self, task: str, texts_a: Sequence[str], texts_b: Sequence[str] | None = None) -> TaskTokens:
        """Tokenize a task's inputs once, in the layout its head needs (core/model/batching.py)."""
        return batching.featurize(self, task, texts_a, texts_b)

    def map_batches(self, features: TaskTokens, fn: Callable[[dict], torch.Tensor], batch_size: int) -> np.ndarray:
        """``fn`` over token-budget batches, results in input order (core/model/batching.py)."""
        return batching.map_batches(self, features, fn, batch_size)

    def read(self, task: str, texts_a: Sequence[str], texts_b: Sequence[str] | None = None,
             batch_size: int = 64, long_text: str = "window") -> Reading:
        """Predictions with what each one read: a :class:`~core.model.windows.Reading`
        (``values``, per input ``tokens``, ``windows``, ``read_tokens``; ``max_len``).
        Long texts are read whole in windows of ``model.max_len`` tokens
        (``long_text="window"``, the default) or cut there (``"truncate"``): see
        core/model/windows.py."""
        return windows.read(self, task, texts_a, texts_b, batch_size, long_text)

    def predict_task(self, task: str, texts_a: Sequence[str], texts_b: Sequence[str] | None = None,
                     batch_size: int = 64, long_text: str = "window") -> np.ndarray:
        """sst: probabilities [n, 5]; qqp: probability [n]; sts: score in [0, 5] [n]
        (:meth:`read`'s ``values``)."""
        return self.read(task, texts_a, texts_b, batch_size, long_text).values

    def predict_sentiment(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return self.predict_task("sst", texts, batch_size=batch_size)

    def predict_paraphrase(self, a: Sequence[str], b: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return self.predict_task("qqp", a, b, batch_size=batch_size)

    def predict_similarity(self, a: Sequence[str], b: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return self.predict_task("sts", a, b, batch_size=batch_size)

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Sentence embeddings [n, d] with this checkpoint's pooling."""
        texts = batching.as_texts(texts, "texts")
        if not texts:
            return np.zeros((0, self.pooling.output_dim(self.bert.config.hidden_size)), dtype=np.float32)
        feats = TaskTokens({"a": encode_texts(self.tokenizer, texts, self.config.model.max_len)},
                           pad_id=self.tokenizer.pad_token_id or 0)
        return self.map_batches(feats, lambda batch: self.encode(batch["a"]).pooled, batch_size).astype(np.float32)

    # ------------------------------------------------------------- checkpoints
    def save(self, directory: str | os.PathLike, extra: dict | None = None,
             dtype: torch.dtype | None = None, extra_files: dict[str, str | bytes] | None = None,
             populate: Callable[[Path], None] | None = None) -> Path:
        """Publish the checkpoint atomically (weights, config.json, tokenizer, ``extra_files``,
        what ``populate`` writes; ``COMPLETE`` last): core/model/checkpoint.py."""
        return checkpoint.save_checkpoint(self, directory, extra, dtype, extra_files, populate)

    @classmethod
    def load(cls, path: str | os.PathLike = "pretrained", device: str | torch.device = "cpu",
             quantize: str | None = None) -> "MultitaskBert":
        """A trained checkpoint directory, ``"minbert-multitask"`` (the shipped model, from
        any working directory), or "pretrained" (the packaged encoder, no trained heads:
        zero-shot similarity and paraphrase from embedding cosine).
        ``quantize="int8"``: int8 dynamic quantization of the encoder's Linear layers
        for fast CPU inference (see core/model/precision.py; inference only). See
        core/model/checkpoint.py."""
        return checkpoint.load_checkpoint(cls, path, device, quantize)

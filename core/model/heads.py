"""The task heads and their building blocks: everything between the encoder's token
states and a task's output tensor (tensors in, tensors out).

    Pooling       token states -> one vector, chosen by name (cls, mean, max, mean_max)
    Encoding      what the encoder gives a head for one batch (tokens, mask, pooled, ...)
    MODE_PARTS    which encoded input parts each head mode reads (the input layout)
    MLP           1..n fully connected layers
    PairFeatures  [u; v; |u - v|; u * v] (+ cos(u, v)) for bi-encoder pair heads
    scaled_cosine STS score from a cosine
    TaskHead      single sentence | bi-encoder | cross-encoder | scaled cosine | hybrid
    ZERO_SHOT_PARAPHRASE  the zero-shot paraphrase calibration (CosineLogit's start)

Head bodies beyond the pooled-vector MLP (``model.<task>.arch``):

``deep_ffn`` (report 001, Q&ABERT)
    :class:`DeepFFN`: ``layers`` blocks of Linear -> LayerNorm -> Dropout -> ReLU
    (report 001 uses 4), then a Linear to the output.
``cnn`` (report 002)
    :class:`TokenCNN`: 1-D convolutions of several widths over the token states, ReLU,
    max over time; the concatenated channels replace the pooled vector.
``bilstm`` (report 002)
    :class:`TokenBiLSTM`: a bidirectional LSTM over the (packed, so padding-free) token
    states; the last hidden state of each direction, concatenated, replaces the pooled
    vector.

``pooled_linear`` / ``pooled_cnn`` / ``pooled_bilstm`` (report 002's own heads)
    :class:`PooledReader` on the pooled sentence vector (after the model's shared
    projection, ``model.shared_projection``: the report's 768 -> 400, here 384 -> 400):
    :class:`ConvUpscale` turns the one vector into ``vectors`` (8) vectors with a
    convolution of filter size ``upscale_kernel`` (3); then :class:`VectorCNN`
    (convolution over the 8 vectors, batch norm, ReLU, max pooling, dropout) or
    :class:`VectorBiLSTM` (final hidden states, ``hidden`` = 32 features per direction)
    reads them; ``pooled_linear`` reads the vector as it is. ``out_features`` adds a
    final linear projection (report 002's STS: 13 features, whose cosine is the score).

Token-state reducers read ``Encoding.tokens``, so a head that has one sets
``TaskHead.uses_tokens`` and the trainer's frozen-encoder cache of pooled vectors is
bypassed. All three ignore padding: appending pad tokens never changes their output.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from core.config.schema import HeadConfig
from core.errors import ConfigError, MinbertError
from core.tasks import STS_RANGE

STS_MAX = STS_RANGE[1]

# Zero-shot paraphrase probability from the cosine of mean-pooled all-MiniLM-L6-v2
# embeddings: sigmoid((cos - center) * scale). Fitted once by logistic regression on
# quora-train.csv (never on dev), see `python -m core.evaluation.zeroshot`.
ZERO_SHOT_PARAPHRASE = {"center": 0.8133, "scale": 10.3411}


class DeepFFN(nn.Module):
    """``blocks`` x (Linear -> LayerNorm -> Dropout -> ReLU), then Linear to ``out_dim``."""

    def __init__(self, in_dim: int, out_dim: int, blocks: int = 4, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(blocks):
            layers += [nn.Linear(dim, hidden), nn.LayerNorm(hidden), nn.Dropout(dropout), nn.ReLU()]
            dim = hidden
        layers.append(nn.Linear(dim, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TokenCNN(nn.Module):
    """Token states [B, T, H] -> [B, channels * len(kernel_sizes)].

    Each kernel of width k sees tokens ``j-k+1 .. j`` (zeros before the first token), so
    output position ``j`` depends only on real tokens when ``j`` is real; positions past
    a sequence's length are excluded from the max over time.
    """

    def __init__(self, in_dim: int, channels: int = 256, kernel_sizes: Sequence[int] = (2, 3, 4)):
        super().__init__()
        self.kernel_sizes = list(kernel_sizes)
        self.convs = nn.ModuleList(nn.Conv1d(in_dim, channels, k) for k in self.kernel_sizes)
        self.output_dim = channels * len(self.kernel_sizes)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(tokens.dtype)
        x = (tokens * m).transpose(1, 2)                      # [B, H, T], padding zeroed
        valid = mask.bool().unsqueeze(1)                      # [B, 1, T]
        outs = []
        for k, conv in zip(self.kernel_sizes, self.convs):
            y = torch.relu(conv(nn.functional.pad(x, (k - 1, 0))))   # [B, C, T]
            outs.append(y.masked_fill(~valid, 0.0).amax(dim=-1))     # ReLU >= 0: 0 is neutral
        return torch.cat(outs, dim=-1)


class TokenBiLSTM(nn.Module):
    """Token states [B, T, H] -> [B, 2 * hidden]: final forward and backward states."""

    def __init__(self, in_dim: int, hidden: int = 256):
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden, batch_first=True, bidirectional=True)
        self.output_dim = 2 * hidden

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.sum(1).clamp_min(1).cpu()
        packed = pack_padded_sequence(tokens, lengths, batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed)                       # h_n: [2, B, hidden]
        return torch.cat([h_n[0], h_n[1]], dim=-1)


def make_reducer(arch: str, token_dim: int, hidden: int, kernel_sizes: Sequence[int]) -> nn.Module | None:
    """The token-state reducer of a head architecture, or None (the pooled vector)."""
    if arch == "cnn":
        return TokenCNN(token_dim, hidden, kernel_sizes)
    if arch == "bilstm":
        return TokenBiLSTM(token_dim, hidden)
    if arch in PooledReader.ARCHS:   # they read the pooled vector: make_pooled_reader builds them
        raise ConfigError(f"arch {arch!r} reads the pooled vector, not token states: build it with "
                          f"core.model.heads.make_pooled_reader")
    return None


# ------------------------------------------------------------ report 002: pooled heads
class ConvUpscale(nn.Module):
    """One vector [B, D] -> ``n_vectors`` vectors [B, n, D]: the vector is read as a
    one-channel signal of length D and a 1-D convolution with ``n_vectors`` output
    channels (filter size ``kernel``, zero padding keeps the length) makes the n."""

    def __init__(self, n_vectors: int = 8, kernel: int = 3):
        super().__init__()
        self.conv = nn.Conv1d(1, n_vectors, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.unsqueeze(1))                     # [B, n, D]


class VectorCNN(nn.Module):
    """[B, n, D] -> [B, channels]: a convolution (width 3) across the n vectors with D
    input channels, batch norm, ReLU, max pooling over the n positions, dropout."""

    def __init__(self, in_dim: int, channels: int, kernel: int = 3, dropout: float = 0.1):
        super().__init__()
        self.conv = nn.Conv1d(in_dim, channels, kernel, padding=kernel // 2)
        self.norm = nn.BatchNorm1d(channels)
        self.dropout = nn.Dropout(dropout)
        self.output_dim = channels

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.norm(self.conv(vectors.transpose(1, 2))))   # [B, C, n]
        return self.dropout(y.amax(dim=-1))


class VectorBiLSTM(nn.Module):
    """[B, n, D] -> [B, 2 * hidden]: the final forward and backward hidden states of a
    BiLSTM run over the n vectors (report 002: 32 features)."""

    def __init__(self, in_dim: int, hidden: int = 32):
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden, batch_first=True, bidirectional=True)
        self.output_dim = 2 * hidden

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        _, (h_n, _) = self.lstm(vectors)
        return torch.cat([h_n[0], h_n[1]], dim=-1)


class PooledReader(nn.Module):
    """Report 002's head body on a pooled vector [B, D] -> [B, output_dim]:
    ``pooled_linear`` = the vector itself; ``pooled_cnn`` / ``pooled_bilstm`` =
    :class:`ConvUpscale` then :class:`VectorCNN` / :class:`VectorBiLSTM`; then, when
    ``out_features`` is set, a linear projection to that many features."""

    ARCHS = ("pooled_linear", "pooled_cnn", "pooled_bilstm")

    def __init__(self, arch: str, in_dim: int, hidden: int = 32, n_vectors: int = 8, upscale_kernel: int = 3,
                 dropout: float = 0.1, out_features: int | None = None, shared_upscale: bool = False):
        super().__init__()
        if arch not in self.ARCHS:
            raise ValueError(f"{arch!r} is not a pooled head; choose one of {self.ARCHS}")
        self.arch = arch
        # shared_upscale: the model's one upscaling gives the vectors (MultitaskBert._project)
        self.upscale = None if arch == "pooled_linear" or shared_upscale else ConvUpscale(n_vectors, upscale_kernel)
        if arch == "pooled_cnn":
            self.reader = VectorCNN(in_dim, hidden, 3, dropout)
        elif arch == "pooled_bilstm":
            self.reader = VectorBiLSTM(in_dim, hidden)
        else:
            self.reader = None
        dim = in_dim if self.reader is None else self.reader.output_dim
        self.project = nn.Linear(dim, out_features) if out_features else None
        self.output_dim = out_features or dim

    def forward(self, x: torch.Tensor, vectors: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` [B, D]; ``vectors`` [B, n, D]: the shared upscaling's (read instead of this
        reader's own upscaling when it has none)."""
        if self.reader is not None:
            if self.upscale is not None:
                vectors = self.upscale(x)
            elif vectors is None:
                raise ConfigError(f"head arch {self.arch!r} reads the model's shared upscaling, which this model "
                                  f"does not have (model.shared_upscale)")
            x = self.reader(vectors)
        return x if self.project is None else self.project(x)


def make_pooled_reader(cfg, in_dim: int, shared_upscale: bool = False) -> PooledReader | None:
    """The report-002 reader of a head config (``arch`` pooled_*), or None."""
    if cfg.arch not in PooledReader.ARCHS:
        return None
    return PooledReader(cfg.arch, in_dim, cfg.hidden, cfg.vectors, cfg.upscale_kernel, cfg.dropout,
                        cfg.out_features, shared_upscale)


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


def zero_shot(task: str, a: Encoding | None, b: Encoding | None) -> torch.Tensor:
    """The output of a task without a trained head, from the cosine of the two pooled
    vectors: sts 5 * cos clipped to [0, 5]; qqp a logit, ``(cos - center) * scale``
    (``ZERO_SHOT_PARAPHRASE``); sst has none (MinbertError)."""
    if task == "sst":
        raise MinbertError(
            "this model has no sentiment head (zero-shot 'pretrained' only scores "
            "similarity and paraphrase); train one, e.g. configs/starter.yaml")
    cos = F.cosine_similarity(a.pooled, b.pooled, dim=-1)
    if task == "sts":  # similarity: 5 * cos, clipped to the 0..5 scale
        return cos.clamp(0.0, 1.0) * STS_MAX
    z = ZERO_SHOT_PARAPHRASE
    return (cos - z["center"]) * z["scale"]  # a logit, like the trained head


class TaskHead(nn.Module):
    """reduce (pooled vector, or a CNN / BiLSTM over token states: ``cfg.arch``) ->
    combine (single/cross: as is; bi: PairFeatures; cosine: scaled cosine) -> ``ffn``,
    the feed-forward network (an MLP or a deep FFN; None for cosine heads). ``token_dim``
    is the encoder's hidden size (token-state reducers). Checkpoints written before
    ``mlp`` was renamed ``ffn`` store ``heads.<task>.mlp.*`` keys: the checkpoint key map
    (core/model/checkpoint.py, ``LEGACY_KEYS``) reads them as ``ffn``."""
    uses_tokens = False  # heads that read token states (not only pooled) set this

    def __init__(self, cfg: HeadConfig, in_dim: int, out_dim: int, token_dim: int | None = None,
                 task: str | None = None, shared_upscale: bool = False):
        super().__init__()
        self.mode = cfg.mode
        self.cosine_map = cfg.cosine_map
        self.task = task
        if cfg.mode == "hybrid":   # cross branch: the MLP below; bi branch: the cosine
            self.combine = HybridCombiner()
            if task == "qqp":
                self.cosine_logit = CosineLogit()
        # report 002's heads read the pooled vector through a reader (PooledReader above)
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


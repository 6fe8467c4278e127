"""Head building blocks beyond the pooled-vector MLP (``model.<task>.arch``).

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

from typing import Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from core.errors import ConfigError


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

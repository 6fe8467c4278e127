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

Token-state reducers read ``Encoding.tokens``, so a head that has one sets
``TaskHead.uses_tokens`` and the trainer's frozen-encoder cache of pooled vectors is
bypassed. All three ignore padding: appending pad tokens never changes their output.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence


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
    return None

"""Task losses, chosen by task name: small functions of (model output, labels)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def sst_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """5-way sentiment: cross-entropy over the logits."""
    return F.cross_entropy(logits, labels.long())


def qqp_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Paraphrase: binary cross-entropy on the logit."""
    return F.binary_cross_entropy_with_logits(logits, labels.float())


def sts_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Similarity: mean squared error on the 0..5 scale."""
    return F.mse_loss(scores, labels.float())


TASK_LOSSES = {"sst": sst_loss, "qqp": qqp_loss, "sts": sts_loss}


def task_loss(task: str, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return TASK_LOSSES[task](output, labels)

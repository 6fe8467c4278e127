"""Losses: small functions chosen by name.

Task losses (the supervised baselines), by task: cross-entropy for SST, binary
cross-entropy with logits for Quora, mean squared error for STS.

Sentence-embedding objectives (by ``train.objective``; data built in core/contrastive.py):

* :func:`mnrl_loss` - multiple negatives ranking loss (Henderson et al. 2017; reports 003,
  004): ``scale * cos(a_i, p_j)`` over the batch, cross-entropy with target ``j = i``,
  so every other positive in the batch is a negative.
* :func:`simcse_unsup_loss` - unsupervised SimCSE (Gao et al. 2021; report 003): two
  dropout views of the same sentence are the positive pair, ``cos / temperature``.
* :func:`simcse_sup_loss` - supervised SimCSE (report 003): anchors against the in-batch
  positives and the in-batch hard negatives.
* :func:`triplet_loss` - report 001's triplet objective
  ``max(0, d(x, y) - log sum_z exp d(x, z))`` with Euclidean ``d`` (plus an optional
  margin, 0 in the report).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def sst_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """5-way sentiment: cross-entropy over the logits; ``label_smoothing`` eps puts
    eps / 5 of the target mass on every class (Szegedy et al. 2016)."""
    return F.cross_entropy(logits, labels.long(), label_smoothing=label_smoothing)


def qqp_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Paraphrase: binary cross-entropy on the logit."""
    return F.binary_cross_entropy_with_logits(logits, labels.float())


def sts_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Similarity: mean squared error on the 0..5 scale."""
    return F.mse_loss(scores, labels.float())


TASK_LOSSES = {"sst": sst_loss, "qqp": qqp_loss, "sts": sts_loss}


def task_loss(task: str, output: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    if task == "sst":
        return sst_loss(output, labels, label_smoothing)
    return TASK_LOSSES[task](output, labels)


# --------------------------------------------------- sentence-embedding objectives
def in_batch_logits(anchors: torch.Tensor, candidates: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale * cos(anchors_i, candidates_j)``: [n_anchors, n_candidates]."""
    return scale * F.normalize(anchors, dim=-1) @ F.normalize(candidates, dim=-1).T


def mnrl_loss(anchors: torch.Tensor, positives: torch.Tensor, scale: float = 20.0,
              negatives: torch.Tensor | None = None, gather=None, normalizer: float | None = None) -> torch.Tensor:
    """Multiple negatives ranking loss: row i of the [B, B (+ N)] similarity matrix is a
    B (+ N)-way classification whose right answer is column i (its own positive).

    Data parallel: ``gather`` (``DistContext.gather_rows``) collects the positives (and
    negatives) of every rank, so each local anchor is classified against the global
    batch, its own positive at the gathered offset. The loss is the sum of the local
    rows' cross-entropies divided by ``normalizer`` (default: the number of anchors,
    i.e. the mean)."""
    offset = 0
    if gather is not None:
        positives, offset = gather(positives)
        if negatives is not None:
            negatives, _ = gather(negatives)
    candidates = positives if negatives is None else torch.cat([positives, negatives])
    logits = in_batch_logits(anchors, candidates, scale)
    target = offset + torch.arange(len(anchors), device=anchors.device)
    total = F.cross_entropy(logits, target, reduction="sum")
    return total / (normalizer if normalizer is not None else len(anchors))


def simcse_unsup_loss(view1: torch.Tensor, view2: torch.Tensor, temperature: float = 0.05,
                      gather=None) -> torch.Tensor:
    """Unsupervised SimCSE: the two dropout views of sentence i are the diagonal pair."""
    return mnrl_loss(view1, view2, scale=1.0 / temperature, gather=gather)


def simcse_sup_loss(anchors: torch.Tensor, positives: torch.Tensor, hard_negatives: torch.Tensor,
                    temperature: float = 0.05, gather=None) -> torch.Tensor:
    """Supervised SimCSE: -log e^{s(a_i,p_i)} / sum_j (e^{s(a_i,p_j)} + e^{s(a_i,n_j)}),
    s = cos / temperature; positives on the diagonal of the first block."""
    return mnrl_loss(anchors, positives, scale=1.0 / temperature, negatives=hard_negatives, gather=gather)


def triplet_loss(anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
                 margin: float = 0.0) -> torch.Tensor:
    """Mean over anchors of ``max(0, d(x, y) - logsumexp_z d(x, z) + margin)``.

    anchors, positives: [B, D]; negatives: [B, K, D]; d is the Euclidean distance.
    Zero for an anchor once its positive is closer than the soft maximum of its
    negatives' distances (minus the margin)."""
    d_pos = (anchors - positives).norm(dim=-1)                           # [B]
    d_neg = (anchors.unsqueeze(1) - negatives).norm(dim=-1)              # [B, K]
    return F.relu(d_pos - torch.logsumexp(d_neg, dim=-1) + margin).mean()


OBJECTIVE_LOSSES = {"mnrl": mnrl_loss, "simcse_unsup": simcse_unsup_loss,
                    "simcse_sup": simcse_sup_loss, "triplet": triplet_loss}

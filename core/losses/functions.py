"""Losses: small functions, and the loss modules a recipe chooses by name.

Task losses (the supervised baselines), by task: cross-entropy for SST, binary
cross-entropy with logits for Quora, mean squared error for STS.

Loss modules (``train.losses``, sentence-transformers' style): each task's batch is
scored by a list of weighted modules built by :func:`build_task_losses` from
:class:`core.config.schema.LossTerm` entries. Every module reads one :class:`LossBatch` (the
head output, the labels and, for bi-encoder heads, the two sentence vectors) and
returns a scalar:

* ``ce`` :class:`CrossEntropyLoss` (SST), ``bce`` :class:`BCEWithLogitsLoss` (Quora),
  ``mse`` :class:`MSELoss` (STS score 0..5);
* ``mse_cosine`` :class:`CosineMSELoss`: ``(cos(u, v) - y / 5)^2`` (sentence-transformers'
  CosineSimilarityLoss);
* ``bce_score`` :class:`ScoreBCELoss`: binary cross-entropy of score / 5 against y / 5
  (report 002: cross entropy for every task);
* ``mnrl`` :class:`MultipleNegativesRankingLoss`: MNRL on the batch's positive pairs,
  optionally symmetric and with the batch's negative pairs as hard negatives; added to a
  pair task's own loss, or its only loss (report 004, experiment 3).

Sentence-embedding objectives (by ``train.objective``; data built and encoded in
core/training/contrastive.py, each objective's choice of formula in core/losses/objectives.py):

* :func:`mnrl_loss` - multiple negatives ranking loss (Henderson et al. 2017; reports 003,
  004): ``scale * cos(a_i, p_j)`` over the batch, cross-entropy with target ``j = i``,
  so every other positive in the batch is a negative.
* :func:`simcse_unsup_loss` - unsupervised SimCSE (Gao et al. 2021; report 003): two
  dropout views of the same sentence are the positive pair, ``cos / temperature``.
* :func:`simcse_sup_loss` - supervised SimCSE (report 003): anchors against the in-batch
  positives and the in-batch hard negatives.
* :func:`triplet_loss` - report 001's triplet objective (Eq. 1): the sum over a
  minibatch's anchors of ``max(0, d(x, y) - log sum_z exp d(x, z))`` with Euclidean
  ``d`` (plus an optional margin, 0 in the report; see configs/report-001-triplet.yaml
  for the one the pretrained MiniLM needs).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn


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
    """Report 001, Eq. 1: the SUM over the minibatch's anchors of
    ``max(0, d(x, y) - log sum_z exp d(x, z) + margin)``, d the Euclidean distance.

    anchors, positives: [B, D]; negatives: [B, K, D]. An anchor's term is zero once its
    positive is closer than the soft maximum of its negatives' distances by more than the
    margin (the report's Eq. 1 has none: margin 0). Distances are computed in float32
    (under bf16 autocast a logsumexp near 8 would have a resolution of 0.03)."""
    anchors, positives, negatives = anchors.float(), positives.float(), negatives.float()
    return triplet_terms(anchors, positives, negatives, margin).sum()


def triplet_terms(anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
                  margin: float = 0.0) -> torch.Tensor:
    """Each anchor's term of Eq. 1 (report 001), [B]: ``relu(d_pos - logsumexp d_neg + margin)``."""
    return F.relu(margin - triplet_gaps(anchors, positives, negatives))


def triplet_gaps(anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """``logsumexp_z d(x, z) - d(x, y)`` per anchor, [B]: how far an anchor is from being
    active in Eq. 1; with a margin m the anchor's term is non-zero iff its gap < m."""
    d_pos = (anchors - positives).norm(dim=-1)                           # [B]
    d_neg = (anchors.unsqueeze(1) - negatives).norm(dim=-1)              # [B, K]
    return torch.logsumexp(d_neg, dim=-1) - d_pos


OBJECTIVE_LOSSES = {"mnrl": mnrl_loss, "simcse_unsup": simcse_unsup_loss,
                    "simcse_sup": simcse_sup_loss, "triplet": triplet_loss}


def symmetric_mnrl_loss(anchors: torch.Tensor, positives: torch.Tensor, scale: float = 20.0,
                        negatives: torch.Tensor | None = None, gather=None,
                        normalizer: float | None = None) -> torch.Tensor:
    """``(MNRL(a -> p [+ n]) + MNRL(p -> a)) / 2``: each anchor ranks its positive among
    the batch's positives (and hard negatives), and each positive ranks its anchor among
    the batch's anchors (sentence-transformers' MultipleNegativesSymmetricRankingLoss)."""
    forward = mnrl_loss(anchors, positives, scale, negatives, gather=gather, normalizer=normalizer)
    backward = mnrl_loss(positives, anchors, scale, gather=gather, normalizer=normalizer)
    return 0.5 * (forward + backward)


# ------------------------------------------------------------ loss modules by name
@dataclass
class LossBatch:
    """What a task's loss modules read for one batch.

    ``output``: the head output (sst logits [B, 5], qqp logit [B], sts score [B]);
    ``u``, ``v``: the two sentence vectors of a bi-encoder pair head (else None);
    ``dist``: the data-parallel context (core/training/distributed.py) or None for one process;
    ``n_global``: examples in the global batch this process's share belongs to."""
    task: str
    output: torch.Tensor
    labels: torch.Tensor
    u: torch.Tensor | None = None
    v: torch.Tensor | None = None
    dist: Any = None
    n_global: int | None = None


class CrossEntropyLoss(nn.Module):
    name = "ce"

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, batch: LossBatch) -> torch.Tensor:
        return sst_loss(batch.output, batch.labels, self.label_smoothing)


class BCEWithLogitsLoss(nn.Module):
    name = "bce"

    def forward(self, batch: LossBatch) -> torch.Tensor:
        return qqp_loss(batch.output, batch.labels)


class MSELoss(nn.Module):
    name = "mse"

    def forward(self, batch: LossBatch) -> torch.Tensor:
        return sts_loss(batch.output, batch.labels)


class CosineMSELoss(nn.Module):
    """``mean (cos(u, v) - y / max_score)^2``: the cosine of the two sentence vectors
    regressed on the similarity score scaled to [0, 1]."""
    name = "mse_cosine"
    needs_vectors = True

    def __init__(self, max_score: float = 5.0):
        super().__init__()
        self.max_score = max_score

    def forward(self, batch: LossBatch) -> torch.Tensor:
        cos = F.cosine_similarity(batch.u.float(), batch.v.float(), dim=-1)
        return F.mse_loss(cos, batch.labels.float() / self.max_score)


class ScoreBCELoss(nn.Module):
    """Binary cross-entropy of the predicted score scaled to [0, 1] against the label
    scaled the same way: ``-(t log p + (1 - t) log(1 - p))``, p = score / 5, t = y / 5
    (report 002 §3: cross entropy for every task, STS's 0-5 score included). p is
    clamped to [1e-6, 1 - 1e-6]; computed in float32."""
    name = "bce_score"

    def __init__(self, max_score: float = 5.0, eps: float = 1e-6):
        super().__init__()
        self.max_score, self.eps = max_score, eps

    def forward(self, batch: LossBatch) -> torch.Tensor:
        p = (batch.output.float() / self.max_score).clamp(self.eps, 1.0 - self.eps)
        t = batch.labels.float() / self.max_score
        return -(t * p.log() + (1.0 - t) * (1.0 - p).log()).mean()


class MultipleNegativesRankingLoss(nn.Module):
    """MNRL on a supervised pair batch: the positive pairs (Quora duplicates, STS scores
    >= ``sts_positive``) are (anchor, positive); every other positive of the (global)
    batch is a negative. ``hard_negatives``: the second sentences of the batch's
    negative pairs (Quora non-duplicates, STS <= ``sts_negative``) join the candidates.
    Fewer than 2 positives in the global batch: 0 (nothing to rank against)."""
    name = "mnrl"
    needs_vectors = True

    def __init__(self, scale: float = 20.0, symmetric: bool = False, hard_negatives: bool = False,
                 sts_positive: float = 4.0, sts_negative: float = 1.0):
        super().__init__()
        self.scale, self.symmetric, self.hard_negatives = scale, symmetric, hard_negatives
        self.sts_positive, self.sts_negative = sts_positive, sts_negative

    def masks(self, task: str, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from core.tasks import TASK_SPECS
        if TASK_SPECS[task].kind == "binary":
            return labels == 1, labels == 0
        return labels >= self.sts_positive, labels <= self.sts_negative

    def forward(self, batch: LossBatch) -> torch.Tensor:
        positive, negative = self.masks(batch.task, batch.labels)
        dist = batch.dist
        enabled = dist is not None and dist.enabled
        n_positive = dist.sum_int(int(positive.sum())) if enabled else int(positive.sum())
        if n_positive < 2:   # 0, still on the graph (MNRL alone: the step's backward needs one)
            return batch.u.sum() * 0.0
        # data parallel: candidates from every rank; the sum over local anchors is divided
        # so that, after loss_scale and the gradient average, it is the mean over the
        # global batch's positives (as in one process)
        normalizer = n_positive * len(batch.labels) / batch.n_global if enabled else None
        gather = dist.gather_rows if enabled else None
        negatives = batch.v[negative] if self.hard_negatives else None
        fn = symmetric_mnrl_loss if self.symmetric else mnrl_loss
        return fn(batch.u[positive], batch.v[positive], self.scale, negatives, gather=gather,
                  normalizer=normalizer)


LOSS_MODULES = {m.name: m for m in (CrossEntropyLoss, BCEWithLogitsLoss, MSELoss, CosineMSELoss, ScoreBCELoss,
                                    MultipleNegativesRankingLoss)}


class TaskLoss(nn.Module):
    """A task's loss: ``sum_k weight_k * module_k(batch)``; ``parts`` holds each term's
    value for logging. ``needs_vectors``: some term reads the sentence vectors u, v."""

    def __init__(self, task: str, terms: Sequence[tuple[str, float, nn.Module]]):
        super().__init__()
        self.task = task
        self.names = [name for name, _, _ in terms]
        self.weights = [weight for _, weight, _ in terms]
        self.terms = nn.ModuleList(module for _, _, module in terms)
        self.needs_vectors = any(getattr(m, "needs_vectors", False) for m in self.terms)

    @property
    def primary(self) -> str:
        """The term reported as the task's loss (its own: ce / bce / mse / mse_cosine)."""
        return self.names[0]

    def forward(self, batch: LossBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {name: module(batch) for name, module in zip(self.names, self.terms)}
        total = sum(w * parts[n] for n, w in zip(self.names, self.weights))
        return total, parts


def build_task_losses(task: str, train) -> TaskLoss:
    """The :class:`TaskLoss` of a task from ``train.task_losses(task)`` (a TrainConfig):
    its own loss first, then any added terms (MNRL)."""
    from core.config.schema import TASK_BASE_LOSSES
    terms = sorted(train.task_losses(task), key=lambda t: t.name not in TASK_BASE_LOSSES[task])
    c = train.contrastive
    built = []
    for term in terms:
        if term.name == "ce":
            module = CrossEntropyLoss(train.label_smoothing)
        elif term.name == "mnrl":
            module = MultipleNegativesRankingLoss(c.scale, term.symmetric, term.hard_negatives,
                                                  c.sts_positive, c.sts_negative)
        else:
            module = LOSS_MODULES[term.name]()
        built.append((term.name, term.weight, module))
    return TaskLoss(task, built)

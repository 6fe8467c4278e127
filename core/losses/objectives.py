"""The sentence-embedding objectives' losses on embeddings (``train.objective``).

Tensors in, a scalar out: which parts of an objective's batch are embedded
(:func:`objective_parts`) and the objective's formula on those embeddings
(:func:`embedding_objective_loss`, the formulas in core/losses/functions.py). Building the
training items and encoding them is core/training/contrastive.py's job.

* ``simcse_unsup``: two dropout views of the sentences ``a``;
* ``mnrl``: anchors ``a`` against positives ``p`` (symmetric: both directions);
* ``simcse_sup``: anchors ``a``, positives ``p``, hard negatives ``n``;
* ``triplet``: anchors ``a``, positives ``p``, negatives ``n0 .. nK-1`` (Eq. 1 of report 001).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

from core.config.schema import ContrastiveConfig
from core.losses.functions import mnrl_loss, simcse_sup_loss, simcse_unsup_loss, symmetric_mnrl_loss, triplet_loss

OBJECTIVES = ("simcse_unsup", "mnrl", "simcse_sup", "triplet")


def objective_parts(objective: str, parts: Iterable[str]) -> list[str]:
    """The parts of an objective's batch to embed, in the order
    :func:`embedding_objective_loss` reads them (``parts``: the batch's part names)."""
    if objective == "simcse_unsup":   # same sentences twice: dropout makes the two views
        return ["a", "a"]
    if objective == "mnrl":
        return ["a", "p"]
    if objective == "simcse_sup":
        return ["a", "p", "n"]
    if objective == "triplet":
        return ["a", "p"] + [f"n{k}" for k in range(sum(1 for part in parts if part[:1] == "n"))]
    raise ValueError(f"{objective!r} is not a sentence-embedding objective")


def embedding_objective_loss(objective: str, embeddings: Sequence[torch.Tensor], cfg: ContrastiveConfig,
                             gather=None, n_global: int | None = None) -> torch.Tensor:
    """The objective's loss on the embeddings of its parts (:func:`objective_parts`).
    ``gather``: data parallel, the in-batch candidates of every rank (see mnrl_loss);
    ``n_global``: data parallel, the global batch's size (the triplet loss is a sum over
    the global batch's anchors, so this share's sum is rescaled to the trainer's
    mean-based share weighting, ``DistContext.loss_scale``)."""
    if objective == "simcse_unsup":
        view1, view2 = embeddings
        return simcse_unsup_loss(view1, view2, cfg.temperature, gather=gather)
    if objective == "mnrl":
        anchors, positives = embeddings
        fn = symmetric_mnrl_loss if cfg.symmetric else mnrl_loss
        return fn(anchors, positives, cfg.scale, gather=gather)
    if objective == "simcse_sup":
        anchors, positives, negatives = embeddings
        return simcse_sup_loss(anchors, positives, negatives, cfg.temperature, gather=gather)
    if objective == "triplet":
        anchors, positives, *negatives = embeddings
        loss = triplet_loss(anchors, positives, torch.stack(negatives, dim=1), cfg.margin)
        return loss if n_global is None else loss * (n_global / len(anchors))
    raise ValueError(f"{objective!r} is not a sentence-embedding objective")

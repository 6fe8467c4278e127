"""The objective of a stage: what one task batch adds to the step's loss.

Owns the forward pass of a training batch and the loss built on it, so that a training
step (core/training/trainer.py) reads forward -> loss -> backward -> optimizer step:

* supervised stages: the encoder (or the frozen encoder's cached pooled vectors), the
  task head's output and, for a hybrid head, each branch's own output
  (:meth:`Objective.forward`); then the task's loss modules (``train.losses``,
  core/losses/functions.py), each hybrid branch's own loss (``hybrid_aux_weight``), the
  regularizers (SMART, Bregman, core/losses/smart.py) and the task weighting (fixed,
  dev-adapted or learned uncertainty, core/losses/weighting.py) (:meth:`Objective.loss`);
* sentence-embedding stages (``train.objective``): the objective's loss on a batch of
  its set (core/training/contrastive.py encodes it; the formulas are in core/losses/).

Nothing here steps or back-propagates.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from core.losses.functions import LossBatch, TaskLoss, build_task_losses
from core.losses.smart import BregmanProximal, build_regularizers
from core.losses.weighting import UncertaintyWeighting, dev_weights
from core.model.heads import Encoding
from core.model.multitask import MultitaskBert
from core.tasks import PRIMARY
from core.training.contrastive import objective_loss
from core.training.distributed import DistContext
from core.training.state import Stage, TaskStream


@dataclass
class Forward:
    """One supervised task batch through the model: its padded inputs (None on the
    cached-vector path), SMART's input embeddings (when a regularizer perturbs them), the
    head's inputs ``a``, ``b`` and outputs (``"output"``; a hybrid head's ``"cross"`` and
    ``"bi"`` branches too)."""
    batch: dict | None
    embeds: dict | None
    a: Encoding
    b: Encoding | None
    branches: dict[str, torch.Tensor]


class Objective:
    """A stage's loss: built once per stage (loss modules, regularizers, task weights),
    then called on each task batch: ``(the task's own loss, for logging; what the batch
    adds to the step's objective)``."""

    def __init__(self, model: MultitaskBert, stage: Stage, device: torch.device, dist: DistContext,
                 precision: str = "fp32"):
        cfg = stage.train
        self.model, self.stage, self.device, self.dist = model, stage, device, dist
        self.bf16 = precision == "bf16"
        self.uncertainty = (UncertaintyWeighting(list(stage.streams)).to(device)
                            if stage.supervised and cfg.loss_weighting == "uncertainty" else None)
        self.task_weights = {t: cfg.loss_weights.get(t, 1.0) for t in stage.streams}
        # each task's loss modules (core/losses/functions.py) and the stage's regularizers (core/losses/smart.py)
        self.task_losses: dict[str, TaskLoss] = (
            {t: build_task_losses(t, cfg).to(device) for t in stage.streams} if stage.supervised else {})
        self.regularizers = build_regularizers(cfg.smart, model) if stage.supervised else []

    @property
    def streams(self) -> dict[str, TaskStream]:
        return self.stage.streams

    @property
    def teacher(self):
        """The Bregman proximal term's momentum teacher of this stage, or None."""
        for reg in self.regularizers:
            if isinstance(reg, BregmanProximal):
                return reg.teacher
        return None

    def train_mode(self) -> None:
        self.model.train()
        if self.stage.train.freeze_encoder:
            self.model.bert.eval()  # frozen: no dropout noise in the features either

    def adapt_weights(self, epoch: int, history: list[dict]) -> dict[str, float]:
        """loss_weighting 'dev': the task weights of ``epoch`` from this stage's last dev
        evaluation in ``history`` (the recipe's weights before the first)."""
        last = [r for r in history if r.get("stage") == self.stage.name]
        if epoch == 0 or not last:
            self.task_weights = {t: self.stage.train.loss_weights.get(t, 1.0) for t in self.streams}
        else:
            self.task_weights = dev_weights({t: last[-1][PRIMARY[t]] for t in self.streams}, list(self.streams))
        return self.task_weights

    def after_step(self) -> None:
        """After each optimizer update: the regularizers' own state (Bregman's teacher)."""
        for reg in self.regularizers:
            if hasattr(reg, "after_step"):
                reg.after_step(self.model)

    # ------------------------------------------------------------------ the loss
    def __call__(self, task: str, idx: list[int], n_global: int, aux: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(the task's own loss, what the batch adds to the step's objective: its loss
        modules and regularizers, task-weighted) of one task batch (this process's share
        ``idx`` of a global batch of ``n_global``); auxiliary terms are added to ``aux``."""
        cfg = self.stage.train
        stream = self.streams[task]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            if not self.stage.supervised:
                batch = stream.features.batch(idx, self.device)
                loss = objective_loss(self.model, cfg.objective, batch, cfg.contrastive,
                                      gather=self.dist.gather_rows if self.dist.enabled else None,
                                      n_global=n_global if self.dist.enabled else None)
                return loss, loss
            labels = stream.labels[idx].to(self.device)
            forward = self.forward(stream, idx)
            loss, total, extra = self.loss(task, forward, labels, n_global)
            aux.update(extra)
            if self.uncertainty is not None:
                total = self.uncertainty(task, total)
            else:
                total = self.task_weights.get(task, 1.0) * total
        return loss, total

    def forward(self, stream: TaskStream, idx: list[int]) -> Forward:
        """The head's outputs on one batch: from the cached pooled vectors (frozen encoder)
        or through the encoder (with SMART's input embeddings when a regularizer needs them)."""
        task = stream.task
        if stream.cache is not None:   # frozen encoder, cached pooled vectors
            enc = {p: Encoding(None, None, v[idx]) for p, v in stream.cache.items()}
            a, b = self.model.head_inputs(task, enc)
            return Forward(None, None, a, b, self.model.head_branches(task, a, b))
        batch = stream.features.batch(idx, self.device)
        embeds = None
        if any(r.needs_embeddings for r in self.regularizers):   # SMART perturbs the input embeddings
            lookup = self.model.bert.embeddings.word_embeddings
            embeds = {part: lookup(x["input_ids"]) for part, x in batch.items()}
        a, b = self.model.encode_task(task, batch, embeds)
        return Forward(batch, embeds, a, b, self.model.head_branches(task, a, b))

    def loss(self, task: str, fwd: Forward, labels: torch.Tensor, n_global: int | None) \
            -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(the task's own loss, the loss to optimize before task weighting, auxiliary
        terms) of one batch: the task's loss modules on the head output, each hybrid
        branch's own loss, then the regularizers (SMART, Bregman), each with its weight."""
        losses, cfg = self.task_losses[task], self.stage.train
        u = v = None
        if losses.needs_vectors and fwd.b is not None:
            u, v = fwd.a.pooled, fwd.b.pooled
        batch = LossBatch(task, fwd.branches["output"], labels, u, v,
                          self.dist if self.dist.enabled else None, n_global)
        total, parts = losses(batch)
        loss = parts[losses.primary]
        aux = {f"{task}_{name}": value.item() for name, value in parts.items() if name != losses.primary}
        own = losses.terms[0]
        for name in ("cross", "bi"):   # a hybrid head's branches, trained on their own too
            if name in fwd.branches and cfg.hybrid_aux_weight > 0:
                branch = own(LossBatch(task, fwd.branches[name], labels, u, v))
                total = total + cfg.hybrid_aux_weight * branch
                aux[f"{task}_{name}"] = branch.item()
        if fwd.batch is not None:      # the regularizers perturb or compare encoder passes
            for reg in self.regularizers:
                value = reg(self.model, task, fwd.batch, fwd.embeds, fwd.branches["output"])
                total = total + reg.weight * value
                aux[f"{task}_{reg.name}"] = value.item()
        return loss, total, aux


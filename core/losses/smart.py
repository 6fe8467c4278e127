"""SMART (report 003; Jiang et al. 2020): smoothness-inducing adversarial regularization
with Bregman proximal point optimization.

For a task batch with input embeddings ``e`` (the word-embedding lookup; BertModel
accepts ``inputs_embeds``) and clean output ``f(e)``:

1. start from small random noise ``delta ~ N(0, noise_std^2)`` (padding positions 0);
2. ``ascent_steps`` times: ``g = d D(f(e + delta), f(e)) / d delta`` and
   ``delta <- delta + step_size * g / ||g||_inf`` (per example), optionally projected
   to the l_inf ball of radius ``epsilon``;
3. the smoothness regularizer is ``R_s = D_sym(f(e + delta), f(e))``.

``D`` is the symmetric KL divergence of the output distributions for classification
(SST: categorical over 5 classes; Quora: Bernoulli from the logit) and the squared
error for regression (STS). The loss of the step becomes
``L_task + weight * R_s + bregman_weight * D_sym(f(e), f_teacher(e))`` where the
teacher is a momentum (exponential moving average) copy of the model: the Bregman
proximal point term keeps each update close to the recent iterates.

``R_s >= 0`` always, and ``R_s = 0`` for a model whose output does not depend on its
input.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from core.config.schema import SmartConfig
from core.tasks import TASK_SPECS

# symmetric KL of the output distribution for classification, squared error for regression
_KIND_DIVERGENCE = {"multiclass": "categorical", "binary": "bernoulli", "regression": "mse"}
TASK_DIVERGENCE = {t: _KIND_DIVERGENCE[s.kind] for t, s in TASK_SPECS.items()}


def symmetric_divergence(p: torch.Tensor, q: torch.Tensor, kind: str) -> torch.Tensor:
    """Batch mean of KL(p||q) + KL(q||p) of the distributions the outputs define
    (``categorical``: logits [B, C]; ``bernoulli``: logits [B]), or of (p - q)^2 (``mse``)."""
    if kind == "categorical":
        lp, lq = F.log_softmax(p.float(), dim=-1), F.log_softmax(q.float(), dim=-1)
        return ((lp.exp() - lq.exp()) * (lp - lq)).sum(-1).mean()
    if kind == "bernoulli":   # KL(p||q) + KL(q||p) = (sigma(a) - sigma(b)) * (a - b)
        p, q = p.float(), q.float()
        return ((torch.sigmoid(p) - torch.sigmoid(q)) * (p - q)).mean()
    if kind == "mse":
        return F.mse_loss(p.float(), q.float())
    raise ValueError(f"unknown divergence kind {kind!r}")


def smart_regularizer(forward: Callable[[dict[str, torch.Tensor]], torch.Tensor],
                      embeds: dict[str, torch.Tensor], clean: torch.Tensor, kind: str,
                      cfg: SmartConfig, masks: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """``R_s = D_sym(f(e + delta*), f(e))`` with delta* found by noise ascent.

    forward: maps input embeddings (part name -> [B, T, H]) to the task output;
    clean: ``forward(embeds)`` already computed (its graph is kept: R_s trains it too);
    masks: part name -> [B, T] attention mask; noise on padding stays 0."""
    def noise_mask(name: str, e: torch.Tensor) -> torch.Tensor:
        if masks is None or name not in masks:
            return torch.ones_like(e)
        return masks[name].unsqueeze(-1).to(e.dtype).expand_as(e)

    keep = {k: noise_mask(k, e) for k, e in embeds.items()}
    delta = {k: torch.randn_like(e) * cfg.noise_std * keep[k] for k, e in embeds.items()}
    target = clean.detach()
    for _ in range(cfg.ascent_steps):
        for d in delta.values():
            d.requires_grad_(True)
        adv = forward({k: embeds[k].detach() + delta[k] for k in embeds})
        div = symmetric_divergence(adv, target, kind)
        grads = torch.autograd.grad(div, list(delta.values()), allow_unused=True)
        new = {}
        for (k, d), g in zip(delta.items(), grads):
            g = torch.zeros_like(d) if g is None else g
            scale = g.abs().flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, *[1] * (g.dim() - 1))
            d = d.detach() + cfg.step_size * g / scale * keep[k]
            if cfg.epsilon is not None:
                d = d.clamp(-cfg.epsilon, cfg.epsilon)
            new[k] = d
        delta = new
    adv = forward({k: embeds[k] + delta[k] for k in embeds})
    return symmetric_divergence(adv, clean, kind)


class MomentumTeacher:
    """The Bregman proximal point teacher: an exponential moving average of the model,
    ``teacher <- momentum * teacher + (1 - momentum) * model`` after every step."""

    def __init__(self, model: nn.Module, momentum: float = 0.99):
        self.momentum = momentum
        shared = getattr(model, "tokenizer", None)            # no need to copy the tokenizer
        memo = {id(shared): shared} if shared is not None else {}
        self.model = copy.deepcopy(model, memo).eval()
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for t, s in zip(self.model.parameters(), model.parameters()):
            t.lerp_(s.detach(), 1.0 - self.momentum)

    @torch.no_grad()
    def __call__(self, *args, **kwargs) -> torch.Tensor:
        return self.model(*args, **kwargs)


# ------------------------------------------------- regularizers as modules of the step
class SmartRegularizer:
    """``weight * R_s`` of a task batch (``train.smart.weight``; report 003: 0.5).

    ``model(task, batch, embeds=...)`` is the task output from input embeddings;
    ``embeds`` the clean input embeddings the step looked up; ``output`` the clean output."""
    name = "smart"
    needs_embeddings = True

    def __init__(self, cfg: SmartConfig):
        self.cfg, self.weight = cfg, cfg.weight

    def __call__(self, model: nn.Module, task: str, batch: dict, embeds: dict[str, torch.Tensor],
                 output: torch.Tensor) -> torch.Tensor:
        masks = {part: x["attention_mask"] for part, x in batch.items()}
        return smart_regularizer(lambda e: model(task, batch, embeds=e), embeds, output,
                                 TASK_DIVERGENCE[task], self.cfg, masks)


class BregmanProximal:
    """``weight * D_sym(f(x), f_teacher(x))`` against a momentum teacher of the model
    (``train.smart.bregman_weight``); :meth:`after_step` moves the teacher."""
    name = "bregman"
    needs_embeddings = False

    def __init__(self, cfg: SmartConfig, model: nn.Module):
        self.weight = cfg.bregman_weight
        self.teacher = MomentumTeacher(model, cfg.momentum)

    def __call__(self, model: nn.Module, task: str, batch: dict, embeds: dict[str, torch.Tensor] | None,
                 output: torch.Tensor) -> torch.Tensor:
        return symmetric_divergence(output, self.teacher(task, batch), TASK_DIVERGENCE[task])

    def after_step(self, model: nn.Module) -> None:
        self.teacher.update(model)


def build_regularizers(cfg: SmartConfig, model: nn.Module) -> list:
    """The regularizers a stage's supervised batches get, each with its own weight."""
    out: list = []
    if cfg.weight > 0:
        out.append(SmartRegularizer(cfg))
    if cfg.bregman_weight > 0:
        out.append(BregmanProximal(cfg, model))
    return out

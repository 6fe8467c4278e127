"""Optimizers and learning-rate schedules.

``AdamW`` is our own implementation of decoupled weight decay Adam (Loshchilov &
Hutter 2019), written out step by step; tests hold it to ``torch.optim.AdamW`` within
1e-6 over many steps. ``make_optimizer`` picks it or torch's by the recipe's name.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class AdamW(Optimizer):
    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01):
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1) or weight_decay < 0:
            raise ValueError(f"invalid AdamW hyper-parameters lr={lr} betas={betas} eps={eps} wd={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"].item()
                m, v = state["exp_avg"], state["exp_avg_sq"]
                # 1. decoupled weight decay: shrink the weights, independent of the gradient
                p.mul_(1 - lr * wd)
                # 2. first and second moment estimates
                m.lerp_(grad, 1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                # 3. bias-corrected update: p -= lr * m_hat / (sqrt(v_hat) + eps)
                bias1, bias2 = 1 - beta1 ** t, 1 - beta2 ** t
                denom = (v.sqrt() / math.sqrt(bias2)).add_(eps)
                p.addcdiv_(m, denom, value=-lr / bias1)
        return loss


def make_optimizer(name: str, param_groups: list[dict], lr: float, weight_decay: float,
                   fused: bool = False) -> Optimizer:
    if name == "adamw":
        return AdamW(param_groups, lr=lr, weight_decay=weight_decay)
    if name == "torch_adamw":
        kwargs = {"fused": True} if fused else {}
        return torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay, **kwargs)
    raise ValueError(f"unknown optimizer {name!r}")


def warmup_linear(optimizer: Optimizer, total_steps: int, warmup_ratio: float,
                  decay: str = "linear") -> LambdaLR:
    """Linear warm-up from 0 over ``warmup_ratio * total_steps``, then linear decay to 0
    (``decay="linear"``) or the learning rate held (``decay="constant"``: the DFP starter
    code's fixed rate, which reports that state one learning rate and no schedule use)."""
    if decay not in LR_SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {decay!r}; choose one of {LR_SCHEDULES}")
    warmup = int(round(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if decay == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return LambdaLR(optimizer, factor)


LR_SCHEDULES = ("linear", "constant")

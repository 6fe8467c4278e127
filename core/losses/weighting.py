"""Task loss weights of the joint multitask loss ``sum_t w_t L_t`` (``train.loss_weighting``).

``fixed`` (reports 003, 004)
    ``w_t = train.loss_weights[t]``.
``dev`` (reports 003, 004)
    Adapted once per epoch from the previous epoch's dev scores ``s_t`` (each task's
    primary metric, clipped to [0, 1]): ``w_t = T (1 - s_t) / sum_u (1 - s_u)``, so the
    weights average 1 and the task furthest from a perfect score gets the most weight.
    The first epoch uses ``loss_weights``. ``1 - s_t`` is floored at 0.05 so no task's
    weight drops to zero.
``uncertainty`` (Kendall, Gal & Cipolla 2018)
    One learned log-variance ``s_t = log sigma_t^2`` per task:
    ``L = sum_t c_t exp(-s_t) L_t + s_t / 2`` with ``c_t = 1`` for classification and
    ``1/2`` for regression (STS), i.e. ``L_t / sigma_t^2 + log sigma_t`` resp.
    ``L_t / (2 sigma_t^2) + log sigma_t``. ``dL/ds_t = -c_t exp(-s_t) L_t + 1/2``: the
    optimum ``s_t = log(2 c_t L_t)`` grows with the task's loss, which damps it.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from core.tasks import TASK_SPECS

REGRESSION_TASKS = tuple(t for t, s in TASK_SPECS.items() if s.kind == "regression")


def dev_weights(scores: Mapping[str, float], tasks: Sequence[str], floor: float = 0.05) -> dict[str, float]:
    """Weights from last epoch's dev scores: worse task, larger weight; mean weight 1."""
    gaps = {t: max(floor, 1.0 - min(1.0, max(0.0, float(scores[t])))) for t in tasks}
    total = sum(gaps.values())
    return {t: len(tasks) * g / total for t, g in gaps.items()}


class UncertaintyWeighting(nn.Module):
    """Learned homoscedastic-uncertainty task weights (Kendall et al. 2018)."""

    def __init__(self, tasks: Sequence[str]):
        super().__init__()
        self.tasks = list(tasks)
        self.log_vars = nn.Parameter(torch.zeros(len(self.tasks)))

    def factor(self, task: str) -> float:
        return 0.5 if task in REGRESSION_TASKS else 1.0

    def forward(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        """``c_t exp(-s_t) L_t + s_t / 2`` for one task's loss."""
        s = self.log_vars[self.tasks.index(task)]
        return self.factor(task) * torch.exp(-s) * loss + 0.5 * s

    def weights(self) -> dict[str, float]:
        """The effective weight ``c_t exp(-s_t)`` each task's loss gets now."""
        return {t: self.factor(t) * float(torch.exp(-s)) for t, s in zip(self.tasks, self.log_vars.detach())}

"""Our AdamW against torch.optim.AdamW, and the warm-up schedule."""
from __future__ import annotations

import pytest
import torch

from core.training.optim import AdamW, make_optimizer, warmup_linear


# one intra-op thread: small ops are faster without thread hand-offs on 2 cores
pytestmark = pytest.mark.usefixtures("one_thread")


def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(7, 5, generator=g)
    b = torch.randn(5, generator=g)
    x = torch.randn(64, 7, generator=g)
    y = torch.randn(64, 5, generator=g)
    return w, b, x, y


def _groups(w, b):
    # two groups with their own lr / weight decay, as the trainer builds them
    return [{"params": [w], "lr": 3e-2, "weight_decay": 0.1},
            {"params": [b], "lr": 1e-2, "weight_decay": 0.0}]


def test_adamw_matches_torch_over_many_steps():
    w0, b0, x, y = _problem()
    ours_w, ours_b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
    ref_w, ref_b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
    ours = AdamW(_groups(ours_w, ours_b), betas=(0.9, 0.999), eps=1e-8)
    ref = torch.optim.AdamW(_groups(ref_w, ref_b), betas=(0.9, 0.999), eps=1e-8)
    sched_ours, sched_ref = warmup_linear(ours, 400, 0.1), warmup_linear(ref, 400, 0.1)
    worst = 0.0
    for step in range(400):
        for opt, sched, (w, b) in ((ours, sched_ours, (ours_w, ours_b)), (ref, sched_ref, (ref_w, ref_b))):
            opt.zero_grad()
            loss = (torch.tanh(x @ w + b) - y).pow(2).mean() + 0.01 * w.abs().sum()
            loss.backward()
            opt.step()
            sched.step()
        worst = max(worst, (ours_w - ref_w).abs().max().item(), (ours_b - ref_b).abs().max().item())
    assert worst < 1e-6
    # the weights really moved (the comparison is not between two frozen tensors)
    assert (ours_w - w0).abs().max().item() > 0.1


def test_adamw_skips_params_without_grad_and_decays_the_rest():
    p, q = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = AdamW([p, q], lr=0.1, weight_decay=0.5)
    p.grad = torch.zeros(3)   # zero gradient: only the decoupled decay acts
    opt.step()
    assert torch.allclose(p.detach(), torch.full((3,), 1 - 0.1 * 0.5))
    assert torch.equal(q.detach(), torch.ones(3))   # no grad: untouched


def test_make_optimizer_by_name_and_errors():
    w = torch.nn.Parameter(torch.zeros(2))
    assert isinstance(make_optimizer("adamw", [{"params": [w]}], 1e-3, 0.0), AdamW)
    assert isinstance(make_optimizer("torch_adamw", [{"params": [w]}], 1e-3, 0.0), torch.optim.AdamW)
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("sgd", [{"params": [w]}], 1e-3, 0.0)
    with pytest.raises(ValueError):
        AdamW([w], lr=-1.0)


def test_warmup_then_linear_decay():
    w = torch.nn.Parameter(torch.zeros(1))
    opt = AdamW([w], lr=1.0)
    sched = warmup_linear(opt, total_steps=10, warmup_ratio=0.2)   # 2 warm-up steps
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1 / 3) and lrs[1] == pytest.approx(2 / 3)
    assert lrs[2] == pytest.approx(1.0)
    assert lrs[9] == pytest.approx(1 / 8)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))

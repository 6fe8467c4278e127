"""Loss math on hand-computable cases: MNRL, SimCSE, triplet, SMART, the momentum teacher."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.config.schema import SmartConfig
from core.losses.functions import (OBJECTIVE_LOSSES, in_batch_logits, mnrl_loss, simcse_sup_loss,
                         simcse_unsup_loss, task_loss, triplet_loss)
from core.losses.smart import MomentumTeacher, smart_regularizer, symmetric_divergence


# one intra-op thread: small ops are faster without thread hand-offs on 2 cores
pytestmark = pytest.mark.usefixtures("one_thread")


def _manual_in_batch_ce(anchors, candidates, scale):
    """Row by row: -log softmax over scale * cos(anchor_i, candidate_j) at j = i."""
    total = 0.0
    for i, a in enumerate(anchors):
        sims = torch.stack([scale * F.cosine_similarity(a, c, dim=0) for c in candidates])
        total += -(sims[i] - torch.logsumexp(sims, 0))
    return total / len(anchors)


def test_mnrl_is_cross_entropy_over_the_in_batch_similarity_matrix():
    torch.manual_seed(0)
    a, p, n = torch.randn(4, 6), torch.randn(4, 6), torch.randn(3, 6)
    assert mnrl_loss(a, p, scale=20.0).item() == pytest.approx(_manual_in_batch_ce(a, p, 20.0).item(), rel=1e-5)
    with_neg = mnrl_loss(a, p, scale=20.0, negatives=n)
    assert with_neg.item() == pytest.approx(_manual_in_batch_ce(a, torch.cat([p, n]), 20.0).item(), rel=1e-5)
    logits = in_batch_logits(a, p, 20.0)
    assert logits.shape == (4, 4) and logits.abs().max() <= 20.0 + 1e-4
    assert with_neg > mnrl_loss(a, p, scale=20.0)   # more candidates, harder


def test_mnrl_two_by_two_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0]])    # row 1's positive is orthogonal to it
    # row 0: logits [s, s] -> log 2; row 1: logits [0, 0] -> log 2
    assert mnrl_loss(a, p, scale=5.0).item() == pytest.approx(math.log(2), rel=1e-6)
    # matching positives, orthogonal others: -log(e^s / (e^s + 1))
    assert mnrl_loss(a, a, scale=5.0).item() == pytest.approx(math.log(1 + math.exp(-5.0)), rel=1e-6)


def test_simcse_positives_on_the_diagonal():
    z = torch.eye(4) * 3.0                       # four orthogonal sentences
    aligned = simcse_unsup_loss(z, z.clone(), temperature=0.05)
    shifted = simcse_unsup_loss(z, z.roll(1, dims=0), temperature=0.05)   # views paired wrongly
    assert aligned.item() == pytest.approx(math.log(1 + 3 * math.exp(-20.0)), abs=1e-7)
    assert shifted.item() == pytest.approx(20.0 + math.log(1 + 3 * math.exp(-20.0)), rel=1e-5)
    # = MNRL with scale 1 / temperature
    torch.manual_seed(1)
    v1, v2 = torch.randn(5, 8), torch.randn(5, 8)
    assert simcse_unsup_loss(v1, v2, 0.1).item() == pytest.approx(mnrl_loss(v1, v2, 10.0).item(), rel=1e-6)


def test_simcse_supervised_hard_negatives():
    a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    p = a.clone()
    far = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    near = a.clone()                             # hard negatives identical to the anchors
    t = 0.5                                      # similarities are cos / 0.5 = 2 cos
    easy = simcse_sup_loss(a, p, far, t)
    # row i: logits [2 (own positive), 0 (other positive), 0, 0 (hard negatives)]
    assert easy.item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 3)), rel=1e-6)
    hard = simcse_sup_loss(a, p, near, t)
    # row 0: [2, 0 | 2, 0]  -> the hard negative ties with the positive
    assert hard.item() == pytest.approx(-math.log(math.exp(2) / (2 * math.exp(2) + 2)), rel=1e-6)
    assert hard > easy


def test_triplet_loss_by_hand_and_zero_when_the_margin_holds():
    anchor = torch.tensor([[0.0, 0.0]])
    positive = torch.tensor([[3.0, 4.0]])                       # d = 5
    negatives = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])        # d = 1, 2
    expected = 5.0 - math.log(math.exp(1) + math.exp(2))
    assert triplet_loss(anchor, positive, negatives).item() == pytest.approx(expected, rel=1e-6)
    # positive closer than the soft maximum of the negatives' distances: zero loss, zero grad
    close = torch.tensor([[0.3, 0.4]], requires_grad=True)     # d = 0.5
    loss = triplet_loss(anchor, close, negatives)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(close.grad == 0)
    # a margin re-activates it: 0.5 - logsumexp(1, 2) + 2
    assert triplet_loss(anchor, close.detach(), negatives, margin=2.0).item() == pytest.approx(
        0.5 - math.log(math.exp(1) + math.exp(2)) + 2.0, rel=1e-6)
    assert set(OBJECTIVE_LOSSES) == {"mnrl", "simcse_unsup", "simcse_sup", "triplet"}


def test_triplet_loss_is_a_sum_over_the_minibatch_anchors():
    """Report 001, Eq. 1: L_minibatch = sum_i^A max(0, d(x_i, y_i) - log sum_j^N exp d(x_i, z_j))."""
    anchors = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    positives = torch.tensor([[3.0, 4.0], [0.0, 6.0], [0.3, 0.4]])          # d = 5, 6, 0.5
    negatives = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]] * 3)                # d = 1, 2 for each anchor
    lse = math.log(math.exp(1) + math.exp(2))                               # 2.3133
    # by hand: (5 - 2.3133) + (6 - 2.3133) + max(0, 0.5 - 2.3133) = 2.6867 + 3.6867 + 0
    expected = (5.0 - lse) + (6.0 - lse) + 0.0
    assert triplet_loss(anchors, positives, negatives).item() == pytest.approx(expected, rel=1e-6)
    # doubling the minibatch doubles the loss: a sum, not a mean
    twice = triplet_loss(anchors.repeat(2, 1), positives.repeat(2, 1), negatives.repeat(2, 1, 1))
    assert twice.item() == pytest.approx(2 * expected, rel=1e-6)
    # the per-anchor gaps logsumexp - d_pos: an anchor is active at margin m iff its gap < m
    from core.losses.functions import triplet_gaps
    gaps = triplet_gaps(anchors, positives, negatives)
    assert gaps.tolist() == pytest.approx([lse - 5.0, lse - 6.0, lse - 0.5], rel=1e-6)
    # bf16 inputs are scored in float32 (a bf16 logsumexp near 2.3 is off by up to 0.008)
    bf16 = triplet_loss(anchors.bfloat16(), positives.bfloat16(), negatives.bfloat16())
    assert bf16.dtype == torch.float32 and bf16.item() == pytest.approx(expected, rel=1e-6)


def test_task_losses_are_the_baselines():
    logits, labels = torch.tensor([[2.0, 0.0, 0.0, 0.0, 0.0]]), torch.tensor([0])
    assert task_loss("sst", logits, labels).item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 4)))
    assert task_loss("qqp", torch.tensor([0.0]), torch.tensor([1])).item() == pytest.approx(math.log(2))
    assert task_loss("sts", torch.tensor([3.0, 1.0]), torch.tensor([1.0, 1.0])).item() == pytest.approx(2.0)


# ------------------------------------------------------------------ SMART
def test_symmetric_divergences():
    torch.manual_seed(0)
    p, q = torch.randn(6, 5), torch.randn(6, 5)
    lp, lq = F.log_softmax(p, -1), F.log_softmax(q, -1)
    kl = lambda a, b: (a.exp() * (a - b)).sum(-1).mean()
    assert symmetric_divergence(p, q, "categorical").item() == pytest.approx((kl(lp, lq) + kl(lq, lp)).item(), rel=1e-5)
    a, b = torch.randn(6), torch.randn(6)
    pa, pb = torch.sigmoid(a), torch.sigmoid(b)
    bern = lambda x, y: (x * torch.log(x / y) + (1 - x) * torch.log((1 - x) / (1 - y))).mean()
    assert symmetric_divergence(a, b, "bernoulli").item() == pytest.approx((bern(pa, pb) + bern(pb, pa)).item(), rel=1e-5)
    assert symmetric_divergence(a, b, "mse").item() == pytest.approx(((a - b) ** 2).mean().item(), rel=1e-6)
    for kind, x in (("categorical", p), ("bernoulli", a), ("mse", a)):
        assert symmetric_divergence(x, x, kind).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError):
        symmetric_divergence(a, b, "hinge")


CFG = SmartConfig(weight=1.0, noise_std=1e-3, step_size=1e-2, ascent_steps=2)


def test_smart_regularizer_is_zero_for_a_constant_model():
    const = nn.Parameter(torch.tensor([[0.5, -1.0, 2.0]]))
    forward = lambda e: const.expand(e["a"].shape[0], 3)        # ignores its input
    embeds = {"a": torch.randn(4, 7, 8)}
    reg = smart_regularizer(forward, embeds, forward(embeds), "categorical", CFG)
    assert reg.item() == 0.0


@pytest.mark.parametrize("kind", ["categorical", "bernoulli", "mse"])
def test_smart_regularizer_is_positive_for_an_input_sensitive_model(kind):
    torch.manual_seed(0)
    proj = nn.Linear(8, 3 if kind == "categorical" else 1)
    def forward(e):
        out = proj(e["a"].mean(1))
        return out if kind == "categorical" else out.squeeze(-1)
    embeds = {"a": torch.randn(4, 7, 8, requires_grad=True)}
    clean = forward(embeds)
    reg = smart_regularizer(forward, embeds, clean, kind, CFG)
    assert reg.item() > 0
    reg.backward()                      # it trains the model: gradients reach its weights
    assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0


def test_smart_ascent_finds_a_worse_perturbation_than_random_noise():
    torch.manual_seed(0)
    proj = nn.Linear(8, 4)
    forward = lambda e: proj(e["a"].mean(1))
    embeds = {"a": torch.randn(16, 5, 8)}
    clean = forward(embeds)
    random_only = smart_regularizer(forward, embeds, clean, "categorical",
                                    SmartConfig(weight=1.0, noise_std=1e-3, step_size=1e-12))
    ascended = smart_regularizer(forward, embeds, clean, "categorical",
                                 SmartConfig(weight=1.0, noise_std=1e-3, step_size=1e-1))
    assert ascended > 10 * random_only


def test_smart_noise_stays_off_padding_and_inside_epsilon():
    seen = {}
    def forward(e):
        seen["x"] = e["a"].detach().clone()
        return (e["a"] * pad.unsqueeze(-1)).sum((1, 2))       # reads padding positions only
    pad = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 1]], dtype=torch.float)
    embeds = {"a": torch.zeros(2, 4, 3)}
    masks = {"a": 1 - pad}
    reg = smart_regularizer(forward, embeds, forward(embeds), "mse",
                            SmartConfig(weight=1.0, noise_std=1.0, step_size=1.0, epsilon=0.5), masks)
    assert reg.item() == 0.0                               # no noise where the mask is 0
    assert seen["x"][pad.bool()].abs().max() == 0
    assert seen["x"].abs().max() <= 0.5 + 1e-6             # projected to the l_inf ball


def test_momentum_teacher_is_an_exponential_moving_average():
    student = nn.Linear(2, 2)
    teacher = MomentumTeacher(student, momentum=0.9)
    before = teacher.model.weight.detach().clone()
    with torch.no_grad():
        student.weight.add_(1.0)
    teacher.update(student)
    assert torch.allclose(teacher.model.weight, 0.9 * before + 0.1 * student.weight.detach())
    assert not any(p.requires_grad for p in teacher.model.parameters())
    x = torch.randn(3, 2)
    assert not teacher(x).requires_grad


@pytest.mark.parametrize("with_negatives", [False, True])
def test_mnrl_over_two_ranks_with_gathered_candidates_equals_one_process(with_negatives):
    """Data parallel MNRL / SimCSE: each rank's anchors against every rank's candidates
    (DistContext.gather_rows), scaled by loss_scale and averaged over ranks, give the
    single-process loss and gradients. Two ranks are emulated in one process: autograd
    sums every rank's gradient into the shared leaves, as gather_rows' backward does."""
    from core.training.distributed import DistContext
    torch.manual_seed(0)
    n, d = 7, 5
    a, p, neg = (torch.randn(n, d, requires_grad=True) for _ in range(3))
    negatives = neg if with_negatives else None
    single = mnrl_loss(a, p, 20.0, negatives)
    want = torch.autograd.grad(single, [a, p, neg], allow_unused=True)

    shards = [list(range(0, n, 2)), list(range(1, n, 2))]
    total = 0.0
    for r, shard in enumerate(shards):
        local_p, local_n = p[shard], neg[shard] if with_negatives else None
        source = {id(local_p): p, id(local_n): neg}

        def gather(x, r=r, source=source):
            full = source[id(x)]
            return torch.cat([full[s] for s in shards]), sum(len(s) for s in shards[:r])

        loss_r = mnrl_loss(a[shard], local_p, 20.0, local_n, gather=gather)
        total = total + DistContext(rank=r, world_size=2).loss_scale(len(shard), n) * loss_r / 2
    got = torch.autograd.grad(total, [a, p, neg], allow_unused=True)
    assert torch.allclose(total, single, atol=1e-6)
    for g, w in zip(got, want):
        assert (g is None) == (w is None)
        if w is not None:
            assert torch.allclose(g, w, atol=1e-6)
    # without the gathered candidates each rank sees only its own share: a different loss
    local_only = sum(DistContext(rank=r, world_size=2).loss_scale(len(s), n)
                     * mnrl_loss(a[s], p[s], 20.0, neg[s] if with_negatives else None) / 2
                     for r, s in enumerate(shards))
    assert abs(local_only.item() - single.item()) > 1e-3


def test_data_parallel_triplet_shares_add_up_to_the_sum_over_the_global_batch():
    """Eq. 1 is a sum over the minibatch's anchors; under data parallelism each rank's share
    is rescaled (objective_loss's n_global) so that after the trainer's share weight
    (DistContext.loss_scale) and the gradient average over ranks, the gradient is that of
    the global batch's sum."""
    from core.config.schema import ContrastiveConfig
    from core.training.contrastive import objective_loss
    from core.training.distributed import DistContext

    torch.manual_seed(0)
    table = torch.randn(8 * 7, 4, requires_grad=True)            # 8 triplets x (a, p, n0..n4) as rows

    class Lookup:                                                 # a "model" whose embeddings are rows of table
        def encode(self, inputs):
            return type("E", (), {"pooled": table[inputs["input_ids"][:, 0]]})()

    def batch(rows):
        part = lambda k: {"input_ids": torch.tensor([[r * 7 + k] for r in rows]),
                          "attention_mask": torch.ones(len(rows), 1, dtype=torch.long),
                          "token_type_ids": torch.zeros(len(rows), 1, dtype=torch.long)}
        return {"a": part(0), "p": part(1), **{f"n{i}": part(2 + i) for i in range(5)}}

    cfg = ContrastiveConfig(margin=100.0)                         # every anchor active: all rows get gradients
    whole = objective_loss(Lookup(), "triplet", batch(range(8)), cfg)
    (full,) = torch.autograd.grad(whole, table)
    dist = DistContext(rank=0, world_size=2)
    shares = [list(range(8))[r::2] for r in range(2)]
    grads = []
    for idx in shares:
        share = objective_loss(Lookup(), "triplet", batch(idx), cfg, n_global=8)
        (g,) = torch.autograd.grad(share * dist.loss_scale(len(idx), 8), table)
        grads.append(g)
    assert torch.allclose((grads[0] + grads[1]) / 2, full, atol=1e-5)   # the all-reduce average

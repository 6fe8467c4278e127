"""Task scheduling, class-balanced sampling and loss weighting: their math on small cases."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from core.training.schedules import (balanced_batches, epoch_plan, inverse_frequency_weights, rescale_counts,
                            steps_in_epoch, task_counts)
from core.losses.weighting import UncertaintyWeighting, dev_weights

N = {"sst": 3, "sts": 2, "qqp": 4}


# one intra-op thread: small ops are faster without thread hand-offs on 2 cores
pytestmark = pytest.mark.usefixtures("one_thread")


def test_sequential_trains_each_task_in_turn():
    plan = epoch_plan("sequential", ["sst", "sts", "qqp"], N, "min")
    assert plan == [("sst",)] * 3 + [("sts",)] * 2 + [("qqp",)] * 4
    # a fixed step budget keeps the order and splits the steps in proportion to size
    plan = epoch_plan("sequential", ["sst", "sts", "qqp"], {"sst": 30, "sts": 20, "qqp": 50}, 10)
    assert [t for (t,) in plan] == ["sst"] * 3 + ["sts"] * 2 + ["qqp"] * 5


def test_round_robin_takes_every_task_each_step():
    assert epoch_plan("round_robin", ["sst", "qqp"], N, "min") == [("sst", "qqp")] * 3
    assert len(epoch_plan("round_robin", ["sst", "qqp"], N, "max")) == 4
    assert len(epoch_plan("round_robin", ["sst", "qqp"], N, 7)) == 7


def test_mtdnn_merges_and_shuffles_all_batches():
    n = {"sst": 20, "qqp": 40, "sts": 10}
    plan = epoch_plan("mtdnn", list(n), n, "min", seed=3)
    assert all(len(step) == 1 for step in plan)                    # one task per step
    assert Counter(t for (t,) in plan) == Counter(n)                 # every batch once
    assert plan == epoch_plan("mtdnn", list(n), n, "min", seed=3)    # deterministic
    assert plan != epoch_plan("mtdnn", list(n), n, "min", seed=4)    # reshuffled per epoch
    assert plan != sorted(plan)                                      # actually mixed


@pytest.mark.parametrize("sampling,expected", [
    ("proportional", {"sst": 20, "qqp": 40, "sts": 10}),
    ("truncate", {"sst": 10, "qqp": 10, "sts": 10}),
    ("resample", {"sst": 40, "qqp": 40, "sts": 40}),
])
def test_task_sampling_counts(sampling, expected):
    n = {"sst": 20, "qqp": 40, "sts": 10}
    assert task_counts(n, sampling) == expected
    assert steps_in_epoch("mtdnn", n, "min", sampling) == sum(expected.values())


def test_ratio_sampling_holds_over_many_draws():
    n = {"sst": 267, "qqp": 500, "sts": 189}
    ratio = {"sst": 1, "qqp": 2, "sts": 1}
    counts = task_counts(n, "ratio", ratio)
    assert counts == {"sst": 189, "qqp": 378, "sts": 189}   # as many as fit STS's 189 batches
    draws = Counter()
    for epoch in range(20):
        plan = epoch_plan("mtdnn", list(n), n, "min", "ratio", ratio, seed=epoch)
        draws.update(t for (t,) in plan)
        first = Counter(t for (t,) in plan[:200])   # a prefix is mixed 1:2:1 too
        assert abs(first["qqp"] / 200 - 0.5) < 0.12
    total = sum(draws.values())
    assert draws["qqp"] / total == pytest.approx(0.5, abs=1e-9)
    assert draws["sst"] / total == pytest.approx(0.25, abs=1e-9)
    # a fixed number of steps keeps the ratio
    plan = epoch_plan("mtdnn", list(n), n, 100, "ratio", ratio)
    assert Counter(t for (t,) in plan) == {"sst": 25, "qqp": 50, "sts": 25}
    with pytest.raises(ValueError, match="ratio"):
        task_counts(n, "ratio", {"sst": 1})


def test_rescale_counts_largest_remainder():
    assert rescale_counts({"a": 1, "b": 1, "c": 1}, 10) == {"a": 4, "b": 3, "c": 3}
    assert sum(rescale_counts({"a": 267, "b": 189, "c": 500}, 240).values()) == 240
    assert rescale_counts({"a": 5}, 0) == {"a": 0}


def test_inverse_frequency_weights_give_each_class_equal_mass():
    labels = np.array([0] * 90 + [1] * 9 + [2])
    w = inverse_frequency_weights(labels)
    assert w.sum() == pytest.approx(1.0)
    for c in range(3):
        assert w[labels == c].sum() == pytest.approx(1 / 3)
    assert w[99] == pytest.approx(90 * w[0])   # the singleton is 90x likelier than a majority row


def test_class_balanced_batches_draw_classes_equally():
    labels = np.array([0] * 900 + [1] * 90 + [2] * 10)
    lengths = np.random.default_rng(0).integers(5, 40, size=len(labels))
    drawn = Counter()
    for seed in range(10):
        batches = balanced_batches(labels, lengths, batch_size=32, seed=seed)
        assert sum(len(b) for b in batches) == len(labels)       # one pass = n draws
        assert all(len(b) <= 32 for b in batches)
        drawn.update(int(labels[i]) for b in batches for i in b)
    total = sum(drawn.values())
    for c in range(3):
        assert drawn[c] / total == pytest.approx(1 / 3, abs=0.02)
    assert balanced_batches(labels, lengths, 32, seed=1) == balanced_batches(labels, lengths, 32, seed=1)


def test_dev_weights_favour_the_weakest_task():
    w = dev_weights({"sst": 0.5, "qqp": 0.8, "sts": 0.9}, ["sst", "qqp", "sts"])
    # gaps 0.5, 0.2, 0.1 -> 3 * gap / 0.8
    assert w == pytest.approx({"sst": 1.875, "qqp": 0.75, "sts": 0.375})
    assert sum(w.values()) == pytest.approx(3.0)
    # scores outside [0, 1] (a negative Pearson) are clipped; a perfect task keeps a floor
    w = dev_weights({"sst": 1.0, "sts": -0.2}, ["sst", "sts"])
    assert w["sst"] == pytest.approx(2 * 0.05 / 1.05) and w["sts"] == pytest.approx(2 * 1.0 / 1.05)


def test_uncertainty_weighting_value_and_gradient():
    uw = UncertaintyWeighting(["sst", "sts"])
    with torch.no_grad():
        uw.log_vars.copy_(torch.tensor([0.3, -0.5]))
    l_sst, l_sts = torch.tensor(2.0), torch.tensor(3.0)
    total = uw("sst", l_sst) + uw("sts", l_sts)
    s1, s2 = 0.3, -0.5
    expected = np.exp(-s1) * 2.0 + s1 / 2 + 0.5 * np.exp(-s2) * 3.0 + s2 / 2   # STS: regression, c = 1/2
    assert total.item() == pytest.approx(expected, rel=1e-6)
    total.backward()
    grad = uw.log_vars.grad
    assert grad[0].item() == pytest.approx(-np.exp(-s1) * 2.0 + 0.5, rel=1e-6)
    assert grad[1].item() == pytest.approx(-0.5 * np.exp(-s2) * 3.0 + 0.5, rel=1e-6)
    # the gradient vanishes at s = log(2 c L): the learned weight balances the loss
    uw2 = UncertaintyWeighting(["qqp"])
    with torch.no_grad():
        uw2.log_vars.fill_(float(np.log(2 * 1.0 * 0.7)))
    uw2("qqp", torch.tensor(0.7)).backward()
    assert abs(uw2.log_vars.grad.item()) < 1e-6
    assert uw.weights()["sst"] == pytest.approx(np.exp(-s1))

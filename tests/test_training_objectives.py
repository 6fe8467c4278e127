"""The sentence-embedding objectives' loss math (core/losses/objectives.py): tensors in,
a scalar out, against hand computations."""
from __future__ import annotations

import math

import pytest
import torch

from core.config.schema import ContrastiveConfig
from core.losses.objectives import embedding_objective_loss, objective_parts


def test_the_parts_each_objective_embeds():
    assert objective_parts("simcse_unsup", ["a"]) == ["a", "a"]           # two dropout views
    assert objective_parts("mnrl", ["a", "p"]) == ["a", "p"]
    assert objective_parts("simcse_sup", ["a", "p", "n"]) == ["a", "p", "n"]
    assert objective_parts("triplet", ["a", "p", "n0", "n1", "n2"]) == ["a", "p", "n0", "n1", "n2"]
    with pytest.raises(ValueError, match="not a sentence-embedding objective"):
        objective_parts("supervised", ["a"])


def test_triplet_by_hand_and_its_data_parallel_share():
    # anchor 1: d_pos = 3, one negative at 1: gap 1 - 3 = -2, term relu(0.5 + 2) = 2.5
    # anchor 2: d_pos = 1, negative at 2: gap 1, term relu(0.5 - 1) = 0        -> sum 2.5
    a = torch.zeros(2, 2)
    p = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    n0 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    cfg = ContrastiveConfig(margin=0.5)
    assert embedding_objective_loss("triplet", [a, p, n0], cfg).item() == pytest.approx(2.5)
    # this process holds 2 anchors of a global batch of 4: its sum is rescaled by 4 / 2
    assert embedding_objective_loss("triplet", [a, p, n0], cfg, n_global=4).item() == pytest.approx(5.0)


def test_mnrl_by_hand():
    # orthogonal unit anchors, positives equal to them, scale 1: logits = identity;
    # each row's cross-entropy with its diagonal target is log(1 + e^-1)
    a = torch.eye(2)
    loss = embedding_objective_loss("mnrl", [a, a.clone()], ContrastiveConfig(scale=1.0))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)

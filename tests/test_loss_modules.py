"""Loss modules chosen by name (core/losses/functions.py) against hand-computed values, and the
trainer options around them: cyclic backward, per-task batch sizes, encoder dropout,
regularizers with their own weights."""
from __future__ import annotations

import math

import pytest
import torch

from core.config.schema import Config, LossTerm, TrainConfig
from core.errors import ConfigError
from core.losses.functions import (CosineMSELoss, LossBatch, MultipleNegativesRankingLoss, build_task_losses,
                         symmetric_mnrl_loss)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_cosine_mse_by_hand():
    u = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    v = torch.tensor([[0.0, 3.0], [1.0, 0.0]])
    # cos = 0 and 1; targets 2.5 / 5 = 0.5 and 5 / 5 = 1: ((0 - 0.5)^2 + 0) / 2 = 0.125
    batch = LossBatch("sts", torch.zeros(2), torch.tensor([2.5, 5.0]), u, v)
    assert CosineMSELoss()(batch).item() == pytest.approx(0.125, abs=1e-7)


def test_score_bce_by_hand():
    """Report 002 §3: cross entropy for every task; for STS's 0-5 score, binary cross-entropy
    of score / 5 against label / 5."""
    from core.losses.functions import ScoreBCELoss
    batch = LossBatch("sts", torch.tensor([2.5, 4.0]), torch.tensor([5.0, 1.0]))
    # p = 0.5, t = 1: -log 0.5;  p = 0.8, t = 0.2: -(0.2 log 0.8 + 0.8 log 0.2)
    expected = (-math.log(0.5) - (0.2 * math.log(0.8) + 0.8 * math.log(0.2))) / 2
    assert ScoreBCELoss()(batch).item() == pytest.approx(expected, rel=1e-6)
    # least at p = t (where the BCE is the entropy of t): the score moves toward the label
    grad_at = lambda score: torch.autograd.functional.jacobian(
        lambda x: ScoreBCELoss()(LossBatch("sts", x, torch.tensor([3.0]))), torch.tensor([score]))
    assert grad_at(2.0).item() < 0 < grad_at(4.0).item()
    assert [t.name for t in TrainConfig(losses={"sts": [LossTerm("bce_score")]}).task_losses("sts")] == ["bce_score"]


def test_symmetric_mnrl_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    s = 5.0
    # a -> p: both rows log 2 (see test_mnrl_two_by_two_by_hand)
    forward = math.log(2)
    # p -> a: p_0 = [1, 0] ranks a_0 (cos 1) against a_1 (cos 0): -log(e^5 / (e^5 + 1));
    # p_1 = [1, 0] must pick a_1 (cos 0) against a_0 (cos 1): 5 + log(1 + e^-5)
    backward = (math.log(1 + math.exp(-s)) + s + math.log(1 + math.exp(-s))) / 2
    assert symmetric_mnrl_loss(a, p, scale=s).item() == pytest.approx((forward + backward) / 2, rel=1e-6)


def test_mnrl_module_ranks_the_batchs_positive_pairs_only():
    u = torch.tensor([[1.0, 0.0], [0.3, 0.7], [0.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [0.9, 0.1], [1.0, 0.0]])
    labels = torch.tensor([1, 0, 1])              # pair 1 is a labelled non-paraphrase
    out = torch.zeros(3)
    mnrl = MultipleNegativesRankingLoss(scale=5.0)
    # positives 0 and 2: the 2 x 2 case by hand, log 2 (pair 1 takes no part)
    assert mnrl(LossBatch("qqp", out, labels, u, v)).item() == pytest.approx(math.log(2), rel=1e-6)
    # with hard negatives the non-paraphrase's second sentence [0.9, 0.1] joins the candidates
    hard = MultipleNegativesRankingLoss(scale=5.0, hard_negatives=True)(LossBatch("qqp", out, labels, u, v))
    c0, c1 = 0.9 / math.hypot(0.9, 0.1), 0.1 / math.hypot(0.9, 0.1)   # its cosines to the two anchors
    row0 = -(5.0 - math.log(math.exp(5.0) + math.exp(5.0) + math.exp(5 * c0)))
    row1 = -(0.0 - math.log(1 + 1 + math.exp(5 * c1)))
    assert hard.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    # fewer than two positives: nothing to rank against
    assert mnrl(LossBatch("qqp", out, torch.tensor([1, 0, 0]), u, v)).item() == 0.0


def test_task_loss_sums_weighted_terms_own_loss_first():
    train = TrainConfig(losses={"qqp": [LossTerm("mnrl", 0.5), LossTerm("bce")]})
    train.validate()
    loss = build_task_losses("qqp", train)
    assert loss.names == ["bce", "mnrl"] and loss.primary == "bce"
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    batch = LossBatch("qqp", torch.zeros(2), torch.tensor([1, 1]), u, u.clone())
    total, parts = loss(batch)
    # logit 0: BCE = log 2; MNRL with matching positives, orthogonal others, scale 20:
    # log(1 + e^-20)
    assert parts["bce"].item() == pytest.approx(math.log(2), rel=1e-6)
    assert parts["mnrl"].item() == pytest.approx(math.log(1 + math.exp(-20.0)), abs=1e-6)   # ~2e-9
    assert total.item() == pytest.approx(math.log(2) + 0.5 * math.log(1 + math.exp(-20.0)), rel=1e-6)


def test_default_losses_are_todays_behaviour():
    train = TrainConfig(mnrl_weight=0.25)
    assert [t.name for t in train.task_losses("sst")] == ["ce"]
    assert [(t.name, t.weight) for t in train.task_losses("qqp")] == [("bce", 1.0), ("mnrl", 0.25)]
    assert [(t.name, t.weight) for t in train.task_losses("sts")] == [("mse", 1.0), ("mnrl", 0.25)]


@pytest.mark.parametrize("losses,needle", [
    ({"sts": []}, "is empty"),
    ({"sst": [{"name": "bce"}]}, "cannot train sst"),
    ({"qqp": [{"name": "bce"}, {"name": "bce"}]}, "twice"),
    ({"qqp": [{"name": "bce", "symmetric": True}]}, "options of mnrl"),
])
def test_bad_loss_lists_are_rejected(losses, needle):
    with pytest.raises(ConfigError, match=needle):
        Config.from_dict({"train": {"losses": losses}})


def test_mnrl_and_cosine_mse_need_bi_encoder_vectors():
    with pytest.raises(ConfigError, match="sentence embeddings of both sides"):
        Config.from_dict({"model": {"sts": {"mode": "cross"}},
                          "train": {"losses": {"sts": [{"name": "mse_cosine"}]}}})


# ------------------------------------------------------------- in the trainer
@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    from conftest import write_tiny_encoder
    return write_tiny_encoder(tmp_path_factory.mktemp("tiny_bert"), max_position_embeddings=128)


def _trainer(encoder, tmp_path, **train):
    from conftest import REPO
    from core.training.trainer import Trainer
    raw = {"model": {"encoder": str(encoder), "max_len": 24, "sts": {"mode": "cosine"}},
           "data": {"dir": str(REPO / "data"), "limit": 16, "eval_limit": 8},
           "train": {"batch_size": 8, "lr": 1e-3, "warmup_ratio": 0.0, "log_every": 1, **train}}
    trainer = Trainer(Config.from_dict(raw), tmp_path / "run", progress=False)
    trainer.setup()
    trainer.start_stage(trainer.stages[0])
    return trainer


def test_cyclic_backward_updates_once_per_task(tiny_encoder, tmp_path):
    counts = {}
    for backward in ("joint", "cyclic"):
        trainer = _trainer(tiny_encoder, tmp_path / backward, backward=backward)
        calls = []
        trainer._update = (lambda update: lambda: (calls.append(1), update())[1])(trainer._update)
        out = trainer.train_step()
        counts[backward] = len(calls)
        assert set(out["losses"]) == {"sst", "qqp", "sts"} and trainer.step == 1
    assert counts == {"joint": 1, "cyclic": 3}


def test_per_task_batch_sizes_and_encoder_dropout(tiny_encoder, tmp_path):
    from conftest import REPO
    from core.training.trainer import Trainer
    raw = {"model": {"encoder": str(tiny_encoder), "max_len": 24, "sts": {"mode": "cosine"},
                     "encoder_dropout": 0.3},
           "data": {"dir": str(REPO / "data"), "limit": 16, "eval_limit": 8},
           "train": {"batch_size": 8, "task_batch_size": {"sst": 4}, "smart": {"weight": 0.5}}}
    trainer = Trainer(Config.from_dict(raw), tmp_path / "run", progress=False)
    trainer.setup()
    trainer.start_stage(trainer.stages[0])
    assert {t: s.batch_size for t, s in trainer.streams.items()} == {"sst": 4, "qqp": 8, "sts": 8}
    assert len(trainer.streams["sst"].next_indices()) == 4
    drops = [m.p for m in trainer.model.bert.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and all(p == 0.3 for p in drops)
    # SMART is a regularizer module with its own weight (report 003: 0.5); Bregman off
    assert [(r.name, r.weight) for r in trainer.regularizers] == [("smart", 0.5)]
    out = trainer.train_step()
    assert {"sst_smart", "qqp_smart", "sts_smart"} <= set(out["aux"])


def test_select_last_keeps_the_last_epoch(tiny_encoder, tmp_path):
    import json
    from conftest import REPO
    from core.training.trainer import Trainer
    raw = {"model": {"encoder": str(tiny_encoder), "max_len": 24, "sts": {"mode": "cosine"}},
           "data": {"dir": str(REPO / "data"), "limit": 16, "eval_limit": 8},
           "train": {"tasks": ["sst"], "batch_size": 8, "epochs": 3, "steps_per_epoch": 1, "select": "last"}}
    out = tmp_path / "run"
    summary = Trainer(Config.from_dict(raw), out, progress=False).run()
    assert summary["best_epoch"] == 3
    assert json.loads((out / "config.json").read_text())["trained"]["epoch"] == 3

"""Recipe options of the methods: stages, schedules, weighting, SMART, objectives - typed,
validated, round-tripped, and overridable from the command line."""
from __future__ import annotations

import pytest
import torch

from core.config.schema import Config
from core.errors import ConfigError

STAGED = {"train": {"batch_size": 32, "smart": {"noise_std": 1e-4}},
          "stages": [{"name": "simcse", "objective": "simcse_unsup", "batch_size": 64},
                     {"name": "quora", "tasks": ["qqp"], "smart": {"weight": 1.0}},
                     {"name": "joint"}]}


def test_stage_plan_applies_each_stage_over_train():
    cfg = Config.from_dict(STAGED)
    plan = cfg.stage_plan()
    assert [name for name, _ in plan] == ["simcse", "quora", "joint"]
    simcse, quora, joint = (train for _, train in plan)
    assert simcse.objective == "simcse_unsup" and simcse.batch_size == 64
    assert quora.tasks == ["qqp"] and quora.batch_size == 32
    assert quora.smart.weight == 1.0 and quora.smart.noise_std == 1e-4      # nested sections merge
    assert joint.tasks == ["sst", "qqp", "sts"] and joint.smart.weight == 0.0
    assert cfg.head_tasks() == ["sst", "qqp", "sts"]                         # supervised stages only
    only_pretrain = Config.from_dict({"train": {"objective": "mnrl"}})
    assert only_pretrain.head_tasks() == [] and len(only_pretrain.stage_plan()) == 1
    assert Config.from_dict(cfg.to_dict()).stage_plan() == plan               # round trip (config.json)


@pytest.mark.parametrize("stages,needle", [
    ([{"tasks": ["qqp"]}], "needs a name"),
    ([{"name": "a"}, {"name": "a"}], "used twice"),
    ([{"name": "a", "max_steps": 3}], "cannot be set per stage"),
    ([{"name": "a", "lr": "fast"}], r"stages\[0\] \(a\): train.lr must be a number"),
    ([{"name": "a", "objective": "contrastive"}], "objective must be one of"),
    ([{"name": "a", "schedule": "mtdnn", "task_sampling": "ratio"}], "needs train.task_ratio"),
    ([{"name": "a", "bogus": 1}], "unknown key"),
    (["joint"], "must be a mapping"),
])
def test_bad_stages_are_rejected_with_the_stage(stages, needle):
    with pytest.raises(ConfigError, match=needle):
        Config.from_dict({"stages": stages})


@pytest.mark.parametrize("raw,needle", [
    ({"train": {"task_ratio": {"sst": 0}}}, "task_ratio values must be > 0"),
    ({"train": {"task_ratio": {"imdb": 1}}}, "unknown tasks"),
    ({"train": {"smart": {"ascent_steps": 0}}}, "ascent_steps"),
    ({"train": {"smart": {"momentum": 1.0}}}, "momentum"),
    ({"train": {"contrastive": {"sts_positive": 1.0, "sts_negative": 2.0}}}, "sts_negative < sts_positive"),
    ({"train": {"contrastive": {"temperature": 0}}}, "temperature"),
    ({"train": {"objective": "triplet", "freeze_encoder": True}}, "trains the encoder"),
    ({"train": {"class_balanced": ["sts"]}}, "class_balanced"),
    ({"train": {"loss_weighting": "gradnorm"}}, "loss_weighting"),
    ({"train": {"mnrl_weight": 0.5}, "model": {"qqp": {"mode": "cross"}}}, "mnrl_weight needs"),
    ({"model": {"sst": {"mode": "single", "kernel_sizes": []}}}, "kernel_sizes"),
])
def test_bad_method_options_are_rejected(raw, needle):
    with pytest.raises(ConfigError, match=needle):
        Config.from_dict(raw)


def test_train_overrides_hold_for_every_stage():
    cfg = Config.from_dict(STAGED).with_overrides(["train.batch_size=8", "train.smart.weight=0", "train.max_steps=3"])
    plan = cfg.stage_plan()
    assert all(train.batch_size == 8 and train.max_steps == 3 for _, train in plan)
    assert all(train.smart.weight == 0.0 for _, train in plan)
    assert plan[1][1].tasks == ["qqp"]                      # what was not overridden stays per stage
    assert cfg.stages[0] == {"name": "simcse", "objective": "simcse_unsup"}   # config.json shows what ran


def test_a_stage_field_is_set_by_the_stage_name():
    raw = {"train": {"batch_size": 32}, "stages": [{"name": "triplet", "objective": "triplet"}, {"name": "joint"}]}
    # train.* first (every stage), then one stage by its name: in order, the later wins there
    cfg = Config.from_dict(raw).with_overrides(["train.batch_size=8", "stages.triplet.batch_size=48",
                                                "stages.triplet.contrastive.margin=0.5"])
    (_, triplet), (_, joint) = cfg.stage_plan()
    assert (triplet.batch_size, joint.batch_size) == (48, 8)
    assert triplet.contrastive.margin == 0.5 and joint.contrastive.margin == 0.0
    with pytest.raises(ConfigError, match="no stage named 'tripelt'; its stages: triplet, joint"):
        Config.from_dict(raw).with_overrides(["stages.tripelt.batch_size=4"])
    with pytest.raises(ConfigError, match="has no stages"):
        Config.from_dict({}).with_overrides(["stages.joint.lr=1e-5"])
    with pytest.raises(ConfigError, match="cannot be set per stage"):
        Config.from_dict(raw).with_overrides(["stages.joint.max_steps=3"])


def test_constant_learning_rate_after_the_warm_up():
    from core.training.optim import warmup_linear
    w = torch.nn.Parameter(torch.zeros(1))
    rates = {}
    for decay in ("linear", "constant"):
        opt = torch.optim.SGD([w], lr=1.0)
        sched = warmup_linear(opt, total_steps=10, warmup_ratio=0.2, decay=decay)
        seen = []
        for _ in range(10):
            seen.append(sched.get_last_lr()[0])
            opt.step()
            sched.step()
        rates[decay] = seen
    # warm-up of round(10 * 0.2) = 2 steps: (s + 1) / 3; then linear: (10 - s) / 8, or 1
    assert rates["linear"] == pytest.approx([1 / 3, 2 / 3, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])
    assert rates["constant"] == pytest.approx([1 / 3, 2 / 3] + [1.0] * 8)
    assert Config.from_dict({"train": {"lr_schedule": "constant"}}).train.lr_schedule == "constant"
    with pytest.raises(ConfigError, match="lr_schedule must be one of"):
        Config.from_dict({"train": {"lr_schedule": "cosine"}})


def test_a_skipped_stage_is_left_out_and_can_be_switched_on():
    raw = {"stages": [{"name": "ucl", "objective": "simcse_unsup", "skip": True}, {"name": "joint"}]}
    cfg = Config.from_dict(raw)
    assert [n for n, _ in cfg.stage_plan()] == ["joint"]
    assert [n for n, _ in cfg.with_overrides(["stages.ucl.skip=false"]).stage_plan()] == ["ucl", "joint"]
    with pytest.raises(ConfigError, match="skip must be true or false"):
        Config.from_dict({"stages": [{"name": "a", "skip": "yes"}]})
    with pytest.raises(ConfigError, match="every stage is skipped"):
        Config.from_dict({"stages": [{"name": "a", "skip": True}]})
    with pytest.raises(ConfigError, match="cannot be 'none'"):
        Config.from_dict({"train": {"dev_eval": "none"}})
    assert Config.from_dict({"stages": [{"name": "a", "dev_eval": "none"}, {"name": "b"}]}).stage_plan()[0][1].dev_eval == "none"

"""The trainer's composition of methods, on a tiny random BERT (seconds, not minutes):
stages chain weights, schedules order the steps, objectives train the encoder,
loss weighting adapts, and --resume across stages equals an uninterrupted run."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import REPO
from core.config.schema import Config
from core.errors import ConfigError
from core.evaluation.evaluator import evaluate_model
from core.model.multitask import MultitaskBert
from core.training.trainer import Trainer
from core.losses.weighting import dev_weights


# one intra-op thread: small ops are faster without thread hand-offs on 2 cores
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """An HF-format BERT directory: 2 layers of width 32, MiniLM's tokenizer files."""
    from conftest import write_tiny_encoder
    return write_tiny_encoder(tmp_path_factory.mktemp("tiny_bert"), max_position_embeddings=128)


def _config(encoder, raw: dict, *overrides: str) -> Config:
    base = {"model": {"encoder": str(encoder), "max_len": 24, "sts": {"mode": "cosine"}},
            "data": {"dir": str(REPO / "data"), "limit": 16, "eval_limit": 8},
            "train": {"batch_size": 8, "lr": 1e-3, "head_lr": 1e-3, "warmup_ratio": 0.0, "log_every": 1}}
    for key, value in raw.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return Config.from_dict(base).with_overrides(list(overrides))


def _events(out):
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_stages_start_from_the_previous_weights(tiny_encoder, tmp_path):
    cfg = _config(tiny_encoder, {
        "train": {"max_steps": 2},
        "stages": [{"name": "quora", "tasks": ["qqp"]},
                   {"name": "mnrl", "objective": "mnrl", "tasks": ["qqp", "sts"]},
                   {"name": "joint", "tasks": ["sst", "sts"], "schedule": "sequential"}]})
    out = tmp_path / "run"
    summary = Trainer(cfg, out, progress=False).run()
    events = _events(out)
    starts = [e for e in events if e["event"] == "stage"]
    ends = [e for e in events if e["event"] == "stage_done"]
    assert [e["stage"] for e in starts] == ["quora", "mnrl", "joint"]
    for before, after in zip(ends, starts[1:]):
        assert after["encoder_checksum"] == before["encoder_checksum"]      # picks up where it was left
    for start, end in zip(starts, ends):
        assert start["encoder_checksum"] != end["encoder_checksum"]          # and every stage trains it
    # --max-steps applies to every stage; the global step counts on
    steps = [e for e in events if e["event"] == "step"]
    assert [(e["stage"], e["step"]) for e in steps] == [
        ("quora", 1), ("quora", 2), ("mnrl", 3), ("mnrl", 4), ("joint", 5), ("joint", 6)]
    assert events[0]["total_steps"] == 6 and all(e["total_steps"] == 6 for e in steps)
    assert set(steps[2]["loss"]) == {"mnrl"}
    # evaluations: the stage's tasks; the checkpoint is the last stage's best epoch
    evals = [e for e in events if e["event"] == "eval"]
    assert [e["stage"] for e in evals] == ["quora", "mnrl", "joint"]
    assert "embedding_sts_pearson" in evals[1] and "qqp_acc" in evals[0]
    assert summary["stages"] == ["quora", "mnrl", "joint"] and summary["mean_score"] == evals[2]["score"]
    # config.json holds the whole recipe, and the model rebuilds with every trained head
    meta = json.loads((out / "config.json").read_text())
    assert [s["name"] for s in meta["config"]["stages"]] == ["quora", "mnrl", "joint"]
    model = MultitaskBert.load(out)
    assert sorted(model.heads) == ["qqp", "sst", "sts"]
    metrics, _ = evaluate_model(model, data_dir=REPO / "data", limit=8)
    assert {"sst_acc", "qqp_acc", "sts_pearson"} <= set(metrics)


def test_sequential_schedule_order_in_the_trainer(tiny_encoder, tmp_path):
    # 16 examples in batches of 8: two batches per task, SST, then STS, then Quora
    cfg = _config(tiny_encoder, {"train": {"tasks": ["sst", "sts", "qqp"], "schedule": "sequential"}})
    Trainer(cfg, tmp_path / "run", progress=False).run()
    order = [list(e["loss"]) for e in _events(tmp_path / "run") if e["event"] == "step"]
    assert order == [["sst"], ["sst"], ["sts"], ["sts"], ["qqp"], ["qqp"]]


def test_mtdnn_ratio_and_class_balance_in_the_trainer(tiny_encoder, tmp_path):
    cfg = _config(tiny_encoder, {"train": {"schedule": "mtdnn", "task_sampling": "ratio",
                                           "task_ratio": {"sst": 1, "qqp": 2, "sts": 1},
                                           "steps_per_epoch": 8, "class_balanced": ["sst"]}})
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    trainer.setup()
    stage = trainer.stages[0]
    assert stage.streams["sst"].balanced and not stage.streams["qqp"].balanced
    plan = stage.plan(0)
    assert sorted(t for (t,) in plan) == ["qqp"] * 4 + ["sst"] * 2 + ["sts"] * 2


@pytest.mark.parametrize("objective", ["simcse_unsup", "simcse_sup", "triplet"])
def test_objective_only_recipe_trains_the_encoder(tiny_encoder, tmp_path, objective):
    cfg = _config(tiny_encoder, {"train": {"objective": objective, "max_steps": 1, "tasks": ["sst", "qqp", "sts"],
                                           "contrastive": {"sts_positive": 3.0, "sts_negative": 2.0,
                                                           "negatives": 2, "margin": 50.0}}})
    out = tmp_path / objective
    trainer = Trainer(cfg, out, progress=False)
    trainer.run()
    # only the encoder is optimized; the recipe has no heads
    assert not trainer.model.heads and all(
        any(p is q for q in trainer.model.bert.parameters()) for g in trainer.optimizer.param_groups for p in g["params"])
    events = _events(out)
    step = next(e for e in events if e["event"] == "step")
    assert list(step["loss"]) == [objective] and step["loss"][objective] > 0
    stage = next(e for e in events if e["event"] == "stage")
    done = next(e for e in events if e["event"] == "stage_done")
    assert stage["encoder_checksum"] != done["encoder_checksum"]
    model = MultitaskBert.load(out)               # an encoder-only checkpoint: zero-shot pair tasks
    metrics, _ = evaluate_model(model, data_dir=REPO / "data", limit=8)
    assert "sts_pearson" in metrics and "sst_acc" not in metrics


def test_dev_adapted_weights_follow_the_last_epoch(tiny_encoder, tmp_path):
    cfg = _config(tiny_encoder, {"train": {"epochs": 2, "steps_per_epoch": 1, "loss_weighting": "dev",
                                           "loss_weights": {"sst": 2.0, "qqp": 1.0, "sts": 1.0}}})
    Trainer(cfg, tmp_path / "run", progress=False).run()
    events = _events(tmp_path / "run")
    steps = [e for e in events if e["event"] == "step"]
    first_eval = next(e for e in events if e["event"] == "eval")
    assert steps[0]["loss_weights"] == {"sst": 2.0, "qqp": 1.0, "sts": 1.0}
    scores = {"sst": first_eval["sst_acc"], "qqp": first_eval["qqp_acc"], "sts": first_eval["sts_pearson"]}
    expected = dev_weights(scores, ["sst", "qqp", "sts"])
    assert steps[1]["loss_weights"] == pytest.approx({t: round(w, 4) for t, w in expected.items()})


def test_frozen_encoder_cache_only_for_pooled_heads(tiny_encoder, tmp_path):
    for arch, cached in (("mlp", True), ("cnn", False)):
        cfg = _config(tiny_encoder, {"model": {"sst": {"mode": "single", "arch": arch}},
                                     "train": {"tasks": ["sst"], "freeze_encoder": True}})
        trainer = Trainer(cfg, tmp_path / arch, progress=False)
        trainer.setup()
        trainer.start_stage(trainer.stages[0])
        assert (trainer.streams["sst"].cache is not None) is cached


def test_resume_across_stages_equals_an_uninterrupted_run(tiny_encoder, tmp_path):
    """Stage 1 (Quora, 2 epochs) then stage 2 (round-robin with SMART, its Bregman
    teacher and learned uncertainty weights, 2 epochs); crash in each stage, resume."""
    raw = {"train": {"steps_per_epoch": 2, "epochs": 2},
           "stages": [{"name": "quora", "tasks": ["qqp"]},
                      {"name": "joint", "tasks": ["sst", "qqp"], "loss_weighting": "uncertainty",
                       "smart": {"weight": 1.0, "bregman_weight": 1.0, "momentum": 0.5}}]}
    full = Trainer(_config(tiny_encoder, raw), tmp_path / "full", progress=False)
    full.run()
    assert full.uncertainty is not None and full.uncertainty.log_vars.abs().sum() > 0   # learned
    step = [e for e in _events(tmp_path / "full") if e["event"] == "step"][-1]
    assert {"sst_smart", "qqp_smart", "sst_bregman", "sst_weight"} <= set(step["aux"])

    out = tmp_path / "crashed"
    for crash_at in (3, 7):     # stage 1 epoch 2; stage 2 epoch 2
        trainer = Trainer(_config(tiny_encoder, raw), out, progress=False, resume=crash_at == 7)
        real = trainer.train_step

        def step_or_crash(*args, _real=real, _trainer=trainer, _at=crash_at, **kwargs):
            if _trainer.step + 1 == _at:
                raise KeyboardInterrupt
            return _real(*args, **kwargs)

        trainer.train_step = step_or_crash
        with pytest.raises(KeyboardInterrupt):
            trainer.run()
    resumed = Trainer(_config(tiny_encoder, raw), out, progress=False, resume=True)
    resumed.run()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.step == full.step == 8
    kinds = [e["event"] for e in _events(out)]
    assert kinds.count("resume") == 2 and kinds.count("cancelled") == 2 and kinds[-1] == "done"


def test_stage_end_evaluation_and_epoch_training_loss(tiny_encoder, tmp_path):
    cfg = _config(tiny_encoder, {"train": {"steps_per_epoch": 2},
                                 "stages": [{"name": "pre", "objective": "mnrl", "tasks": ["qqp", "sts"],
                                             "epochs": 3, "dev_eval": "stage_end",
                                             "contrastive": {"sts_positive": 3.0}},
                                            {"name": "joint", "epochs": 2}]})
    Trainer(cfg, tmp_path / "run", progress=False).run()
    events = _events(tmp_path / "run")
    pre = [(e["event"], e["epoch"]) for e in events if e.get("stage") == "pre" and e["event"] in ("eval", "epoch_done")]
    assert pre == [("epoch_done", 1), ("epoch_done", 2), ("eval", 3)]        # dev only after its last epoch
    joint = [e["epoch"] for e in events if e["event"] == "eval" and e["stage"] == "joint"]
    assert joint == [1, 2]                                                     # 'epoch' (default): every epoch
    # each epoch's mean training loss, from the step events of that epoch (log_every 1)
    steps = [e for e in events if e["event"] == "step"]
    for e in (x for x in events if x["event"] in ("eval", "epoch_done")):
        mine = [s["loss"] for s in steps if s["stage"] == e["stage"] and s["epoch"] == e["epoch"]]
        for name in mine[0]:
            assert e["train_loss"][name] == pytest.approx(sum(m[name] for m in mine) / len(mine), rel=1e-5)


def test_optimizer_groups_come_from_the_loss_graph_and_leave_no_trace(tiny_encoder, tmp_path):
    """The groups are what the stage's loss reaches (report 002's shared projection, a
    stage's own heads; not the encoder's unused pooler, not another stage's heads), and
    finding them changes neither the random generators nor batch-norm statistics."""
    cfg = _config(tiny_encoder, {"model": {"shared_projection": 40, "sts": {"mode": "cosine", "arch": "pooled_cnn",
                                                                             "hidden": 8}},
                                 "train": {"tasks": ["sts"], "max_steps": 1, "lr": 1e-4, "head_lr": 5e-3}})
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    trainer.setup()
    stage = trainer.stages[0]
    rng = torch.get_rng_state()
    buffers = {n: b.clone() for n, b in trainer.model.named_buffers()}
    trainer.start_stage(stage)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(b, buffers[n]) for n, b in trainer.model.named_buffers())
    assert any("running_mean" in n for n in buffers)                          # the CNN's batch norm
    grouped = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    names = {n for n, p in trainer.model.named_parameters() if id(p) in grouped}
    assert {"shared_projection.weight", "shared_projection.bias"} <= names
    assert not any(n.startswith("bert.pooler.") for n in names)
    assert any(n.startswith("heads.sts.") for n in names) and any(n.startswith("bert.encoder.") for n in names)
    lrs = {round(g["lr"], 8) for g in trainer.optimizer.param_groups for p in g["params"]
           if p is trainer.model.shared_projection.weight}
    assert lrs == {5e-3}                                                       # head_lr, like the heads


def test_majority_checkpoint_rule_two_of_three():
    """Report 000 §5.2: after each epoch's evaluation the model is saved if it is better on
    two of the three tasks (here 'majority'; 'mean' compares the mean score)."""
    from core.training.evaluation import CheckpointSelection
    selection = CheckpointSelection()
    tasks = ["sst", "qqp", "sts"]
    selection.best = {"sst_acc": 0.50, "qqp_acc": 0.70, "sts_pearson": 0.60}
    selection.best_score = (0.50 + 0.70 + 0.60) / 3
    one_of_three = {"sst_acc": 0.60, "qqp_acc": 0.69, "sts_pearson": 0.59}     # mean 0.6267 > 0.6
    two_of_three = {"sst_acc": 0.51, "qqp_acc": 0.69, "sts_pearson": 0.61}     # mean 0.6033
    mean = lambda m: sum(m.values()) / 3
    assert selection.improves("mean", mean(one_of_three), one_of_three, tasks)
    assert not selection.improves("majority", mean(one_of_three), one_of_three, tasks)
    assert selection.improves("majority", mean(two_of_three), two_of_three, tasks)
    assert selection.improves("last", 0.0, one_of_three, tasks)
    tasks = ["sts"]                                                             # one task: better on it
    assert selection.improves("majority", 0.61, {"sts_pearson": 0.61}, tasks)
    assert not selection.improves("majority", 0.59, {"sts_pearson": 0.59}, tasks)
    selection.best = None                                                       # the first epoch is saved
    assert selection.improves("majority", 0.1, {"sts_pearson": 0.1}, tasks)


def test_epoch_fraction_shortens_every_epoch_keeping_the_task_proportions(tiny_encoder, tmp_path):
    # 16 examples per task, batch 8: 2 batches each; a sequential epoch is 2 + 2 + 2 = 6 steps
    cfg = _config(tiny_encoder, {"train": {"schedule": "sequential", "steps_per_epoch": "max", "epochs": 2,
                                           "epoch_fraction": 0.5}})
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    trainer.setup()
    stage = trainer.stages[0]
    assert (stage.steps_per_epoch, stage.total_steps) == (3, 6)                 # round(6 * 0.5) = 3 a epoch
    assert stage.plan(0) == [("sst",), ("qqp",), ("sts",)]                      # 1 of each: 2:2:2 kept
    full = Trainer(_config(tiny_encoder, {"train": {"schedule": "sequential", "steps_per_epoch": "max"}}),
                   tmp_path / "full", progress=False)
    full.setup()
    assert full.stages[0].steps_per_epoch == 6 and len(full.stages[0].plan(0)) == 6
    with pytest.raises(ConfigError, match="epoch_fraction must be in"):
        _config(tiny_encoder, {"train": {"epoch_fraction": 0.0}})

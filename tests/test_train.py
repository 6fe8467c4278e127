"""End-to-end training: a tiny multitask run learns, checkpoints, resumes, repeats."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import REPO, TINY
from core.config.schema import Config
from core.data.datasets import load_subset
from core.errors import ConfigError, MinbertError
from core.losses.functions import task_loss
from core.model.multitask import MultitaskBert
from core.training.cli import main
from core.training.trainer import Trainer


def _config(*extra: str) -> Config:
    return Config.from_yaml(REPO / "configs" / "quick.yaml", TINY + [f"data.dir={REPO / 'data'}", *extra])


def _train_loss(model: MultitaskBert, limit: int) -> dict[str, float]:
    """Loss of every task on the ``limit`` training examples a run with data.limit trains on
    (the seeded, label-stratified sample of core.data.datasets.load_subset), eval mode."""
    model.eval()
    out = {}
    with torch.no_grad():
        for task in model.heads:
            data = load_subset(task, "train", REPO / "data", limit)
            feats = model.featurize(task, data.texts_a, data.texts_b)
            pred = model(task, feats.batch(list(range(len(data)))))
            out[task] = task_loss(task, pred, torch.as_tensor(data.labels)).item()
    return out


def test_tiny_multitask_run_lowers_loss_and_checkpoints(tmp_path):
    cfg = _config("data.limit=16", "train.max_steps=10", "train.lr=1e-4", "train.warmup_ratio=0.0",
                  "train.steps_per_epoch=10")
    before = _train_loss(MultitaskBert.from_config(cfg), 16)
    summary = Trainer(cfg, tmp_path / "run", progress=False).run()
    model = MultitaskBert.load(tmp_path / "run")
    after = _train_loss(model, 16)
    assert sum(after.values()) < sum(before.values()), (before, after)
    assert after["sst"] < before["sst"] and after["qqp"] < before["qqp"]
    # the contract's files
    for name in ("model.safetensors", "config.json", "metrics.json", "train_log.jsonl"):
        assert (tmp_path / "run" / name).is_file(), name
    for task in ("sst", "qqp", "sts"):
        assert (tmp_path / "run" / "predictions" / f"{task}-dev.csv").is_file()
    assert not (tmp_path / "run" / "resume").exists(), "a finished run removes its resume state"
    events = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and "eval" in kinds and "checkpoint" in kinds
    steps = [e for e in events if e["event"] == "step"]
    assert steps[-1]["step"] == 10 and set(steps[0]["loss"]) == {"sst", "qqp", "sts"}
    assert all(e["examples_per_s"] > 0 for e in steps)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["finished"] and metrics["steps"] == 10
    assert set(metrics["dev"]) >= {"sst_acc", "qqp_acc", "sts_pearson"}
    assert summary["dev"] == metrics["dev"]
    # predicts
    p = model.predict_sentiment(["a wonderful film"])
    assert p.shape == (1, 5)


def test_same_seed_same_weights_and_resume_matches(tmp_path):
    """Deterministic under a seed; a run resumed from epoch 1 equals an uninterrupted one."""
    extra = ("train.epochs=2", "train.steps_per_epoch=1", "train.max_steps=null")
    full = Trainer(_config(*extra), tmp_path / "a", progress=False)
    full.run()
    again = Trainer(_config(*extra), tmp_path / "b", progress=False)
    again.run()
    sa, sb = full.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)

    # crash in the second epoch (its first step, step 2 of 2), then --resume
    crashing = Trainer(_config(*extra), tmp_path / "c", progress=False)
    real_step, calls = crashing.train_step, []

    def step_then_crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return real_step(*args, **kwargs)

    crashing.train_step = step_then_crash
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.run()
    assert (tmp_path / "c" / "resume" / "state.json").is_file()
    resumed = Trainer(_config(*extra), tmp_path / "c", resume=True, progress=False)
    resumed.run()
    sc = resumed.model.state_dict()
    diff = max((sa[k] - sc[k]).abs().max().item() for k in sa)
    assert diff < 1e-6, diff
    kinds = [json.loads(x)["event"] for x in (tmp_path / "c" / "train_log.jsonl").read_text().splitlines()]
    assert "resume" in kinds


def test_existing_run_is_not_overwritten(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "train_log.jsonl").write_text("{}\n")
    with pytest.raises(MinbertError, match="already holds a run"):
        Trainer(_config(), tmp_path / "r")
    with pytest.raises(MinbertError, match="nothing to resume"):
        Trainer(_config(), tmp_path / "r", resume=True)


def test_frozen_encoder_with_weightless_head_is_rejected():
    with pytest.raises(ConfigError, match="leaves nothing to train"):
        _config("train.freeze_encoder=true", "model.sts.mode=cosine")


def test_cli_rejects_bad_config_before_starting(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: -1\n")
    assert main(["--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "train.lr must be > 0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists(), "nothing may be created for a rejected config"
    assert main(["--config", str(REPO / "configs" / "quick.yaml"), "--out", str(tmp_path / "o"),
                 "--set", "train.scheduel=x"]) == 2
    assert "unknown key" in capsys.readouterr().err


def test_cli_smoke_run_writes_checkpoint(tmp_path, capsys):
    rc = main(["--config", str(REPO / "configs" / "quick.yaml"), "--out", str(tmp_path / "cli"),
               "--limit", "16", "--max-steps", "2", "--seed", "3", "--device", "cpu", "--no-progress",
               "--set", "train.batch_size=8", "--set", "model.max_len=32", "--set", "data.eval_limit=16",
               "--set", f"data.dir={REPO / 'data'}"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["sst_n"] == 16 and 0 <= result["sst_acc"] <= 1
    saved = json.loads((tmp_path / "cli" / "config.json").read_text())["config"]
    assert saved["train"]["seed"] == 3 and saved["data"]["limit"] == 16 and saved["train"]["max_steps"] == 2


def test_frozen_encoder_trains_only_heads(tmp_path):
    cfg = _config("train.freeze_encoder=true", "train.max_steps=3", "model.sts.mode=bi")
    trainer = Trainer(cfg, tmp_path / "f", progress=False)
    trainer.run()
    assert all(s.cache is not None for s in trainer.streams.values()), "frozen mode caches encodings"
    reference = MultitaskBert.load("pretrained")
    ours = trainer.model.bert.state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in reference.bert.state_dict().items())


def test_resume_gives_each_data_parallel_rank_its_own_generator():
    """A resumed rank continues from its own saved generator (same world size); with
    another world size, or an old single-state resume file, rank 0 takes the saved state
    and the other ranks get distinct, reproducible ones (never rank 0's masks)."""
    from core.training.state import select_rank_rng
    states = [{"cpu": torch.Generator().manual_seed(s).get_state()} for s in (11, 22)]
    saved = {"torch_rng": states[0]["cpu"], "rng_per_rank": states}
    for rank in (0, 1):
        assert torch.equal(select_rank_rng(saved, rank, 2)["cpu"], states[rank]["cpu"])
    grown = [select_rank_rng(saved, r, 3)["cpu"] for r in range(3)]
    assert torch.equal(grown[0], states[0]["cpu"])
    assert not torch.equal(grown[1], grown[0]) and not torch.equal(grown[2], grown[1])
    assert torch.equal(select_rank_rng(saved, 2, 3)["cpu"], grown[2])      # reproducible
    old = {"torch_rng": states[1]["cpu"]}
    assert torch.equal(select_rank_rng(old, 0, 2)["cpu"], states[1]["cpu"])
    assert not torch.equal(select_rank_rng(old, 1, 2)["cpu"], states[1]["cpu"])

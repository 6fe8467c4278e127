"""TensorBoard event files beside train_log.jsonl (issue #26), read back with
tensorboard's own readers: every logged step's losses and every dev evaluation, a
resumed run's curves without the steps it repeated, and training without the package."""
from __future__ import annotations

import json
import logging
import sys

import numpy as np
import pytest

from conftest import REPO, TINY, write_tiny_encoder
from core.train_log import TENSORBOARD_FILE, EventLog, read_jsonl

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def _scalars(directory) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} as TensorBoard's event accumulator (what it serves) reads them."""
    acc = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from core.config.schema import Config
    from core.training.trainer import Trainer
    root = tmp_path_factory.mktemp("tb")
    (root / "enc").mkdir()
    encoder = write_tiny_encoder(root / "enc")
    cfg = Config.from_yaml(REPO / "configs" / "quick.yaml", TINY + [
        f"model.encoder={encoder}", f"data.dir={REPO / 'data'}", "train.epochs=2", "train.max_steps=4",
        "train.steps_per_epoch=2"])
    out = root / "run"
    Trainer(cfg, out, progress=False).run()
    return out


def test_every_logged_step_and_evaluation_is_a_tensorboard_scalar(tiny_run):
    assert (tiny_run / TENSORBOARD_FILE).is_file() and (tiny_run / "train_log.jsonl").is_file()
    scalars = _scalars(tiny_run)
    events = read_jsonl(tiny_run / "train_log.jsonl")
    steps = [e for e in events if e["event"] == "step"]
    evals = [e for e in events if e["event"] == "eval"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4] and len(evals) == 2
    for e in steps:   # TensorBoard stores float32
        for task, loss in e["loss"].items():
            assert scalars[f"train/loss/{task}"][e["step"]] == pytest.approx(loss, rel=1e-6)
        assert scalars["train/lr"][e["step"]] == pytest.approx(e["lr"], rel=1e-6)
        assert scalars["train/examples_per_s"][e["step"]] == pytest.approx(e["examples_per_s"], rel=1e-6)
    for e in evals:
        # data.eval_limit=16 (TINY): figures of a dev subset, under their own group with their n
        group = "dev_subset" if e.get("subset") else "dev"
        for key in ("sst_acc", "qqp_f1", "sts_pearson", "score"):
            assert scalars[f"{group}/{key}"][e["step"]] == pytest.approx(e[key], rel=1e-6)
        if group == "dev_subset":
            assert scalars["dev_subset/sst_n"][e["step"]] == 16
    assert not any(tag.startswith("dev/") and tag.endswith("_n") for tag in scalars)


def _step(log: EventLog, step: int, loss: float) -> None:
    log.write("step", step=step, loss={"sst": loss}, lr=0.1, examples_per_s=10.0, epoch=1)


def test_a_resumed_run_replaces_the_steps_it_repeats(tmp_path):
    path = tmp_path / "train_log.jsonl"
    first = EventLog(path)
    first.write("start", name="x")
    for step in range(1, 6):          # killed after step 5; its resume state: after step 3
        _step(first, step, 1.0)
    again = EventLog(path)            # --resume: the log exists, the event file is continued
    again.write("resume", step=3, epoch=1)   # continues with step 4
    for step in range(4, 7):
        _step(again, step, 2.0)
    loss = _scalars(tmp_path)["train/loss/sst"]
    assert loss == {1: 1.0, 2: 1.0, 3: 1.0, 4: 2.0, 5: 2.0, 6: 2.0}
    # one event file, one record per step
    assert [p.name for p in tmp_path.glob("*tfevents*")] == [TENSORBOARD_FILE]
    records = again.tensorboard.events()
    assert [e.step for e in records if e.HasField("summary")] == [1, 2, 3, 4, 5, 6]


def test_a_new_run_in_the_directory_starts_a_new_event_file(tmp_path):
    path = tmp_path / "train_log.jsonl"
    old = EventLog(path)
    _step(old, 1, 5.0)
    path.unlink()                     # what --overwrite does to the old run's log
    new = EventLog(path)
    _step(new, 1, 7.0)
    assert _scalars(tmp_path)["train/loss/sst"] == {1: 7.0}


def test_without_tensorboard_training_logs_as_before(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "tensorboard.compat.proto", None)   # import fails
    log = EventLog(tmp_path / "train_log.jsonl")
    with caplog.at_level(logging.WARNING, logger="core.train_log"):
        _step(log, 1, 1.0)
        _step(log, 2, 1.0)
    assert [json.loads(line)["step"] for line in (tmp_path / "train_log.jsonl").read_text().splitlines()] == [1, 2]
    assert not (tmp_path / TENSORBOARD_FILE).exists()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "tensorboard package is not installed" in warnings[0]


def test_disabled_ranks_and_opt_out_write_no_event_file(tmp_path):
    EventLog(tmp_path / "a.jsonl", enabled=False).write("step", step=1, loss={"sst": 1.0})
    EventLog(tmp_path / "b.jsonl", tensorboard=False).write("step", step=1, loss={"sst": 1.0})
    assert not list(tmp_path.glob("*tfevents*"))
    assert np.isclose(json.loads((tmp_path / "b.jsonl").read_text())["loss"]["sst"], 1.0)


def test_tags_of_step_and_eval_events():
    from core.train_log import tensorboard_scalars
    step = {"event": "step", "time": 1.0, "step": 7, "epoch": 1, "stage": "main", "total_steps": 9,
            "loss": {"sst": 1.5, "qqp": 0.5}, "lr": 1e-4, "examples_per_s": 30.0, "elapsed_s": 4.0,
            "aux": {"sst_smart": 0.25}}
    assert tensorboard_scalars(step) == {"train/loss/sst": 1.5, "train/loss/qqp": 0.5, "train/lr": 1e-4,
                                         "train/examples_per_s": 30.0, "train/aux/sst_smart": 0.25}
    full = {"event": "eval", "step": 9, "epoch": 1, "stage": "main", "best": True, "score": 0.6,
            "sst_acc": 0.5, "sst_n": 1101, "train_loss": {"sst": 1.25}}
    assert tensorboard_scalars(full) == {"dev/score": 0.6, "dev/sst_acc": 0.5, "train/epoch_loss/sst": 1.25}
    part = {"event": "eval", "step": 9, "score": 0.6, "sst_acc": 0.5, "sst_n": 300,
            "subset": {"sst": {"n": 300, "of": 1101, "seed": 0, "sampling": "stratified"}}}
    assert tensorboard_scalars(part) == {"dev_subset/score": 0.6, "dev_subset/sst_acc": 0.5,
                                         "dev_subset/sst_n": 300.0}
    assert tensorboard_scalars({"event": "checkpoint", "step": 9, "score": 0.6}) == {}


def test_a_full_disk_while_logging_is_one_checkpoint_error(tmp_path, monkeypatch):
    """Issue 24: an OS error while train_log.jsonl is appended (disk full) is a
    CheckpointError that says so, not a raw OSError traceback."""
    import errno
    from pathlib import Path

    from core.errors import CheckpointError
    from core.train_log import EventLog
    log = EventLog(tmp_path / "train_log.jsonl", tensorboard=False)
    log.write("start")

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Path, "open", full)
    with pytest.raises(CheckpointError, match="no space left"):
        log.write("step", step=1)

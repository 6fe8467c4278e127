"""Job manager: submit, progress, queue, cancel, killed workers, restart recovery, CLI.

Jobs are real processes (``python -m core.jobs _worker`` running ``python -m core.train``)
on TINY recipes; only one of them trains to the end.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, TINY
from core.errors import ConfigError, JobError
from core.jobs import JobManager, main, pid_alive, pid_start_time, read_progress

QUICK = REPO / "configs" / "quick.yaml"
# Long enough that a job is still running when a test cancels or kills it.
SLOW = ["data.limit=64", "train.max_steps=500", "train.batch_size=8", "model.max_len=32"]


def wait_for(predicate, timeout: float = 180.0, every: float = 0.3):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s")


@pytest.fixture
def jm(tmp_path) -> JobManager:
    return JobManager(tmp_path / "ckpts")


def test_bad_config_creates_nothing(jm):
    with pytest.raises(ConfigError, match="train.lr"):
        jm.submit(QUICK, ["train.lr=-1"])
    with pytest.raises(ConfigError, match="nosuchkey"):
        jm.submit(QUICK, ["train.nosuchkey=1"])
    with pytest.raises(ConfigError, match="not found"):
        jm.submit(jm.root / "missing.yaml")
    with pytest.raises(JobError, match="directory name"):
        jm.submit(QUICK, TINY, name="../escape")
    assert jm.list() == []
    leftovers = {p.name for p in jm.root.iterdir()} - {"jobs"}
    assert all(name.startswith("jobs.sqlite") for name in leftovers), leftovers  # no checkpoint dir
    assert list((jm.root / "jobs").iterdir()) == []


def test_job_runs_queues_and_reports_progress(jm, capsys):
    first = jm.submit(QUICK, TINY, name="tiny")
    second = jm.submit(QUICK, TINY, name="tiny")        # one job at a time: this one waits
    assert first.state == "running" and first.pid
    assert second.state == "queued"
    assert Path(first.checkpoint).name == "tiny" and Path(second.checkpoint).name == "tiny-2"
    assert "data.limit=16" in first.overrides
    # the resolved recipe that runs is written next to the log, and names the checkpoint
    assert "name: tiny" in first.config_path.read_text()

    assert jm.cancel(second.id).state == "cancelled"     # queued: cancelled without running
    with pytest.raises(JobError, match="already cancelled"):
        jm.cancel(second.id)

    done = wait_for(lambda: (j := jm.get(first.id)).state not in ("queued", "running") and j)
    assert done.state == "succeeded", done.message + "\n" + done.log_tail()
    assert done.returncode == 0 and done.finished >= done.started
    assert (Path(done.checkpoint) / "model.safetensors").is_file()
    progress = done.progress()
    assert progress.phase == "done" and progress.fraction == 1.0
    assert progress.step == progress.total_steps == 3
    assert {row["task"] for row in progress.losses} == {"sst", "qqp", "sts"}
    assert progress.evals and "sst_acc" in progress.evals[-1]
    assert "[job" in done.log_tail()

    assert main(["--root", str(jm.root), "status", str(done.id), "--json"]) == 0
    status = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"id", "name", "state", "progress", "checkpoint", "pid"} <= set(status)
    assert status["state"] == "succeeded" and status["progress"] == 1.0
    assert main(["--root", str(jm.root), "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [j["state"] for j in listed] == ["cancelled", "succeeded"]


def test_cancel_running_job_stops_its_processes(jm):
    job = jm.submit(QUICK, SLOW, name="slow")
    job = wait_for(lambda: (j := jm.get(job.id)).train_pid and j)
    assert pid_alive(job.pid, job.pid_start)
    cancelled = jm.cancel(job.id, grace_s=5)
    assert cancelled.state == "cancelled" and cancelled.finished is not None
    assert not pid_alive(job.pid, job.pid_start)
    assert not pid_alive(job.train_pid, job.train_pid_start)
    # the worker's own bookkeeping must not turn it into "failed" afterwards
    time.sleep(0.5)
    assert jm.refresh()[0].state == "cancelled"


def test_failing_trainer_is_failed_with_its_error(jm):
    job = jm.submit(QUICK, TINY + [f"data.dir={jm.root / 'no-data-here'}"], name="broken")
    done = wait_for(lambda: (j := jm.get(job.id)).state not in ("queued", "running") and j)
    assert done.state == "failed"
    assert done.returncode not in (0, None)
    assert "no-data-here" in done.message  # the trainer's error line, from the log tail


def test_killed_worker_is_detected_after_restart(tmp_path):
    """Submitted from another process (like a CLI or an app that is gone), the worker is
    no child of ours; SIGKILL it, and a fresh manager marks the job failed."""
    root = tmp_path / "ckpts"
    env = {**os.environ, "MINBERT_JOBS_ROOT": str(root)}
    out = subprocess.run([sys.executable, "-m", "core.jobs", "submit", "--config", str(QUICK), "--name", "victim",
                          *sum((["--set", o] for o in SLOW), [])],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    job_id = int(out.stdout.strip().splitlines()[-1])

    jm = JobManager(root)   # "after a restart": a new manager finds the running job
    job = wait_for(lambda: (j := jm.get(job_id)).train_pid and j)
    assert jm.refresh()[0].state == "running"
    os.kill(job.pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(job.pid, job.pid_start), timeout=20)
    failed = jm.refresh()[0]
    assert failed.state == "failed"
    assert f"pid {job.pid}" in failed.message and "Last log lines" in failed.message
    assert f"[job {job_id}]" in failed.message
    # the orphaned trainer is stopped too
    wait_for(lambda: not pid_alive(job.train_pid, job.train_pid_start), timeout=20)


def test_reused_pid_counts_as_dead(jm):
    """A row whose pid now belongs to another process (different start time) is dead."""
    with jm._db() as db:
        db.execute("INSERT INTO jobs (name, state, recipe, overrides, device, gpus, checkpoint, job_dir, "
                   "pid, pid_start, created, started) VALUES ('ghost', 'running', ?, '[]', 'cpu', 1, ?, ?, ?, ?, ?, ?)",
                   (str(QUICK), str(jm.root / "ghost"), str(jm.root / "jobs" / "99"), os.getpid(),
                    (pid_start_time(os.getpid()) or 0) + 12345, time.time(), time.time()))
    (jm.root / "jobs" / "99").mkdir(parents=True)
    (jm.root / "jobs" / "99" / "job.log").write_text("loading data\nRuntimeError: CUDA out of memory\n")
    (ghost,) = jm.refresh()
    assert ghost.state == "failed"
    assert "CUDA out of memory" in ghost.message


def test_read_progress_eta_and_partial_lines(tmp_path):
    log = tmp_path / "train_log.jsonl"
    events = [{"event": "start", "time": 100.0, "total_steps": 10, "epochs": 1},
              {"event": "stage", "time": 150.0, "step": 0},
              {"event": "step", "time": 152.0, "step": 2, "total_steps": 10, "epoch": 1,
               "loss": {"sst": 1.5}, "elapsed_s": 52.0},
              {"event": "step", "time": 154.0, "step": 4, "total_steps": 10, "epoch": 1,
               "loss": {"sst": 1.2}, "elapsed_s": 54.0}]
    log.write_text("\n".join(json.dumps(e) for e in events) + '\n{"event": "st')
    p = read_progress(log)
    assert p.phase == "training" and p.step == 4 and p.fraction == pytest.approx(0.4)
    assert p.eta_s == pytest.approx(6.0)  # 1 s per step since the stage began, 6 steps left
    assert [r["loss"] for r in p.losses] == [1.5, 1.2]
    assert read_progress(tmp_path / "missing.jsonl").phase == "preparing"

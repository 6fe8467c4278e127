"""Job manager: submit, progress, queue, cancel, killed workers, restart recovery, CLI,
multi-process (torchrun) jobs, resume, and the guards of an exposed app.

Jobs are real processes (``python -m core.jobs _worker`` running ``python -m core.train``,
or torchrun with 2 gloo CPU processes) on TINY recipes; faults are real signals.
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

from conftest import REPO, TINY, wait_for
import core.jobs.manager
import core.jobs.procs
import core.jobs.store
from core.atomic import pid_alive, pid_start_time
from core.config.schema import Config
from core.errors import ConfigError, JobError
from core.jobs.access import access_mode, check_access, check_app_overrides
from core.jobs.cli import main
from core.jobs.manager import JobManager
from core.jobs.procs import token_pids
from core.jobs.progress import read_progress

QUICK = REPO / "configs" / "quick.yaml"
# Long enough that a job is still running when a test cancels or kills it.
SLOW = ["data.limit=64", "train.max_steps=500", "train.batch_size=8", "model.max_len=32"]
# Two epochs: the first leaves resume state, the second is long enough to kill the job in.
TWO_EPOCHS = ["data.limit=64", "data.eval_limit=8", "train.batch_size=4", "model.max_len=16",
              "train.epochs=2", "train.steps_per_epoch=40", "train.max_steps=null", "train.log_every=1"]


@pytest.fixture
def jm(tmp_path) -> JobManager:
    manager = JobManager(tmp_path / "ckpts")
    yield manager
    for job in manager.list(["queued", "running"]):   # a failed test leaves no trainer behind
        try:
            manager.cancel(job.id, grace_s=2)
        except JobError:
            pass


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


def _submit_from_another_process(root: Path, name: str) -> int:
    env = {**os.environ, "MINBERT_JOBS_ROOT": str(root), "MINBERT_WATCHDOG_S": "0.2"}
    out = subprocess.run([sys.executable, "-m", "core.jobs", "submit", "--config", str(QUICK), "--name", name,
                          *sum((["--set", o] for o in SLOW), [])],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip().splitlines()[-1])


def _state_in_db(root: Path, job_id: int) -> str:
    """The row as stored: no refresh(), list() or status call, nothing that settles jobs."""
    import sqlite3
    with sqlite3.connect(root / "jobs.sqlite") as db:
        return db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]


@pytest.mark.parametrize("how", ["worker", "process group"])
def test_a_killed_worker_is_settled_by_its_watchdog_without_any_call(tmp_path, how):
    """Issue 24: the launcher is gone (a CLI that exited), nobody lists or asks for the job;
    SIGKILL its worker (or the worker's whole process group, trainer included): the job's
    watchdog marks it failed and its trainer is stopped, within seconds."""
    root = tmp_path / "ckpts"
    job_id = _submit_from_another_process(root, "orphan")
    jm = JobManager(root, sweep=False)
    try:
        job = wait_for(lambda: (j := jm.get(job_id)).train_pid and j, timeout=300)
        watchdogs = [p for p in token_pids(job.token) if p not in (job.pid, job.train_pid)]
        assert watchdogs and all(os.getsid(p) != os.getsid(job.pid) for p in watchdogs)   # its own session
        if how == "worker":
            os.kill(job.pid, signal.SIGKILL)
        else:
            os.killpg(job.pid, signal.SIGKILL)
        wait_for(lambda: _state_in_db(root, job_id) == "failed", timeout=60, every=0.2)
        wait_for(lambda: not pid_alive(job.train_pid, job.train_pid_start), timeout=30)
        failed = jm.get(job_id)
        assert f"pid {job.pid}" in failed.message and "died without reporting a result" in failed.message
        wait_for(lambda: not token_pids(job.token), timeout=30)        # the watchdog is gone too
    finally:   # a failed test leaves no trainer behind
        if jm.get(job_id).active:
            jm.cancel(job_id, grace_s=2)


def test_the_trainer_dies_with_its_worker_by_the_kernels_parent_death_signal(tmp_path):
    """No watchdog, no refresh: the trainer alone still stops when its worker is killed."""
    from core.jobs.procs import trainer_preexec
    if core.jobs.procs._prctl is None:
        pytest.skip("PR_SET_PDEATHSIG is Linux only")
    script = ("import os, subprocess, sys, time; from core.jobs.procs import trainer_preexec; "
              "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'], "
              "preexec_fn=trainer_preexec(os.getpid())); print(p.pid, flush=True); time.sleep(300)")
    worker = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    child = int(worker.stdout.readline())
    assert pid_alive(child)
    worker.kill()
    worker.wait()
    wait_for(lambda: not pid_alive(child), timeout=10, every=0.05)
    assert callable(trainer_preexec)


def test_reused_pid_counts_as_dead(jm):
    """A row whose pid now belongs to another process (different start time) is dead."""
    with jm.store.connect() as db:
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


def test_eta_includes_the_dev_evaluation(tmp_path):
    """Issue 26: the ETA said "2 s left" 28 s before the end, when the final dev evaluation
    ran. Before any evaluation is timed, a frozen-encoder run's is estimated from the rate
    of its first encoding pass (start -> stage); once one is timed, its duration is used."""
    log = tmp_path / "train_log.jsonl"
    start = {"event": "start", "time": 0.0, "total_steps": 100, "epochs": 1,
             "config": {"train": {"freeze_encoder": True, "batch_size": 8}},
             "train_sizes": {"sst": 100}, "dev_sizes": {"sst": 50, "sts": 25}}
    steps = [{"event": "stage", "time": 10.0, "step": 0},     # 100 sentences in 10 s: 0.1 s each
             {"event": "step", "time": 11.0, "step": 10, "total_steps": 100, "epoch": 1},
             {"event": "step", "time": 12.0, "step": 20, "total_steps": 100, "epoch": 1}]
    log.write_text("\n".join(json.dumps(e) for e in [start, *steps]) + "\n")
    p = read_progress(log)
    # dev: 50 SST sentences + 25 STS pairs (50 sentences) = 100 x 0.1 s = 10 s;
    # training: 0.1 s per step x 80 steps left = 8 s
    assert (p.eval_s, p.eval_estimated, p.eta_s) == (pytest.approx(10.0), True, pytest.approx(18.0))
    timed = [{"event": "step", "time": 20.0, "step": 100, "total_steps": 100, "epoch": 1},
             {"event": "eval", "time": 27.0, "epoch": 1, "step": 100, "score": 0.5}]
    log.write_text("\n".join(json.dumps(e) for e in [start, *steps, *timed]) + "\n")
    p = read_progress(log)
    assert (p.eval_s, p.eval_estimated) == (pytest.approx(7.0), False)   # eval event - last step
    # not frozen: a training step (forward + backward of 8 examples) counts as 3 forwards
    start["config"]["train"]["freeze_encoder"] = False
    log.write_text("\n".join(json.dumps(e) for e in [start, *steps]) + "\n")
    p = read_progress(log)
    assert p.eval_s == pytest.approx(100 * 0.1 / (3 * 8), abs=0.05) and p.eval_estimated


def settled(jm: JobManager, job_id: int, timeout: float = 900.0):
    return wait_for(lambda: (j := jm.get(job_id)).state not in ("queued", "running") and j, timeout=timeout)


def events(job) -> list[dict]:
    return [json.loads(line) for line in job.train_log.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------ multi-process jobs
def test_two_process_job_is_accepted_runs_through_torchrun_and_loads(jm):
    """The multi-GPU refusal is gone: 2 processes per node run under torchrun (gloo on CPU)."""
    job = jm.submit(QUICK, TINY, name="ddp", device="cpu", gpus=2)
    assert job.state == "running" and job.gpus == 2
    done = settled(jm, job.id)
    assert done.state == "succeeded", done.message + "\n" + done.log_tail()
    launch = next(line for line in done.log_tail(400).splitlines() if line.startswith(f"[job {job.id}] "))
    assert "-m torch.distributed.run --standalone --nproc_per_node=2 -m core.train" in launch
    end = events(done)[-1]
    assert end["event"] == "done" and end["world_size"] == 2 and end["ranks_in_sync"] is True
    from core.model.multitask import MultitaskBert
    model = MultitaskBert.load(done.checkpoint)
    probs = model.predict_sentiment(["A gorgeous, witty, seductive movie."])
    assert probs.shape == (1, 5)


def test_gpu_jobs_without_a_gpu_are_refused_with_the_reason(jm):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    for kwargs in ({"device": "cuda"}, {"device": "cuda", "gpus": 2}, {"device": "auto", "gpus": 2}):
        with pytest.raises(JobError, match="no CUDA GPU is visible") as e:
            jm.submit(QUICK, TINY, name="gpu", **kwargs)
        assert "distributed support" not in str(e.value)
    assert jm.list() == [] and not (jm.root / "gpu").exists()


def test_two_gpu_job_is_accepted_where_two_gpus_are_visible(tmp_path, monkeypatch):
    """The refusal came from a flag check (core.training.trainer.SUPPORTS_TORCHRUN) that nothing
    defined; with two GPUs visible a 2-GPU job is accepted and launches torchrun. GPUs are
    counted in the training interpreter (the jobs process never imports torch): here one
    whose torch shows two."""
    python = tmp_path / "python-with-2-gpus"
    python.write_text(f"#!{sys.executable}\nimport sys, torch\ntorch.cuda.is_available = lambda: True\n"
                      "torch.cuda.device_count = lambda: 2\nassert sys.argv[1] == '-c'\nexec(sys.argv[2])\n")
    python.chmod(0o755)
    jm = JobManager(tmp_path / "ckpts", python=str(python))
    monkeypatch.setattr(JobManager, "start_queued", lambda self: [])   # accepted, not started here
    job = jm.submit(QUICK, TINY, name="two-gpus", device="cuda", gpus=2)
    assert job.state == "queued" and job.gpus == 2
    assert "device: cuda" in job.config_path.read_text()
    command = jm.train_command(job)
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    with pytest.raises(JobError, match="3 GPUs were asked for but only 2"):
        jm.submit(QUICK, TINY, name="three", device="cuda", gpus=3)
    jm.cancel(job.id)


def test_cancel_and_dead_worker_stop_every_torchrun_process(jm):
    """torchrun starts its workers in sessions of their own: killing the worker's process
    group alone would leave them running. Cancel stops all of them; so does the launcher
    noticing its worker's death (no refresh() call here)."""
    cancel_me = jm.submit(QUICK, SLOW, name="ddp-cancel", device="cpu", gpus=2)
    procs = wait_for(lambda: len(p := token_pids(cancel_me.token)) >= 4 and p, timeout=600)  # worker, agent, 2 ranks
    assert len({os.getsid(p) for p in procs}) >= 2     # not one session: the test means something
    assert jm.cancel(cancel_me.id, grace_s=5).state == "cancelled"
    assert token_pids(cancel_me.token) == []

    victim = jm.submit(QUICK, SLOW, name="ddp-victim", device="cpu", gpus=2)
    wait_for(lambda: len(token_pids(victim.token)) >= 4, timeout=600)
    victim = jm.get(victim.id)
    os.kill(victim.pid, signal.SIGKILL)
    failed = wait_for(lambda: (j := jm.get(victim.id)).state == "failed" and j, timeout=60)
    assert f"pid {victim.pid}" in failed.message
    wait_for(lambda: not token_pids(victim.token), timeout=30)


# ------------------------------------------------------------------ integrity
def test_reserved_and_bad_names_are_refused(jm):
    for name in ("pretrained", "Pretrained", "minbert-multitask", "jobs", "cluster.yaml"):
        with pytest.raises(JobError, match="reserved"):
            jm.submit(QUICK, TINY, name=name)
    assert jm.list() == [] and not (jm.root / "pretrained").exists()


def test_a_failure_while_creating_a_job_leaves_nothing(jm, monkeypatch):
    def disk_full(self):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(Config, "to_yaml", disk_full)
    with pytest.raises(JobError, match="No space left"):
        jm.submit(QUICK, TINY, name="half")
    assert jm.list() == []
    assert list((jm.root / "jobs").iterdir()) == [] and not (jm.root / "half").exists()


def test_worker_rebuilds_the_command_and_refuses_altered_rows(jm):
    """A database row is data, never a command: the worker rebuilds the trainer's command
    from the job's fields, and refuses a row whose paths point outside the job root."""
    blocker = jm.submit(QUICK, SLOW, name="blocker", device="cpu")
    tampered = jm.submit(QUICK, TINY, name="tampered", device="cpu")
    moved = jm.submit(QUICK, TINY, name="moved", device="cpu")
    assert tampered.state == moved.state == "queued"
    pwned = jm.root / "PWNED"
    with jm.store.connect() as db:
        db.execute("UPDATE jobs SET command = ? WHERE id = ?", (json.dumps(["touch", str(pwned)]), tampered.id))
        db.execute("UPDATE jobs SET checkpoint = ? WHERE id = ?", (str(jm.root.parent / "elsewhere"), moved.id))
    jm.cancel(blocker.id, grace_s=2)                      # frees the slot: "tampered" starts
    wait_for(lambda: f"[job {tampered.id}] " in jm.get(tampered.id).log_tail(), timeout=300)
    jm.cancel(tampered.id, grace_s=2)
    line = next(x for x in jm.get(tampered.id).log_tail().splitlines() if x.startswith(f"[job {tampered.id}] "))
    assert "-m core.train --config " + str(jm.root / "jobs" / str(tampered.id) / "config.yaml") in line
    assert not pwned.exists()
    refused = settled(jm, moved.id, timeout=300)
    assert refused.state == "failed" and "database was altered" in refused.message
    assert not (jm.root.parent / "elsewhere").exists()


def test_dead_worker_is_settled_when_a_process_first_opens_the_root(tmp_path):
    root = tmp_path / "ckpts"
    JobManager(root)
    gone = subprocess.Popen(["true"])
    gone.wait()   # a pid that no longer runs
    with JobManager(root).store.connect() as db:
        db.execute("INSERT INTO jobs (name, state, recipe, overrides, device, gpus, checkpoint, job_dir, "
                   "pid, pid_start, created, started) VALUES ('ghost', 'running', ?, '[]', 'cpu', 1, ?, ?, ?, ?, ?, ?)",
                   (str(QUICK), str(root / "ghost"), str(root / "jobs" / "1"), gone.pid, 1, time.time(), time.time()))
    core.jobs.manager._SWEPT.discard(root.resolve())   # as in a freshly started app process
    JobManager(root)                            # no refresh() call
    with JobManager(root).store.connect() as db:
        state = db.execute("SELECT state FROM jobs").fetchone()[0]
    assert state == "failed"


def test_queue_cap(tmp_path):
    jm = JobManager(tmp_path / "ckpts", max_queued=1)
    try:
        first = jm.submit(QUICK, SLOW, name="a", device="cpu")
        second = jm.submit(QUICK, TINY, name="b", device="cpu")
        assert (first.state, second.state) == ("running", "queued")
        with pytest.raises(JobError, match="1 jobs are already queued"):
            jm.submit(QUICK, TINY, name="c", device="cpu")
        assert [j.name for j in jm.list()] == ["b", "a"] and not (jm.root / "c").exists()
    finally:
        for job in jm.list(["queued", "running"]):
            jm.cancel(job.id, grace_s=2)


# --------------------------------------------------------------------- resume
def test_killed_job_resumes_from_its_resume_state(jm, capsys):
    job = jm.submit(QUICK, TWO_EPOCHS, name="resumable", device="cpu")
    state = Path(job.checkpoint) / "resume" / "state.json"
    wait_for(lambda: state.is_file(), timeout=600, every=0.1)     # epoch 1 done
    running = jm.get(job.id)
    with pytest.raises(JobError, match="only failed or cancelled"):
        jm.resume(job.id)
    os.kill(running.train_pid, signal.SIGKILL)
    failed = settled(jm, job.id, timeout=60)
    assert failed.state == "failed" and "SIGKILL" in failed.message and failed.resumable
    assert main(["--root", str(jm.root), "resume", str(job.id)]) == 0
    assert "attempt 1" in capsys.readouterr().out
    done = settled(jm, job.id)
    assert done.state == "succeeded", done.message + "\n" + done.log_tail()
    assert done.attempt == 1
    starts = [e for e in events(done) if e["event"] == "start"]
    assert starts[-1]["resumed_at_step"] == 40                     # continued after epoch 1 of 40 steps
    assert any(e["event"] == "resume" for e in events(done)) and events(done)[-1]["step"] == 80
    assert "--resume" in next(x for x in reversed(done.log_tail(400).splitlines()) if "-m core.train" in x)


def test_auto_resume_after_the_worker_dies(jm):
    job = jm.submit(QUICK, TWO_EPOCHS, name="auto", device="cpu", auto_resume=True)
    wait_for(lambda: (Path(job.checkpoint) / "resume" / "state.json").is_file(), timeout=600, every=0.1)
    os.kill(jm.get(job.id).pid, signal.SIGKILL)                   # the worker, not the trainer
    # settle_dead marks the job failed, then requeues it: a poll can land between the two
    # (it did on a loaded machine), so wait for the requeued attempt to settle
    done = wait_for(lambda: (j := jm.get(job.id)).attempt >= 1 and j.state not in ("queued", "running") and j,
                    timeout=900)
    assert done.state == "succeeded", done.message + "\n" + done.log_tail()
    assert done.attempt == 1 and "automatic resume after its worker died" in done.log_tail(400)
    assert [e for e in events(done) if e["event"] == "start"][-1]["resumed_at_step"] == 40


# ------------------------------------------------------------- exposed app
def test_app_override_allow_list():
    check_app_overrides(["train.lr=1e-5", "train.smart.weight=1", "model.sst.dropout=0", "data.limit=16",
                         "model.max_len=32", "model.prompts.enabled=true", "description=x"])
    for bad in ("model.encoder=/etc", "data.dir=/root", "name=pretrained", "stages=[]", "train.device=cuda",
                "nosuchkey=1"):
        with pytest.raises(JobError, match="does not accept the override key"):
            check_app_overrides([bad])


def test_read_only_and_secret_modes():
    assert access_mode({}) == "open"
    check_access(None, {})
    ro = {"MINBERT_READ_ONLY": "1", "MINBERT_SECRET": "s3cret-42"}
    assert access_mode(ro) == "read-only"
    with pytest.raises(JobError, match="read-only"):
        check_access("s3cret-42", ro)
    sec = {"MINBERT_SECRET": "s3cret-42"}
    assert access_mode(sec) == "secret"
    for typed in (None, "", "s3cret-4", "s3cret-42 "):
        with pytest.raises(JobError, match="secret is missing or wrong"):
            check_access(typed, sec)
    check_access("s3cret-42", sec)
    assert access_mode({"MINBERT_READ_ONLY": "0"}) == "open"
    assert access_mode({"MINBERT_READ_ONLY": "TRUE"}) == access_mode({"MINBERT_READ_ONLY": " yes "}) == "read-only"


@pytest.mark.parametrize("env, message", [
    ({"MINBERT_READ_ONLY": "maybe"}, r"\$MINBERT_READ_ONLY='maybe': it must be 1 or 0"),
    ({"MINBERT_SECRET": "abc"}, r"\$MINBERT_SECRET is 3 characters long; a shared secret needs at least 8"),
])
def test_bad_access_settings_are_one_config_error(env, message):
    with pytest.raises(ConfigError, match=message):
        access_mode(env)
    with pytest.raises(ConfigError, match=message):
        check_access("anything", env)


@pytest.mark.parametrize("var, value, message", [
    ("MINBERT_MAX_RUNNING_JOBS", "two", "a whole number from 1 to 64"),
    ("MINBERT_MAX_RUNNING_JOBS", "0", "a whole number from 1 to 64"),
    ("MINBERT_MAX_QUEUED_JOBS", "9" * 100, "a whole number from 1 to 1,000"),
    ("MINBERT_MAX_QUEUED_JOBS", "1e3", "a whole number"),
], ids=["word", "zero", "100 digits", "float"])
def test_bad_job_limits_in_the_environment_are_one_config_error(tmp_path, monkeypatch, var, value, message):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=rf"\${var}=.*{message}"):
        JobManager(tmp_path / "ckpts")
    monkeypatch.setenv(var, "")
    JobManager(tmp_path / "ckpts")                         # blank: the default


def test_bad_jobs_root_and_cli_exit_2(tmp_path, monkeypatch, capsys):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    monkeypatch.setenv("MINBERT_JOBS_ROOT", str(afile))
    with pytest.raises(ConfigError, match=r"\$MINBERT_JOBS_ROOT=.*a directory \(this path is a file\)"):
        core.jobs.store.default_root()
    monkeypatch.setenv("MINBERT_JOBS_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("MINBERT_MAX_RUNNING_JOBS", "lots")
    assert main(["list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: $MINBERT_MAX_RUNNING_JOBS='lots'") and "Traceback" not in err


def test_job_ids_out_of_any_range_are_a_job_error(jm, capsys):
    for bad in ("9" * 30, "-1", "0", "abc", "1e3"):
        with pytest.raises(JobError):
            jm.get(bad)
    assert main(["--root", str(jm.root), "status", "9" * 30]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_recipe_too_big_for_the_machine_is_refused_at_submission(jm, monkeypatch):
    monkeypatch.setenv("MINBERT_MEMORY_GB", "2")
    with pytest.raises(ConfigError, match=r"GiB to train .* more than the 2.0 GiB of this machine"):
        jm.submit(QUICK, ["model.sst.layers=8", "model.sst.hidden=16384"], name="huge")
    with pytest.raises(ConfigError, match=r"model\.sst\.layers = 1000000: out of range"):
        jm.submit(QUICK, ["model.sst.layers=1000000"], name="huge")
    assert jm.list() == [] and not (jm.root / "huge").exists()
    from core.jobs.submission import memory_for
    assert memory_for("slurm", {"mem": "32G", "gpus_per_node": 4}, 4) == (8 * 2**30, "the Slurm job's --mem 32G per process")
    assert memory_for("slurm", {}, 1) == (None, "")


def test_server_listens_locally_and_hides_error_details():
    import tomllib

    from streamlit.config import ShowErrorDetailsConfigOptions
    conf = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert conf["server"]["address"] == "127.0.0.1"
    assert conf["client"]["showErrorDetails"] == "none"
    assert conf["client"]["showErrorDetails"] in {o.value for o in ShowErrorDetailsConfigOptions}

"""The bodies of a local job's two helper processes.

* the *worker* (``python -m core.jobs _worker ID``, the leader of the job's own process
  group): runs the trainer (its command line rebuilt from the job's fields), waits for it,
  records its exit code and final state, and starts the next queued job;
* the *watchdog* (``python -m core.jobs _watchdog ID PID START``, in a session of its
  own, so a kill of the worker's process group spares it): waits on the worker's pid and,
  when the worker died without recording a result, settles the job (stops what it left
  running, marks it failed or resumes it) and starts the next queued job.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from core.atomic import pid_start_time
from core.errors import JobError, MinbertError
from core.jobs.procs import trainer_preexec, wait_for_exit
from core.jobs.progress import Progress, read_progress
from core.jobs.store import Job, tail
from core.paths import REPO
from core.settings import env_float


def run_worker(jm, job_id: int) -> int:
    """Body of the job's worker process (``jm``: its :class:`core.jobs.manager.JobManager`):
    run the trainer, record how it ended."""
    job = jm.get(job_id)
    if job.state != "running" or job.backend != "local":
        return 0  # cancelled between claim and start
    # SIGTERM reaches the whole group: let the trainer die of it, then record.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        command = jm.train_command(job)   # from the job's fields, not the database's command column
    except JobError as e:
        jm.update(job.id, ["running"], state="failed", finished=time.time(), message=str(e))
        print(f"[job {job.id}] {e}", flush=True)
        return 1
    print(f"[job {job.id}] {' '.join(command)}", flush=True)
    jm.update(job.id, command=json.dumps(command))
    try:
        proc = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL,
                                preexec_fn=trainer_preexec(os.getpid()))
    except OSError as e:
        jm.update(job.id, ["running"], state="failed", finished=time.time(),
                  message=f"could not start the trainer: {e}")
        return 1
    jm.update(job.id, train_pid=proc.pid, train_pid_start=pid_start_time(proc.pid))
    _record_end(jm, job, proc.wait())
    jm.start_queued()
    return 0


def _outcome(rc: int, progress: Progress) -> tuple[str, str]:
    """(state, message) of a trainer that exited with ``rc``."""
    if rc == 0 and progress.phase == "done":
        return "succeeded", ""
    if rc < 0:
        return "failed", f"the trainer was killed by {signal.Signals(-rc).name}"
    return "failed", f"the trainer exited with code {rc}"


def _record_end(jm, job: Job, rc: int) -> None:
    """Write how the trainer ended into the job's row (and, for a job cancelled
    meanwhile, a ``cancelled`` event into its train log); auto-resume a kill from outside."""
    progress = read_progress(job.train_log)
    finished = time.time()
    state, message = _outcome(rc, progress)
    if state == "failed":
        print(f"[job {job.id}] {message}", flush=True)
        message += f". Last log lines:\n{tail(job.log_path, 15)}"
    jm.update(job.id, returncode=rc)
    if not jm.update(job.id, ["running"], state=state, finished=finished, message=message):
        # cancelled meanwhile: make the event log say so too
        if jm.get(job.id).state == "cancelled" and progress.phase not in ("done", "cancelled"):
            with job.train_log.open("a") as f:
                f.write(json.dumps({"event": "cancelled", "time": round(finished, 3),
                                    "step": progress.step, "epoch": progress.epoch}) + "\n")
        print(f"[job {job.id}] cancelled", flush=True)
    else:
        print(f"[job {job.id}] {state} (exit code {rc})", flush=True)
        if state == "failed" and rc < 0:   # killed from outside (OOM killer, kill -9): not the recipe's fault
            jm.auto_resume(job, f"the trainer was killed by {signal.Signals(-rc).name}")


def run_watchdog(jm, job_id: int, pid: int, start: int | None) -> int:
    """Body of a job's watchdog: wait for the worker ``pid`` to end; if the job still says
    running with that worker, the worker died without recording a result: settle it
    (:meth:`JobManager.settle_dead` stops the orphaned trainer and every process with the
    job's token, marks the job failed or resumes it). Then start queued jobs (nobody
    else will)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    wait_for_exit(pid, start, env_float("MINBERT_WATCHDOG_S", 1.0, 0.05, 60.0))
    try:
        job = jm.get(job_id)
        if job.state == "running" and job.pid == pid:
            jm.settle_dead(job)
        jm.start_queued()
    except MinbertError:
        return 1
    return 0

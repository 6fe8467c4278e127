"""Orchestration: :class:`JobManager`, the one object the app and the command line use.

It owns what happens to a job after it is created: local scheduling (queued local jobs
start, oldest first, while fewer than ``max_running`` run), the worker sweep (a root's
first open in a process settles workers that died while nobody watched), reconciliation
(:meth:`JobManager.refresh` asks every active job's backend), resume and cancel, and the
launch of a local job's worker and watchdog (their bodies: :mod:`core.jobs.worker`).
The pieces it composes:

* :mod:`core.jobs.store`: the SQLite rows (:class:`Job`) and the job's paths;
* :mod:`core.jobs.submission`: the checks before a job exists, and its creation;
* :mod:`core.jobs.backends`: local and Slurm, behind :class:`Backend`; a backend uses
  this class only through :class:`core.jobs.backends.Host` (``update``, ``paths``,
  ``cluster``, ``settle_dead``, ``auto_resume``, ``python``);
* :mod:`core.jobs.launch`: the trainer's command line and the resume-or-overwrite rule;
* :mod:`core.jobs.procs`: the job's processes; :mod:`core.jobs.progress`: its train log.

The overview of the whole job system is :mod:`core.jobs.cli`'s docstring (``python -m
core.jobs --help``). Never imports torch.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from core.atomic import pid_start_time
from core.errors import JobError, MinbertError
from core.jobs import submission
from core.jobs.backends import Backend, LocalBackend, SlurmBackend
from core.jobs.launch import RESUME_NOTES, launcher, resume_mode, trainer_args
from core.jobs.procs import TOKEN_VAR, adopt, reap, stop_job_processes
from core.jobs.slurm import BACKENDS, Cluster, Resources, load_cluster
from core.jobs.store import ACTIVE, CONFIG_NAME, RESUMABLE, SCRIPT_NAME, Job, JobStore, default_root, procs_of
from core.paths import REPO
from core.settings import env_int

# Roots this process has swept for dead workers (once per process: "at app start").
_SWEPT: set[Path] = set()
_SWEEP_LOCK = threading.Lock()


class JobManager:
    """Training jobs under ``root`` (default :func:`core.jobs.store.default_root`)."""

    def __init__(self, root: str | Path | None = None, max_running: int | None = None,
                 python: str | None = None, max_queued: int | None = None,
                 backends: dict[str, Backend] | None = None, sweep: bool = True):
        self.root = Path(root).resolve() if root is not None else default_root()
        self.max_running = max_running or env_int("MINBERT_MAX_RUNNING_JOBS", 1, 1, 64)
        self.max_queued = max_queued or env_int("MINBERT_MAX_QUEUED_JOBS", submission.DEFAULT_MAX_QUEUED, 1, 1_000)
        self.python = python or sys.executable
        self.backends: dict[str, Backend] = {"local": LocalBackend(), "slurm": SlurmBackend(), **(backends or {})}
        self.store = JobStore(self.root)
        self.db_path = self.store.db_path
        if sweep:
            with _SWEEP_LOCK:
                first = self.root not in _SWEPT
                _SWEPT.add(self.root)
            if first:   # the app (or CLI) starting: settle workers that died while nobody watched
                try:
                    self.refresh()
                except MinbertError:
                    pass

    # ------------------------------------------------- rows (and the Host interface)
    def get(self, job_id: int | str) -> Job:
        return self.store.get(job_id)

    def list(self, states: Sequence[str] | None = None) -> list[Job]:
        """Jobs of every backend, newest first."""
        return self.store.list(states)

    def update(self, job_id: int, only_if_state: Sequence[str] | None = None, **values) -> bool:
        return self.store.update(job_id, only_if_state, **values)

    def paths(self, job: Job) -> tuple[Path, Path]:
        return self.store.paths(job)

    def cluster(self) -> Cluster:
        """Site settings (``<root>/cluster.yaml`` and the environment)."""
        return load_cluster(self.root)

    def backend(self, name: str) -> Backend:
        if name not in self.backends:
            raise JobError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
        return self.backends[name]

    def train_command(self, job: Job) -> list[str]:
        """The trainer's command line, rebuilt from the job's fields (never read from the
        database): ``python -m core.train`` on one process, ``torchrun --standalone`` on
        several, with ``--resume``/``--overwrite`` as :func:`core.jobs.launch.resume_mode` decides."""
        job_dir, checkpoint = self.paths(job)
        procs = procs_of(job)
        head = launcher(self.python, procs, before=["--standalone"] if procs > 1 else [])
        return head + trainer_args(str(job_dir / CONFIG_NAME), str(checkpoint), mode=resume_mode(checkpoint))

    def display_command(self, job: Job) -> list[str]:
        """What the ``command`` column records for people (never executed)."""
        if job.backend == "slurm":
            return ["sbatch", str(Path(job.job_dir) / SCRIPT_NAME)]
        return self.train_command(job)

    # --------------------------------------------------------------- submit
    def submit(self, config: str | Path, overrides: Sequence[str] = (), name: str | None = None,
               limit: int | None = None, max_steps: int | None = None, device: str = "auto",
               gpus: int = 1, backend: str | None = None, resources: dict | Resources | None = None,
               auto_resume: bool = False) -> Job:
        """Validate the recipe with its overrides, then queue a job (and start it if a
        slot is free, or submit it to Slurm). A bad recipe or resource raises a
        :class:`MinbertError` and creates nothing.

        ``gpus`` is the number of processes per node: GPUs with ``device`` cuda/auto (more
        than one runs torchrun, NCCL), CPU processes with ``device="cpu"`` (gloo).
        ``backend``: ``local`` or ``slurm`` (default from ``cluster.yaml`` /
        ``MINBERT_BACKEND``, else local). ``resources`` (Slurm): nodes, gpus_per_node,
        cpus_per_task, mem, time, partition over the cluster's defaults."""
        cluster = self.cluster()
        backend = backend or cluster.backend
        runner = self.backend(backend)
        req = submission.prepare(cluster, runner, self.python, config, overrides, name, limit, max_steps,
                                 device, gpus, backend, resources, auto_resume)
        submission.queue_has_room(self.store, self.max_queued)
        checkpoint = self.store.reserve_checkpoint(req.name)
        job_id = submission.create(self, self.store, req, checkpoint, runner, self.max_queued)
        if backend == "local":
            self.start_queued()
        return self.get(job_id)

    # ------------------------------------------------------------ scheduling
    def start_queued(self) -> list[int]:
        """Start queued local jobs, oldest first, while fewer than ``max_running`` run."""
        started = []
        while (job_id := self.store.claim_next_local(self.max_running)) is not None:
            self._spawn_worker(job_id)
            started.append(job_id)
        return started

    def _spawn_worker(self, job_id: int) -> None:
        job = self.get(job_id)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "MINBERT_JOBS_ROOT": str(self.root), TOKEN_VAR: job.token}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
        try:
            self.paths(job)
            with job.log_path.open("ab") as log:
                proc = subprocess.Popen(
                    [self.python, "-m", "core.jobs", "--root", str(self.root), "_worker", str(job_id)],
                    cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, close_fds=True)
        except (OSError, JobError) as e:
            self.update(job_id, state="failed", finished=time.time(), message=f"could not start the job: {e}")
            return
        adopt(proc)
        start = pid_start_time(proc.pid)
        self.update(job_id, pid=proc.pid, pid_start=start)
        self._spawn_watchdog(job_id, proc.pid, start, env)
        # The launcher watches its worker: one that dies without recording a result is
        # settled at once, not only at the next refresh.
        threading.Thread(target=self._watch_worker, args=(proc, job_id), daemon=True,
                         name=f"minbert-job-{job_id}-watch").start()

    def _spawn_watchdog(self, job_id: int, pid: int, start: int | None, env: dict) -> None:
        """The worker's watchdog (:func:`core.jobs.worker.run_watchdog`): its own session,
        the job's token in its environment (so cancel stops it with the rest of the job)."""
        try:
            watchdog = subprocess.Popen(
                [self.python, "-m", "core.jobs", "--root", str(self.root), "_watchdog", str(job_id), str(pid),
                 str(start if start is not None else -1)],
                cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, close_fds=True)
        except OSError:
            return   # the fallbacks (watcher thread, refresh) still settle the job
        adopt(watchdog)

    def _watch_worker(self, proc: subprocess.Popen, job_id: int) -> None:
        proc.wait()
        reap(proc.pid)
        try:
            job = self.get(job_id)
            if job.state == "running" and job.pid == proc.pid:
                self.settle_dead(job)
                self.start_queued()
        except Exception:   # noqa: BLE001 - best effort; refresh() settles it otherwise
            pass

    # ------------------------------------------------------------ monitoring
    def refresh(self) -> list[Job]:
        """Settle active jobs whose run ended without reporting (dead local workers; Slurm
        jobs that ended, were requeued or vanished), start queued local jobs if slots freed
        up. Returns every job of every backend, newest first."""
        reap()
        for job in self.list(list(ACTIVE)):
            runner = self.backends.get(job.backend)
            if runner is None:
                continue
            try:
                runner.poll(self, job)
            except MinbertError:
                continue   # e.g. slurmctld not answering: keep the row as it is, try next time
        self.start_queued()
        return self.list()

    def settle_dead(self, job: Job) -> None:
        """The worker is gone but the row still says running: it was killed."""
        # Whatever it left behind (trainer, torchrun and its workers) must not go on
        # writing the checkpoint.
        stop_job_processes((job.pid, job.pid_start), job.token, grace_s=5.0,
                           extra=[(job.train_pid, job.train_pid_start)])
        if job.progress().phase == "done":
            state, message = "succeeded", ""
        else:
            state = "failed"
            message = (f"the job's worker process (pid {job.pid}) died without reporting a result "
                       f"(killed, or the machine restarted). Last log lines:\n{job.log_tail(15)}").rstrip()
        if self.update(job.id, ["running"], state=state, finished=time.time(), message=message) \
                and state == "failed":
            self.auto_resume(job, "its worker died")

    def auto_resume(self, job: Job, why: str) -> bool:
        """Requeue a failed ``auto_resume`` job, at most ``max_requeues`` times."""
        if not job.auto_resume:
            return False
        try:
            limit = self.cluster().max_requeues
        except JobError:
            limit = Cluster().max_requeues
        if job.attempt >= limit:
            return False
        try:
            self.resume(job.id, reason=f"automatic resume after {why} (attempt {job.attempt + 1} of {limit})")
        except MinbertError:
            return False
        return True

    # ------------------------------------------------------- resume, cancel
    def resume(self, job_id: int | str, reason: str | None = None) -> Job:
        """Run a failed or cancelled job again in its checkpoint: with ``--resume`` from
        its last resume state when there is one (else from the start)."""
        job = self.get(job_id)
        if not job.resumable:
            raise JobError(f"job {job.id} is {job.state}; only failed or cancelled jobs can be resumed")
        _, checkpoint = self.paths(job)
        runner = self.backend(job.backend)
        why = runner.unavailable()
        if why:
            raise JobError(f"cannot resume job {job.id} on {job.backend}: {why}")
        checkpoint.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(8)
        message = reason or f"resumed by the user (attempt {job.attempt + 1})"
        cluster_id = job.cluster_id
        mode = resume_mode(checkpoint)
        with job.log_path.open("a") as log:
            log.write(f"[job {job.id}] {message}: continues {RESUME_NOTES.get(mode[0] if mode else '', 'from the start')}\n")
        if job.backend != "local":
            cluster_id = runner.launch(self, Job(**{**asdict(job), "token": token, "attempt": job.attempt + 1}))
        if not self.update(job.id, list(RESUMABLE), state="queued", attempt=job.attempt + 1, token=token,
                           cluster_id=cluster_id, pid=None, pid_start=None, train_pid=None,
                           train_pid_start=None, finished=None, returncode=None, message=message):
            if job.backend != "local" and cluster_id:
                runner.stop(self, Job(**{**asdict(job), "cluster_id": cluster_id}), grace_s=0)
            raise JobError(f"job {job.id} changed state meanwhile; try again")
        if job.backend == "local":
            self.start_queued()
        return self.get(job.id)

    def cancel(self, job_id: int | str, grace_s: float = 10.0) -> Job:
        """Cancel a queued job, or stop a running one: SIGTERM to every process of the
        job, SIGKILL after ``grace_s`` seconds (``scancel`` for a Slurm job)."""
        job = self.get(job_id)
        if job.backend == "local" and job.state == "queued":
            if self.update(job.id, ["queued"], state="cancelled", finished=time.time(),
                           message="cancelled before it started"):
                return self.get(job.id)
            job = self.get(job.id)  # it started meanwhile
        if not job.active:
            raise JobError(f"job {job.id} is already {job.state}; only queued or running jobs can be cancelled")
        if not self.update(job.id, [job.state], state="cancelled", message="cancelled by the user"):
            return self.cancel(job.id, grace_s)   # it changed state meanwhile: look again
        try:
            self.backend(job.backend).stop(self, job, grace_s)
        except MinbertError:
            self.update(job.id, ["cancelled"], state=job.state, message=job.message)
            raise
        self.update(job.id, finished=time.time())
        self.start_queued()
        return self.get(job.id)

"""Backends: where a job's trainer runs, behind one interface (:class:`Backend`), each
using the job manager only through :class:`Host`.

* :class:`LocalBackend`: a worker process on this machine (``core.jobs.worker``), started
  by the manager's local scheduling; this backend notices workers that died.
* :class:`SlurmBackend`: one Slurm batch job per run (the script: :mod:`core.jobs.slurm`);
  its state is read from ``scontrol`` and mapped onto the job states.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol, Sequence

from core.atomic import pid_alive
from core.jobs.procs import stop_job_processes
from core.jobs.slurm import (EXIT_FILE, REQUEUE_STATES, STATE_TEXT, Cluster, Resources, SlurmClient, batch_script,
                             map_state)
from core.jobs.store import ACTIVE, CONFIG_NAME, SCRIPT_NAME, Job, procs_of
from core.paths import REPO

START_GRACE_S = 60.0      # a claimed job may take this long to record its worker's pid


class Host(Protocol):
    """What a backend may use of the job manager (:class:`core.jobs.manager.JobManager`
    implements it): the rows, the job's checked paths, the site settings, and the two
    ways a run that ended unseen is settled."""
    python: str

    def update(self, job_id: int, only_if_state: Sequence[str] | None = None, **values) -> bool:
        """Set columns of a job's row (only in those states); True when it changed."""

    def paths(self, job: Job) -> tuple[Path, Path]:
        """The job's directory and checkpoint, checked (:meth:`JobStore.paths`)."""

    def cluster(self) -> Cluster:
        """Site settings (``<root>/cluster.yaml`` and the environment)."""

    def settle_dead(self, job: Job) -> None:
        """A local job whose worker is gone: stop what it left, mark it ended."""

    def auto_resume(self, job: Job, why: str) -> bool:
        """Requeue a failed ``auto_resume`` job (at most ``max_requeues`` times)."""


class Backend:
    """Where a job's trainer runs. The job manager keeps the rows; a backend starts,
    watches and stops the runs, through the :class:`Host` interface only."""
    name = ""

    def unavailable(self) -> str | None:
        """Why jobs cannot be submitted here (None when they can)."""
        return None

    def launch(self, jm: "Host", job: Job) -> str | None:
        """Called for a newly created or resumed job (still ``queued``). Returns the
        cluster's id for the run, if any."""
        return None

    def poll(self, jm: "Host", job: Job) -> None:
        """Settle an active job whose run ended without us noticing."""

    def stop(self, jm: "Host", job: Job, grace_s: float) -> None:
        """Stop a running job (its row already says ``cancelled``)."""


class LocalBackend(Backend):
    """A worker process on this machine (see the module docstring)."""
    name = "local"

    def poll(self, jm: "Host", job: Job) -> None:
        if job.state != "running":
            return   # queued local jobs wait for start_queued
        if job.pid is None:
            if time.time() - (job.started or job.created) > START_GRACE_S:
                if jm.update(job.id, ["running"], state="failed", finished=time.time(),
                              message="the job's worker never started"):
                    jm.auto_resume(job, "its worker never started")
            return
        if not pid_alive(job.pid, job.pid_start):
            jm.settle_dead(job)

    def stop(self, jm: "Host", job: Job, grace_s: float) -> None:
        stop_job_processes((job.pid, job.pid_start), job.token, grace_s,
                           extra=[(job.train_pid, job.train_pid_start)])


class SlurmBackend(Backend):
    """A Slurm batch job per run (see :mod:`core.jobs.slurm`)."""
    name = "slurm"

    def __init__(self, client: SlurmClient | None = None):
        self.client = client or SlurmClient()

    def unavailable(self) -> str | None:
        return self.client.unavailable()

    def launch(self, jm: "Host", job: Job) -> str:
        job_dir, checkpoint = jm.paths(job)
        cluster = jm.cluster()
        resources = Resources.from_dict(job.resources)
        script = batch_script(job_id=job.id, job_dir=job_dir, checkpoint=checkpoint,
                              config_path=job_dir / CONFIG_NAME, repo=REPO, python=cluster.python or jm.python,
                              procs_per_node=procs_of(job), resources=resources, cluster=cluster, token=job.token)
        path = job_dir / SCRIPT_NAME
        path.write_text(script)
        return self.client.submit(path)

    def poll(self, jm: "Host", job: Job) -> None:
        if not job.cluster_id or self.client.unavailable():
            return   # not submitted (yet), or no Slurm commands here: nothing to ask
        info = self.client.job(job.cluster_id)
        progress = job.progress()
        now = time.time()
        if info is None:   # the controller forgot it (MinJobAge passed, or it restarted)
            rc = _read_exit_code(Path(job.job_dir) / EXIT_FILE.format(job.cluster_id))
            if progress.phase == "done":
                jm.update(job.id, ACTIVE, state="succeeded", finished=now, returncode=rc, message="")
                return
            message = (f"Slurm no longer knows job {job.cluster_id} (it ended too long ago or the controller "
                       f"restarted){f'; the trainer exited with code {rc}' if rc is not None else ''}. "
                       f"Resume continues from its last resume state. Last log lines:\n{job.log_tail(15)}")
            if jm.update(job.id, ACTIVE, state="failed", finished=now, returncode=rc, message=message.rstrip()):
                jm.auto_resume(job, "Slurm lost it")
            return
        ours = map_state(info.state)
        base = info.state.split()[0].upper()
        if ours == "queued":
            if job.state != "queued":   # requeued by Slurm (preemption, scontrol requeue, node failure)
                jm.update(job.id, ["running"], state="queued",
                           message=f"Slurm requeued job {job.cluster_id} ({base}); it resumes when it runs again")
            return
        if ours == "running":
            if job.state == "queued":
                jm.update(job.id, ["queued"], state="running", started=job.started or now, message="")
            return
        rc = _slurm_rc(info.exit_code)
        message = ""
        if ours == "succeeded" and progress.phase != "done":
            ours, message = "failed", (f"Slurm job {job.cluster_id} COMPLETED, but the trainer did not log the end "
                                       f"of its run")
        elif ours in ("failed", "cancelled"):
            # our own cancel sets the row to cancelled before scancel, so a CANCELLED job
            # that is still active here was stopped by someone else: a failure to resume from
            ours = "failed"
            message = (f"Slurm job {job.cluster_id} ended {base}: {STATE_TEXT.get(base, 'see the log')}"
                       f" (exit code {info.exit_code or '?'}). Resume continues from the last resume state.")
        if message:
            message += f" Last log lines:\n{job.log_tail(15)}"
        if jm.update(job.id, ACTIVE, state=ours, finished=now, returncode=rc, message=message.rstrip()):
            if ours == "failed" and base in REQUEUE_STATES:
                jm.auto_resume(job, f"Slurm {base}")

    def stop(self, jm: "Host", job: Job, grace_s: float) -> None:
        if job.cluster_id:
            self.client.cancel(job.cluster_id)


def _read_exit_code(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _slurm_rc(exit_code: str) -> int | None:
    """``scontrol``'s ``ExitCode=rc:signal`` -> rc (negative signal when killed by one)."""
    try:
        rc, sig = (int(x) for x in exit_code.split(":"))
    except (AttributeError, ValueError):
        return None
    return -sig if sig else rc

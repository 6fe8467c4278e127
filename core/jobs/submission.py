"""Submission: everything checked before a job exists, and its creation in one transaction.

:func:`prepare` validates a request (device, processes per node, the backend and its
Slurm resources, the recipe with its overrides, the GPUs this machine shows, whether
the recipe fits in memory (:mod:`core.config.footprint`), whether the backend can take
jobs, the checkpoint name); anything wrong raises a :class:`core.errors.MinbertError`
and nothing is created. :func:`create` then inserts the row, writes the job's files (and,
for Slurm, submits it) before the transaction commits; any failure rolls it back and
removes the files, so there is never a half-created job.

GPUs are counted by a short probe in the interpreter that will train (``python -c
'import torch ...'``): the jobs process itself never imports torch.
"""
from __future__ import annotations

import json
import secrets
import shutil
import sqlite3
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from core.config.limits import machine_memory
from core.config.schema import Config
from core.errors import JobError, MinbertError
from core.jobs.backends import Backend
from core.config.footprint import check_fits
from core.jobs.slurm import Cluster, Resources, mem_bytes
from core.jobs.store import CONFIG_NAME, MAX_PROCS_PER_NODE, NAME_RE, RESERVED_NAMES, Job, JobStore
from core.paths import REPO

DEVICES = ("auto", "cpu", "cuda")
DEFAULT_MAX_QUEUED = 10
# Run in the training interpreter: (visible CUDA devices, torch.distributed available).
_GPU_PROBE = ("import json, torch, torch.distributed; print(json.dumps([torch.cuda.device_count() "
              "if torch.cuda.is_available() else 0, torch.distributed.is_available()]))")


@dataclass
class Request:
    """A validated submission, ready to be created."""
    recipe: Path
    overrides: list[str]
    device: str
    gpus: int
    backend: str
    resources: dict
    config: Config
    name: str
    auto_resume: bool


def visible_gpus(python: str) -> tuple[int, bool]:
    """(CUDA devices ``python``'s torch sees, whether it has torch.distributed)."""
    try:
        out = subprocess.run([python, "-c", _GPU_PROBE], capture_output=True, text=True, timeout=300,
                             stdin=subprocess.DEVNULL, cwd=REPO)
        count, distributed = json.loads(out.stdout.strip().splitlines()[-1])
        return int(count), bool(distributed)
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError, TypeError) as e:
        detail = getattr(e, "stderr", None) or str(e)
        raise JobError(f"cannot count this machine's GPUs with {python}: {str(detail).strip()[-300:]}") from None


def check_gpus(gpus: int, python: str) -> None:
    """Raise :class:`JobError` unless ``gpus`` CUDA devices are visible here."""
    n, distributed = visible_gpus(python)
    if n == 0:
        raise JobError("a GPU was asked for but no CUDA GPU is visible on this machine; choose cpu "
                       "(several CPU processes train with gloo) or the slurm backend")
    if gpus > n:
        raise JobError(f"{gpus} GPUs were asked for but only {n} are visible")
    if gpus > 1 and not distributed:
        raise JobError("this torch build has no torch.distributed: multi-GPU jobs need it; use 1 GPU")


def memory_for(backend: str, resources: dict, procs: int) -> tuple[int | None, str]:
    """(bytes one training process may use, where) for the fit check at submission: this
    machine's memory shared by ``procs`` processes (local), the Slurm job's ``--mem`` per
    node shared by its processes (slurm; no check when no --mem is asked for)."""
    if backend == "slurm":
        mem = resources.get("mem")
        if not mem:
            return None, ""
        per_node = max(1, int(resources.get("gpus_per_node") or procs))
        return mem_bytes(mem) // per_node, f"the Slurm job's --mem {mem} per process"
    return machine_memory() // max(1, procs), "this machine" + (f" per process ({procs})" if procs > 1 else "")


def _placement(cluster: Cluster, backend: str, resources, device: str, gpus: int) -> tuple[dict, int, str]:
    """(Slurm resources, processes per node, the trainer's device) of a request."""
    if backend != "slurm":
        if resources:
            raise JobError("resources (nodes, memory, time, partition ...) apply to the slurm backend only")
        return {}, gpus, "cuda" if gpus > 1 and device == "auto" else device
    given = resources.to_dict() if isinstance(resources, Resources) else dict(resources or {})
    given = {k: v for k, v in given.items() if v not in (None, "")}
    r = Resources.from_dict({**cluster.resources.to_dict(), **given})
    if device == "cpu":
        r.gpus_per_node = 0
    elif r.gpus_per_node:
        gpus = r.gpus_per_node          # one process per GPU
    elif device == "cuda":
        r.gpus_per_node = gpus
    return r.validated().to_dict(), gpus, device


def check_name(base: str | None) -> str:
    """``base`` if a job's checkpoint may take it, else :class:`JobError` saying why."""
    if not NAME_RE.match(base or ""):
        raise JobError(f"job name {base!r} is not usable as a directory name: use letters, digits, "
                       f"'.', '_' or '-' (at most 64 characters, starting with a letter or digit)")
    if base.lower() in RESERVED_NAMES:
        raise JobError(f"job name {base!r} is reserved (it would shadow "
                       f"{'the zero-shot model' if base.lower() == 'pretrained' else 'a built-in name'}); "
                       f"choose another name")
    return base


def _recipe_path(config: str | Path) -> Path:
    recipe = Path(config)
    if not recipe.is_absolute() and not recipe.exists() and (REPO / recipe).exists():
        recipe = REPO / recipe
    return recipe.resolve()


def prepare(cluster: Cluster, runner: Backend, python: str, config: str | Path, overrides: Sequence[str],
            name: str | None, limit: int | None, max_steps: int | None, device: str, gpus: int,
            backend: str, resources, auto_resume: bool) -> Request:
    """Every check of a submission, in the order the user sees them (see the module
    docstring); the validated :class:`Request`."""
    recipe = _recipe_path(config)
    if device not in DEVICES:
        raise JobError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if isinstance(gpus, bool) or not isinstance(gpus, int) or not 1 <= gpus <= MAX_PROCS_PER_NODE:
        raise JobError(f"gpus (processes per node) must be a whole number from 1 to {MAX_PROCS_PER_NODE}, "
                       f"got {gpus!r}")
    overrides = [str(o) for o in overrides]
    if limit is not None:
        overrides.append(f"data.limit={limit}")
    if max_steps is not None:
        overrides.append(f"train.max_steps={max_steps}")
    res, gpus, train_device = _placement(cluster, backend, resources, device, gpus)
    overrides.append(f"train.device={train_device}")
    cfg = Config.from_yaml(recipe, overrides)  # raises ConfigError: nothing created yet
    if backend == "local" and train_device == "cuda":
        check_gpus(gpus, python)
    memory, where = memory_for(backend, res, gpus)
    if memory is not None:
        check_fits(cfg, memory, where)         # core/config/footprint.py: a recipe too big is refused here
    reason = runner.unavailable()
    if reason:
        raise JobError(f"cannot submit to {backend}: {reason}")
    base = check_name(name if name is not None else recipe.stem)
    return Request(recipe, overrides, device, gpus, backend, res, cfg, base, auto_resume)


def _queue_full(max_queued: int) -> JobError:
    return JobError(f"{max_queued} jobs are already queued (the cap, MINBERT_MAX_QUEUED_JOBS): "
                    f"wait for some to start or cancel one")


def create(host, store: JobStore, req: Request, checkpoint: Path, runner: Backend, max_queued: int) -> int:
    """Insert the row, write the job's files (and submit to the cluster) in one
    transaction; on any failure roll it back and remove what was made. ``host`` is the
    manager (:class:`core.jobs.backends.Host`; ``display_command``)."""
    made: dict = {}
    try:
        with store.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                job_id = _insert(host, db, store, req, checkpoint, runner, max_queued, made)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
    except BaseException as e:
        _undo(host, runner, made, checkpoint)
        if isinstance(e, OSError):
            raise JobError(f"cannot create the job's files under {store.root}: {e}") from None
        if isinstance(e, sqlite3.Error):
            raise JobError(f"cannot record the job in {store.db_path}: {e}") from None
        raise
    return job_id


def _insert(host, db: sqlite3.Connection, store: JobStore, req: Request, checkpoint: Path, runner: Backend,
            max_queued: int, made: dict) -> int:
    """The body of :func:`create`'s transaction; what it made goes into ``made``."""
    if db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued'").fetchone()[0] >= max_queued:
        raise _queue_full(max_queued)
    cur = db.execute(
        "INSERT INTO jobs (name, state, recipe, overrides, device, gpus, checkpoint, job_dir, "
        "created, backend, resources, auto_resume, token) "
        "VALUES (?, 'queued', ?, ?, ?, ?, ?, '', ?, ?, ?, ?, ?)",
        (checkpoint.name, str(req.recipe), json.dumps(req.overrides), req.device, req.gpus, str(checkpoint),
         time.time(), req.backend, json.dumps(req.resources), int(bool(req.auto_resume)), secrets.token_hex(8)))
    job_id = cur.lastrowid
    job_dir = made["job_dir"] = store.root / "jobs" / str(job_id)
    if job_dir.exists():    # left by a rolled-back attempt that had this id
        shutil.rmtree(job_dir)
    job_dir.mkdir(parents=True)
    cfg = req.config.with_overrides([f"name={json.dumps(checkpoint.name)}",
                                     f"data.dir={json.dumps(str(_data_dir(req.config)))}"])
    (job_dir / CONFIG_NAME).write_text(
        f"# job {job_id}: {req.recipe}" + "".join(f" --set {o}" for o in req.overrides) + "\n" + cfg.to_yaml())
    job = made["job"] = Job.from_row(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())
    job.job_dir = str(job_dir)
    command = host.display_command(job)
    cluster_id = None
    if req.backend != "local":
        cluster_id = made["cluster_id"] = runner.launch(host, job)
    db.execute("UPDATE jobs SET job_dir = ?, command = ?, cluster_id = ? WHERE id = ?",
               (str(job_dir), json.dumps(command), cluster_id, job_id))
    return job_id


def _data_dir(cfg: Config) -> Path:
    data_dir = Path(cfg.data.dir)
    return data_dir if data_dir.is_absolute() else (REPO / data_dir).resolve()


def _undo(host, runner: Backend, made: dict, checkpoint: Path) -> None:
    if made.get("cluster_id"):
        try:
            runner.stop(host, Job(**{**asdict(made["job"]), "cluster_id": made["cluster_id"]}), grace_s=0)
        except MinbertError:
            pass
    if made.get("job_dir") is not None:
        shutil.rmtree(made["job_dir"], ignore_errors=True)
    shutil.rmtree(checkpoint, ignore_errors=True)


def queue_has_room(store: JobStore, max_queued: int) -> None:
    """:class:`JobError` when ``max_queued`` jobs already wait."""
    if store.count(["queued"]) >= max_queued:
        raise _queue_full(max_queued)

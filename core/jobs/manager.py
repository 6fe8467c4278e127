"""Background training jobs: submit, watch, cancel, resume, and find them again after a restart.

    python -m core.jobs submit --config FILE [--set key=value ...] [--name NAME]
            [--limit N] [--max-steps N] [--device auto|cpu|cuda] [--gpus N]
            [--backend local|slurm] [--nodes N] [--gpus-per-node N] [--cpus-per-task N]
            [--mem 32G] [--time 4:00:00] [--partition P] [--auto-resume]
    python -m core.jobs status ID [--json] | list [--json] | cancel ID | resume ID | log ID [-n N]

A job is one ``python -m core.train`` run (``torchrun`` for several processes) on one of
two *backends* behind one interface (:class:`Backend`):

* ``local`` (the default): the run is a child of a small *worker* process
  (``python -m core.jobs _worker ID``, the leader of the job's own process group) on this
  machine, so it outlives the browser tab, the Streamlit server and the shell that
  submitted it. The worker starts the trainer, waits for it, records its exit code and
  final state, and starts the next queued job. Jobs beyond ``max_running`` (default 1:
  training already uses every CPU core) wait as ``queued``.
* ``slurm``: the run is a Slurm batch job (``sbatch``; :mod:`core.jobs.slurm` writes the
  script), with the resources it asks for (nodes, GPUs per node, CPUs, memory, time
  limit, partition; defaults from ``<root>/cluster.yaml`` and ``MINBERT_SLURM_*``).
  Its state is read from ``scontrol`` and mapped onto the same job states; ``cancel``
  runs ``scancel``. Progress comes from the same ``train_log.jsonl`` (on a file system
  the compute nodes share).

State lives in SQLite (``<root>/jobs.sqlite``, WAL mode, one connection per call), a
job's files in ``<root>/jobs/<id>/`` (``config.yaml``: the resolved recipe that runs;
``job.log``: stdout and stderr; ``slurm.sh`` for Slurm) and its checkpoint in
``<root>/<name>/``. A job is created in one transaction: its row is inserted, its files
written (and, for Slurm, the job submitted) before that transaction commits; any failure
rolls it back and removes the files, so there is never a half-created job.

The trainer's command line is rebuilt from the job's validated fields (job directory
and checkpoint under the root, process count) every time it starts; the ``command``
column of the database is a record for people, never executed. A job that is resumed
(``resume``, the app's Resume button, or automatically for ``--auto-resume`` jobs whose
worker died or whose Slurm job timed out, was preempted or lost its node) runs again in
the same checkpoint with ``--resume`` when the checkpoint holds resume state (else it
starts the run again with ``--overwrite``).

Progress, ETA, loss curves and dev metrics are read from the checkpoint's
``train_log.jsonl`` (events ``start``, ``step``, ``eval``, ``checkpoint``, ``done``,
``error``, ``cancelled``; see ``core.training.trainer``). A dead local worker is noticed without
anyone asking: the kernel sends its trainer SIGTERM the moment the worker dies
(``PR_SET_PDEATHSIG``), and every worker has a *watchdog* (``python -m core.jobs
_watchdog``, in a session of its own, so a kill of the worker's process group spares it)
that waits on the worker's pid and, when it dies, stops whatever the job left running,
marks the job failed (or resumes it, ``--auto-resume``) and starts the next queued job.
As fallbacks the launching process watches its worker (a thread), and every
:meth:`JobManager.refresh` and the first open of a job root settle dead workers too: a
pid that no longer exists, is a zombie, or now belongs to another process (its start
time differs) marks the job failed, with the last lines of its log as the reason. Stopping a job stops every process that
carries the job's token in its environment (the worker, torchrun, and torchrun's
workers, which run in sessions of their own), then the worker's process group.

No Streamlit here: the app's Train page and this command line share this module.
"""
from __future__ import annotations

import argparse
import ctypes
import hmac
import json
import os
import re
import secrets
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from core.paths import REPO
from core.config.schema import Config
from core.errors import ConfigError, JobError, MinbertError  # noqa: F401 (ConfigError: re-exported)
from core.training.footprint import check_fits
from core.settings import env_bool, env_float, env_int, env_path, env_secret
from core.train_log import read_jsonl
from core.jobs.slurm import (BACKENDS, EXIT_FILE, REQUEUE_STATES, STATE_TEXT, Cluster, Resources, SlurmClient,
                        batch_script, load_cluster, map_state, mem_bytes)

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")
RESUMABLE = ("failed", "cancelled")
DEVICES = ("auto", "cpu", "cuda")
DB_NAME = "jobs.sqlite"
LOG_NAME = "job.log"
CONFIG_NAME = "config.yaml"
SCRIPT_NAME = "slurm.sh"
TOKEN_VAR = "MINBERT_JOB_TOKEN"
START_GRACE_S = 60.0      # a claimed job may take this long to record its worker's pid
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Names a job's checkpoint may not take: the zero-shot model, the shipped checkpoint,
# and the job root's own files.
RESERVED_NAMES = frozenset({"pretrained", "minbert-multitask", "jobs", DB_NAME, "cluster.yaml"})
MAX_PROCS_PER_NODE = 64
PID_MAX = 2**22           # Linux's largest pid_max (/proc/sys/kernel/pid_max)
DEFAULT_MAX_QUEUED = 10

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    recipe TEXT NOT NULL,
    overrides TEXT NOT NULL,
    device TEXT NOT NULL,
    gpus INTEGER NOT NULL,
    checkpoint TEXT NOT NULL,
    job_dir TEXT NOT NULL,
    command TEXT NOT NULL DEFAULT '[]',
    pid INTEGER,
    pid_start INTEGER,
    train_pid INTEGER,
    train_pid_start INTEGER,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    returncode INTEGER,
    message TEXT NOT NULL DEFAULT ''
)
"""
# Columns added after the first release: databases made before them are migrated.
_ADDED_COLUMNS = (("backend", "TEXT NOT NULL DEFAULT 'local'"), ("cluster_id", "TEXT"),
                  ("resources", "TEXT NOT NULL DEFAULT '{}'"), ("attempt", "INTEGER NOT NULL DEFAULT 0"),
                  ("auto_resume", "INTEGER NOT NULL DEFAULT 0"), ("token", "TEXT NOT NULL DEFAULT ''"))


def default_root() -> Path:
    """``$MINBERT_JOBS_ROOT`` if set, else the repository's ``checkpoints/`` (a value that
    names a file, or holds a NUL byte, is a ConfigError: core/settings.py)."""
    return env_path("MINBERT_JOBS_ROOT", REPO / "checkpoints").resolve()


# --------------------------------------------------------------------- progress
@dataclass
class Progress:
    """What a checkpoint's ``train_log.jsonl`` says about a run so far."""
    phase: str = "preparing"        # preparing | training | evaluating | done | error | cancelled
    # (evaluating: the last step is done and the final dev evaluation runs)
    step: int = 0
    total_steps: int | None = None
    epoch: int = 0
    epochs: int | None = None
    elapsed_s: float | None = None
    examples_per_s: float | None = None
    eta_s: float | None = None      # training steps left at the current speed + one dev evaluation
    eval_s: float | None = None     # the last dev evaluation's duration, or an estimate before the first
    eval_estimated: bool = False    # eval_s is an estimate (:func:`_eval_estimate`), not a timed one
    losses: list[dict] = field(default_factory=list)   # {"step", "epoch", "task", "loss"}
    evals: list[dict] = field(default_factory=list)    # eval events: epoch, step, score, metrics
    error: str | None = None
    last_event: str | None = None

    @property
    def fraction(self) -> float:
        if self.phase == "done":
            return 1.0
        if not self.total_steps:
            return 0.0
        # the final dev evaluation still runs after the last step: 99% until "done"
        return max(0.0, min(0.99, self.step / self.total_steps))


def read_progress(train_log: str | Path) -> Progress:
    """Parse ``train_log.jsonl``; a missing file or a half-written last line is fine."""
    path = Path(train_log)
    progress = Progress()
    if not path.is_file():
        return progress
    anchor: tuple[float, int] | None = None   # (time, step) where the current timing window began
    last: tuple[float, int] | None = None
    start: dict = {}
    stage_time: float | None = None
    for event in read_jsonl(path):   # skips the line the trainer may be writing right now
        kind, when = event.get("event"), event.get("time")
        progress.last_event = kind
        if kind == "start":
            progress.phase = "preparing"   # building the model, (frozen encoder) caching vectors
            progress.total_steps = event.get("total_steps")
            progress.epochs = event.get("epochs")
            progress.step = event.get("resumed_at_step") or 0
            start = event
        elif kind == "stage":
            progress.phase = "training"
            stage_time = when if stage_time is None else stage_time
            anchor = (when, int(event.get("step", progress.step)))
        elif kind == "step":
            progress.phase = "training"
            progress.step = int(event.get("step", progress.step))
            progress.total_steps = event.get("total_steps", progress.total_steps)
            progress.epoch = int(event.get("epoch", progress.epoch))
            progress.elapsed_s = event.get("elapsed_s")
            progress.examples_per_s = event.get("examples_per_s")
            for task, loss in (event.get("loss") or {}).items():
                progress.losses.append({"step": progress.step, "epoch": progress.epoch,
                                        "task": task, "loss": loss})
            last = (when, progress.step)
            if progress.total_steps and progress.step >= progress.total_steps:
                progress.phase = "evaluating"
        elif kind == "eval":
            progress.evals.append({k: v for k, v in event.items() if k not in ("event", "time")})
            if last and None not in (when, last[0]) and when >= last[0]:
                progress.eval_s, progress.eval_estimated = round(when - last[0], 1), False
            anchor = (when, progress.step)  # dev evaluation time is not training speed
        elif kind == "done":
            progress.phase = "done"
        elif kind == "error":
            progress.phase, progress.error = "error", event.get("message")
        elif kind == "cancelled":
            progress.phase = "cancelled"
    timed = bool(anchor and last and None not in (*anchor, *last) and last[1] > anchor[1] and last[0] > anchor[0])
    per_step = (last[0] - anchor[0]) / (last[1] - anchor[1]) if timed else None
    if progress.eval_s is None and progress.phase in ("training", "evaluating") and per_step is not None:
        progress.eval_s = _eval_estimate(start, stage_time, per_step)
        progress.eval_estimated = progress.eval_s is not None
    if progress.phase == "training" and progress.total_steps and per_step is not None:
        # the run ends with a dev evaluation: the last one's duration (or its estimate)
        progress.eta_s = round(per_step * (progress.total_steps - progress.step) + (progress.eval_s or 0.0), 1)
    elif progress.phase == "evaluating" and progress.eval_s is not None and last and last[0] is not None:
        progress.eta_s = round(max(0.0, progress.eval_s - (time.time() - last[0])), 1)
    return progress


def _eval_estimate(start: dict, stage_time: float | None, per_step: float) -> float | None:
    """Seconds a full dev evaluation will take, before the run has timed one, from the
    ``start`` event's sizes (a pair counts as two sentences): on a frozen encoder the
    trainer first encodes every training sentence once (start -> first stage event), so
    dev sentences cost that pass's rate; otherwise a training step is one forward and a
    backward of ``batch_size`` examples, taken as three forwards. ``None`` without sizes."""
    def sentences(sizes) -> int:
        return sum(int(n) * (1 if task == "sst" else 2) for task, n in (sizes or {}).items()
                   if isinstance(n, (int, float)))
    dev, train = sentences(start.get("dev_sizes")), sentences(start.get("train_sizes"))
    cfg = (start.get("config") or {}).get("train") or {}
    if not dev:
        return None
    began = start.get("time")
    if cfg.get("freeze_encoder") and train and isinstance(began, (int, float)) and isinstance(
            stage_time, (int, float)) and stage_time > began:
        return round(dev * (stage_time - began) / train, 1)
    batch = cfg.get("batch_size")
    if isinstance(batch, int) and batch > 0:
        return round(dev * per_step / (3 * batch), 1)
    return None


# ------------------------------------------------------------------------ jobs
@dataclass
class Job:
    id: int
    name: str
    state: str
    recipe: str
    overrides: list[str]
    device: str
    gpus: int                    # processes per node: GPUs, or CPU processes (gloo) on --device cpu
    checkpoint: str
    job_dir: str
    command: list[str]           # for people only: what started last; never executed
    pid: int | None
    pid_start: int | None
    train_pid: int | None
    train_pid_start: int | None
    created: float
    started: float | None
    finished: float | None
    returncode: int | None
    message: str
    backend: str = "local"
    cluster_id: str | None = None    # the Slurm job id
    resources: dict = field(default_factory=dict)
    attempt: int = 0                 # 0 for the first run, +1 per resume / requeue
    auto_resume: bool = False
    token: str = ""

    @property
    def log_path(self) -> Path:
        return Path(self.job_dir) / LOG_NAME

    @property
    def config_path(self) -> Path:
        return Path(self.job_dir) / CONFIG_NAME

    @property
    def train_log(self) -> Path:
        return Path(self.checkpoint) / "train_log.jsonl"

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def resumable(self) -> bool:
        """Failed and cancelled jobs can be resumed (``python -m core.jobs resume ID``)."""
        return self.state in RESUMABLE

    @property
    def where(self) -> str:
        """``local`` or ``slurm 1234`` (the Slurm job id)."""
        return f"slurm {self.cluster_id}" if self.backend == "slurm" and self.cluster_id else self.backend

    def progress(self) -> Progress:
        return read_progress(self.train_log)

    def duration_s(self, now: float | None = None) -> float | None:
        if self.started is None:
            return None
        return round((self.finished or now or time.time()) - self.started, 1)

    def log_tail(self, n: int = 40) -> str:
        return tail(self.log_path, n)

    def to_dict(self, with_progress: bool = True) -> dict:
        out = asdict(self)
        out.pop("token", None)
        out["resumable"] = self.resumable
        if with_progress:
            p = self.progress()
            out.update(progress=1.0 if self.state == "succeeded" else round(p.fraction, 4),
                       phase=p.phase, step=p.step, total_steps=p.total_steps, epoch=p.epoch,
                       eta_s=p.eta_s if self.state == "running" else None,
                       eval_s=p.eval_s, eval_estimated=p.eval_estimated,
                       duration_s=self.duration_s(), log=str(self.log_path), config=str(self.config_path))
        return out

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Job":
        """A job from its database row. The row is data someone may have altered: a
        column of the wrong type (SQLite keeps whatever it is given) or JSON that does not
        parse becomes its empty value and the job's message says which column was
        damaged; it never raises (the worker refuses to run such a job: ``_paths``)."""
        d = dict(row)
        damaged = []
        for name, kind, default in _JSON_COLUMNS:
            try:
                value = json.loads(d.get(name) or default) if len(str(d.get(name) or "")) <= 1_000_000 else None
            except (TypeError, ValueError, RecursionError):
                value = None
            if not isinstance(value, kind):
                damaged.append(name)
                value = json.loads(default)
            d[name] = value
        for name, kinds in _TYPED_COLUMNS.items():
            value = d.get(name)
            bad = isinstance(value, bool) or not isinstance(value, kinds)
            if value is not None and (bad or (name in ("pid", "train_pid") and not 1 <= value <= PID_MAX)
                                      or not -2**62 <= value <= 2**62):
                damaged.append(name)
                d[name] = 0 if name in ("gpus", "attempt") else None
        for name in ("name", "state", "recipe", "device", "checkpoint", "job_dir", "message", "backend", "token"):
            if d.get(name) is not None and not isinstance(d[name], str):
                damaged.append(name)
                d[name] = str(d[name])
        d["auto_resume"] = bool(d.get("auto_resume"))
        if damaged:
            d["message"] = (f"this job's database row was altered (unreadable: {', '.join(damaged)}); "
                            f"submit the job again. " + (d.get("message") or "")).strip()
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


# Columns of the jobs table that hold JSON (type, default) and numbers.
_JSON_COLUMNS = (("overrides", list, "[]"), ("command", list, "[]"), ("resources", dict, "{}"))
_TYPED_COLUMNS = {"id": int, "gpus": int, "attempt": int, "pid": int, "pid_start": int, "train_pid": int,
                  "train_pid_start": int, "returncode": int, "created": (int, float), "started": (int, float),
                  "finished": (int, float)}


def resume_args(checkpoint: str | Path) -> list[str]:
    """The trainer flag for a (re)start in ``checkpoint``: ``--resume`` when it holds resume
    state, ``--overwrite`` when an earlier attempt left a run without any, else none."""
    ckpt = Path(checkpoint)
    if (ckpt / "resume" / "state.json").is_file():
        return ["--resume"]
    if (ckpt / "train_log.jsonl").exists():
        return ["--overwrite"]
    return []


# ----------------------------------------------------------- exposed deployments
# Override keys the app's Train page accepts. Everything else (model.encoder and
# data.dir: arbitrary paths on the server; name; stages; train.device, which the page's
# device choice sets) is refused there; the command line takes any key.
APP_OVERRIDE_KEYS = frozenset({"description", "model.pooling", "model.max_len", "data.limit", "data.eval_limit"})
APP_OVERRIDE_PREFIXES = ("train.", "model.sst.", "model.qqp.", "model.sts.", "model.prompts.")
APP_OVERRIDE_DENIED = frozenset({"train.device"})


def check_app_overrides(overrides: Sequence[str]) -> None:
    """Raise :class:`JobError` for an override whose key the app does not accept."""
    for item in overrides:
        key = str(item).split("=", 1)[0].strip()
        allowed = key not in APP_OVERRIDE_DENIED and (
            key in APP_OVERRIDE_KEYS or any(key.startswith(p) for p in APP_OVERRIDE_PREFIXES))
        if not allowed:
            raise JobError(f"the app does not accept the override key {key!r}: it may set train.*, "
                           f"model.sst/qqp/sts/prompts.*, model.pooling, model.max_len, data.limit and "
                           f"data.eval_limit (use `python -m core.jobs submit --set ...` on the server "
                           f"for other keys)")


def access_mode(env: dict | None = None) -> str:
    """``read-only`` (``MINBERT_READ_ONLY=1``: nobody submits, cancels or resumes from the
    app), ``secret`` (``MINBERT_SECRET`` set: those actions need the secret typed on the
    Train page) or ``open``. A value that is neither 1/0 (true/false, yes/no, on/off) nor
    blank, or a secret shorter than 8 characters, is a ConfigError (core/settings.py)."""
    if env_bool("MINBERT_READ_ONLY", False, env):
        return "read-only"
    if env_secret("MINBERT_SECRET", env):
        return "secret"
    return "open"


def check_access(typed_secret: str | None, env: dict | None = None) -> None:
    """Raise :class:`JobError` unless the app may change jobs (see :func:`access_mode`)."""
    mode = access_mode(env)
    if mode == "read-only":
        raise JobError("this deployment is read-only (MINBERT_READ_ONLY is set): jobs cannot be submitted, "
                       "cancelled or resumed from the app")
    if mode == "secret":
        expected = env_secret("MINBERT_SECRET", env).encode()
        if not typed_secret or not hmac.compare_digest(str(typed_secret).encode(), expected):
            raise JobError("the access secret is missing or wrong: type the deployment's MINBERT_SECRET "
                           "in the Access secret field first")


def tail(path: str | Path, n: int = 40, max_bytes: int = 64_000) -> str:
    """The last ``n`` lines of a text file ('' if it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return ""
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - max_bytes))
        data = f.read().decode("utf-8", errors="replace")
    # tqdm-style carriage returns: keep what a terminal would show
    lines = [line.rsplit("\r", 1)[-1] for line in data.splitlines()]
    return "\n".join(lines[-n:])


# ---------------------------------------------------------------- process checks
def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) from /proc, None if absent."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()  # the command name may contain spaces
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def pid_start_time(pid: int) -> int | None:
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def pid_alive(pid: int | None, start: int | None = None) -> bool:
    """True if ``pid`` is a live (not zombie) process and, when ``start`` is given and
    /proc is available, the same process that was recorded (pid reuse is caught)."""
    if not pid:
        return False
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    stat = _proc_stat(pid)
    if stat is None:
        return not Path("/proc/self/stat").exists()  # no /proc (macOS): trust os.kill
    state, started = stat
    if state in ("Z", "X"):
        return False
    return start is None or started == start


# Workers started by this process: polled so that finished ones do not linger as zombies.
_CHILDREN: dict[int, subprocess.Popen] = {}


def _reap(pid: int | None = None) -> None:
    for child_pid, proc in list(_CHILDREN.items()):
        if pid is None or child_pid == pid:
            if proc.poll() is not None:
                _CHILDREN.pop(child_pid, None)


def _signal_group(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group led by ``pid`` (fall back to the pid alone)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    except PermissionError as e:
        raise JobError(f"not allowed to signal job process {pid}: {e}") from None


def _stop_processes(pids: Sequence[tuple[int | None, int | None]], grace_s: float) -> None:
    """SIGTERM each live (pid, start) process group, then SIGKILL what is left after
    ``grace_s`` seconds."""
    live = [(p, s) for p, s in pids if _identified(p, s)]
    for pid, _ in live:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.time() + grace_s
    while time.time() < deadline and any(pid_alive(p, s) for p, s in live):
        time.sleep(0.1)
    for pid, start in live:
        if pid_alive(pid, start):
            _signal_group(pid, signal.SIGKILL)




def token_pids(token: str) -> list[int]:
    """Live processes whose environment carries ``MINBERT_JOB_TOKEN=token``: a job's
    worker, its trainer, torchrun and torchrun's workers (which run in sessions of their
    own, out of reach of the worker's process group). Empty without /proc."""
    if not token:
        return []
    needle = f"{TOKEN_VAR}={token}".encode()
    me, found = os.getpid(), []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if needle in env.split(b"\0") and pid_alive(int(entry)):
            found.append(int(entry))
    return found


def _identified(pid: int | None, start: int | None) -> bool:
    """Whether a recorded (pid, start time) is a live process we may signal: on a system
    with /proc only when its start time was recorded and matches (a row that names a pid
    without one, e.g. an altered job table, never gets another process killed)."""
    if start is None and Path("/proc/self/stat").exists():
        return False
    return pid_alive(pid, start)


def stop_job_processes(group: tuple[int | None, int | None], token: str, grace_s: float,
                       extra: Sequence[tuple[int | None, int | None]] = ()) -> None:
    """SIGTERM the worker's process group (``group``: leader pid and its start time), every
    process carrying the job's ``token`` and ``extra`` processes; SIGKILL whatever is left
    after ``grace_s`` seconds."""
    leader, leader_start = group
    leader_alive = _identified(leader, leader_start)
    targets = [(p, pid_start_time(p)) for p in token_pids(token)]
    targets += [(p, s) for p, s in extra if _identified(p, s)]

    def send(sig: int) -> None:
        if leader_alive and leader:
            try:
                os.killpg(leader, sig)
            except (ProcessLookupError, PermissionError):
                pass
        for pid, start in targets:
            if pid_alive(pid, start):
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass

    def any_alive() -> bool:
        return (leader_alive and pid_alive(leader, leader_start)) or any(pid_alive(p, s) for p, s in targets) \
            or bool(token_pids(token))

    send(signal.SIGTERM)
    deadline = time.time() + grace_s
    while time.time() < deadline and any_alive():
        time.sleep(0.1)
    if any_alive():
        targets += [(p, pid_start_time(p)) for p in token_pids(token)]
        send(signal.SIGKILL)
        deadline = time.time() + 5
        while time.time() < deadline and any_alive():
            time.sleep(0.05)


# ------------------------------------------------------------------ backends
class Backend:
    """Where a job's trainer runs. :class:`JobManager` keeps the rows; a backend starts,
    watches and stops the runs."""
    name = ""

    def unavailable(self) -> str | None:
        """Why jobs cannot be submitted here (None when they can)."""
        return None

    def launch(self, jm: "JobManager", job: Job) -> str | None:
        """Called for a newly created or resumed job (still ``queued``). Returns the
        cluster's id for the run, if any."""
        return None

    def poll(self, jm: "JobManager", job: Job) -> None:
        """Settle an active job whose run ended without us noticing."""

    def stop(self, jm: "JobManager", job: Job, grace_s: float) -> None:
        """Stop a running job (its row already says ``cancelled``)."""


class LocalBackend(Backend):
    """A worker process on this machine (see the module docstring)."""
    name = "local"

    def poll(self, jm: "JobManager", job: Job) -> None:
        if job.state != "running":
            return   # queued local jobs wait for start_queued
        if job.pid is None:
            if time.time() - (job.started or job.created) > START_GRACE_S:
                if jm._update(job.id, ["running"], state="failed", finished=time.time(),
                              message="the job's worker never started"):
                    jm._maybe_auto_resume(job, "its worker never started")
            return
        if not pid_alive(job.pid, job.pid_start):
            jm._settle_dead(job)

    def stop(self, jm: "JobManager", job: Job, grace_s: float) -> None:
        stop_job_processes((job.pid, job.pid_start), job.token, grace_s,
                           extra=[(job.train_pid, job.train_pid_start)])


class SlurmBackend(Backend):
    """A Slurm batch job per run (see :mod:`core.jobs.slurm`)."""
    name = "slurm"

    def __init__(self, client: SlurmClient | None = None):
        self.client = client or SlurmClient()

    def unavailable(self) -> str | None:
        return self.client.unavailable()

    def launch(self, jm: "JobManager", job: Job) -> str:
        job_dir, checkpoint = jm._paths(job)
        cluster = jm.cluster()
        resources = Resources.from_dict(job.resources)
        script = batch_script(job_id=job.id, job_dir=job_dir, checkpoint=checkpoint,
                              config_path=job_dir / CONFIG_NAME, repo=REPO, python=cluster.python or jm.python,
                              procs_per_node=jm._procs(job), resources=resources, cluster=cluster, token=job.token)
        path = job_dir / SCRIPT_NAME
        path.write_text(script)
        return self.client.submit(path)

    def poll(self, jm: "JobManager", job: Job) -> None:
        if not job.cluster_id or self.client.unavailable():
            return   # not submitted (yet), or no Slurm commands here: nothing to ask
        info = self.client.job(job.cluster_id)
        progress = job.progress()
        now = time.time()
        if info is None:   # the controller forgot it (MinJobAge passed, or it restarted)
            rc = _read_exit_code(Path(job.job_dir) / EXIT_FILE.format(job.cluster_id))
            if progress.phase == "done":
                jm._update(job.id, ACTIVE, state="succeeded", finished=now, returncode=rc, message="")
                return
            message = (f"Slurm no longer knows job {job.cluster_id} (it ended too long ago or the controller "
                       f"restarted){f'; the trainer exited with code {rc}' if rc is not None else ''}. "
                       f"Resume continues from its last resume state. Last log lines:\n{job.log_tail(15)}")
            if jm._update(job.id, ACTIVE, state="failed", finished=now, returncode=rc, message=message.rstrip()):
                jm._maybe_auto_resume(job, "Slurm lost it")
            return
        ours = map_state(info.state)
        base = info.state.split()[0].upper()
        if ours == "queued":
            if job.state != "queued":   # requeued by Slurm (preemption, scontrol requeue, node failure)
                jm._update(job.id, ["running"], state="queued",
                           message=f"Slurm requeued job {job.cluster_id} ({base}); it resumes when it runs again")
            return
        if ours == "running":
            if job.state == "queued":
                jm._update(job.id, ["queued"], state="running", started=job.started or now, message="")
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
        if jm._update(job.id, ACTIVE, state=ours, finished=now, returncode=rc, message=message.rstrip()):
            if ours == "failed" and base in REQUEUE_STATES:
                jm._maybe_auto_resume(job, f"Slurm {base}")

    def stop(self, jm: "JobManager", job: Job, grace_s: float) -> None:
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


# ------------------------------------------------------------------ manager
# Roots this process has swept for dead workers (once per process: "at app start").
_SWEPT: set[Path] = set()
_SWEEP_LOCK = threading.Lock()


class JobManager:
    """Training jobs under ``root`` (default :func:`default_root`)."""

    def __init__(self, root: str | Path | None = None, max_running: int | None = None,
                 python: str | None = None, max_queued: int | None = None,
                 backends: dict[str, Backend] | None = None, sweep: bool = True):
        self.root = Path(root).resolve() if root is not None else default_root()
        self.max_running = max_running or env_int("MINBERT_MAX_RUNNING_JOBS", 1, 1, 64)
        self.max_queued = max_queued or env_int("MINBERT_MAX_QUEUED_JOBS", DEFAULT_MAX_QUEUED, 1, 1_000)
        self.python = python or sys.executable
        self.backends: dict[str, Backend] = {"local": LocalBackend(), "slurm": SlurmBackend(), **(backends or {})}
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "jobs").mkdir(exist_ok=True)
        self.db_path = self.root / DB_NAME
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
            have = {r[1] for r in db.execute("PRAGMA table_info(jobs)")}
            for column, decl in _ADDED_COLUMNS:
                if column not in have:
                    try:
                        db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {decl}")
                    except sqlite3.OperationalError:
                        pass   # another process added it meanwhile
        if sweep:
            with _SWEEP_LOCK:
                first = self.root not in _SWEPT
                _SWEPT.add(self.root)
            if first:   # the app (or CLI) starting: settle workers that died while nobody watched
                try:
                    self.refresh()
                except MinbertError:
                    pass

    # ------------------------------------------------------------- database
    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """One short-lived connection per call (safe across threads and processes)."""
        try:
            conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        except sqlite3.Error as e:
            raise JobError(f"cannot open the job database {self.db_path}: {e}") from None
        conn.row_factory = sqlite3.Row
        with closing(conn):
            yield conn

    def _update(self, job_id: int, only_if_state: Sequence[str] | None = None, **values) -> bool:
        sets = ", ".join(f"{k} = ?" for k in values)
        sql, args = f"UPDATE jobs SET {sets} WHERE id = ?", [*values.values(), job_id]
        if only_if_state:
            sql += f" AND state IN ({', '.join('?' * len(only_if_state))})"
            args += list(only_if_state)
        with self._db() as db:
            return db.execute(sql, args).rowcount > 0

    def get(self, job_id: int | str) -> Job:
        try:
            job_id = int(job_id)
        except (TypeError, ValueError):
            raise JobError(f"job id must be a number, got {str(job_id)[:40]!r}") from None
        if not 1 <= job_id <= 2**63 - 1:
            raise JobError(f"no job {str(job_id)[:40]}: job ids are whole numbers from 1; "
                           f"`python -m core.jobs list` shows the jobs")
        with self._db() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobError(f"no job {job_id} in {self.db_path}; `python -m core.jobs list` shows the jobs")
        return Job.from_row(row)

    def list(self, states: Sequence[str] | None = None) -> list[Job]:
        """Jobs of every backend, newest first."""
        sql, args = "SELECT * FROM jobs", []
        if states:
            sql += f" WHERE state IN ({', '.join('?' * len(states))})"
            args = list(states)
        with self._db() as db:
            rows = db.execute(sql + " ORDER BY id DESC", args).fetchall()
        return [Job.from_row(r) for r in rows]

    def cluster(self) -> Cluster:
        """Site settings (``<root>/cluster.yaml`` and the environment)."""
        return load_cluster(self.root)

    def _cluster_or_default(self) -> Cluster:
        try:
            return self.cluster()
        except JobError:
            return Cluster()

    def backend(self, name: str) -> Backend:
        if name not in self.backends:
            raise JobError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
        return self.backends[name]

    # -------------------------------------------------------------- fields
    def _paths(self, job: Job) -> tuple[Path, Path]:
        """The job's directory and checkpoint, checked against where this manager puts
        them: a row that points elsewhere is refused, never run."""
        job_dir, checkpoint = Path(job.job_dir), Path(job.checkpoint)
        if job_dir != self.root / "jobs" / str(int(job.id)):
            raise JobError(f"job {job.id}'s directory {job_dir} is not {self.root / 'jobs' / str(job.id)}: "
                           f"the job database was altered; submit the job again")
        if (checkpoint.parent != self.root or not NAME_RE.match(checkpoint.name)
                or checkpoint.name.lower() in RESERVED_NAMES):
            raise JobError(f"job {job.id}'s checkpoint {checkpoint} is not a job checkpoint under {self.root}: "
                           f"the job database was altered; submit the job again")
        return job_dir, checkpoint

    @staticmethod
    def _procs(job: Job) -> int:
        n = job.gpus
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_PROCS_PER_NODE:
            raise JobError(f"job {job.id}: {n!r} processes per node is not a whole number from 1 to "
                           f"{MAX_PROCS_PER_NODE}")
        return n

    def train_command(self, job: Job) -> list[str]:
        """The trainer's command line, rebuilt from the job's fields (never read from the
        database): ``python -m core.train`` on one process, ``torchrun --standalone`` on several, with
        ``--resume``/``--overwrite`` as :func:`resume_args` decides."""
        job_dir, checkpoint = self._paths(job)
        procs = self._procs(job)
        if procs > 1:
            head = [self.python, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={procs}", "-m", "core.train"]
        else:
            head = [self.python, "-m", "core.train"]
        return head + ["--config", str(job_dir / CONFIG_NAME), "--out", str(checkpoint), "--no-progress",
                       *resume_args(checkpoint)]

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
        recipe = Path(config)
        if not recipe.is_absolute() and not recipe.exists() and (REPO / recipe).exists():
            recipe = REPO / recipe
        recipe = recipe.resolve()
        if device not in DEVICES:
            raise JobError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
        if isinstance(gpus, bool) or not isinstance(gpus, int) or not 1 <= gpus <= MAX_PROCS_PER_NODE:
            raise JobError(f"gpus (processes per node) must be a whole number from 1 to {MAX_PROCS_PER_NODE}, "
                           f"got {gpus!r}")
        cluster = self.cluster()
        backend = backend or cluster.backend
        runner = self.backend(backend)
        overrides = [str(o) for o in overrides]
        if limit is not None:
            overrides.append(f"data.limit={limit}")
        if max_steps is not None:
            overrides.append(f"train.max_steps={max_steps}")
        res: dict = {}
        if backend == "slurm":
            given = resources.to_dict() if isinstance(resources, Resources) else dict(resources or {})
            given = {k: v for k, v in given.items() if v not in (None, "")}
            r = Resources.from_dict({**cluster.resources.to_dict(), **given})
            if device == "cpu":
                r.gpus_per_node = 0
            elif r.gpus_per_node:
                gpus = r.gpus_per_node          # one process per GPU
            elif device == "cuda":
                r.gpus_per_node = gpus
            res = r.validated().to_dict()
            train_device = device
        else:
            if resources:
                raise JobError("resources (nodes, memory, time, partition ...) apply to the slurm backend only")
            train_device = "cuda" if gpus > 1 and device == "auto" else device
        overrides.append(f"train.device={train_device}")
        cfg = Config.from_yaml(recipe, overrides)  # raises ConfigError: nothing created yet
        if backend == "local" and train_device == "cuda":
            self._check_gpus(gpus)
        memory, where = _memory_for(backend, res, gpus)
        if memory is not None:
            check_fits(cfg, memory, where)         # core/training/footprint.py: a recipe too big is refused here
        reason = runner.unavailable()
        if reason:
            raise JobError(f"cannot submit to {backend}: {reason}")
        data_dir = Path(cfg.data.dir)
        if not data_dir.is_absolute():
            data_dir = (REPO / data_dir).resolve()
        base = name if name is not None else recipe.stem
        if not NAME_RE.match(base or ""):
            raise JobError(f"job name {base!r} is not usable as a directory name: use letters, digits, "
                           f"'.', '_' or '-' (at most 64 characters, starting with a letter or digit)")
        if base.lower() in RESERVED_NAMES:
            raise JobError(f"job name {base!r} is reserved (it would shadow "
                           f"{'the zero-shot model' if base.lower() == 'pretrained' else 'a built-in name'}); "
                           f"choose another name")
        if self._count(["queued"]) >= self.max_queued:
            raise JobError(f"{self.max_queued} jobs are already queued (the cap, MINBERT_MAX_QUEUED_JOBS): "
                           f"wait for some to start or cancel one")
        checkpoint = self._reserve_checkpoint(base)
        cfg = cfg.with_overrides([f"name={json.dumps(checkpoint.name)}", f"data.dir={json.dumps(str(data_dir))}"])
        job_id = self._create(recipe, overrides, device, gpus, checkpoint, cfg, backend, res, auto_resume, runner)
        if backend == "local":
            self.start_queued()
        return self.get(job_id)

    def _count(self, states: Sequence[str]) -> int:
        with self._db() as db:
            return db.execute(f"SELECT COUNT(*) FROM jobs WHERE state IN ({', '.join('?' * len(states))})",
                              list(states)).fetchone()[0]

    def _create(self, recipe: Path, overrides: list[str], device: str, gpus: int, checkpoint: Path, cfg: Config,
                backend: str, resources: dict, auto_resume: bool, runner: Backend) -> int:
        """Insert the row, write the job's files (and submit to the cluster) in one
        transaction; on any failure roll it back and remove what was made."""
        job_dir: Path | None = None
        cluster_id: str | None = None
        try:
            with self._db() as db:
                db.execute("BEGIN IMMEDIATE")
                try:
                    queued = db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued'").fetchone()[0]
                    if queued >= self.max_queued:
                        raise JobError(f"{self.max_queued} jobs are already queued (the cap, "
                                       f"MINBERT_MAX_QUEUED_JOBS): wait for some to start or cancel one")
                    token = secrets.token_hex(8)
                    cur = db.execute(
                        "INSERT INTO jobs (name, state, recipe, overrides, device, gpus, checkpoint, job_dir, "
                        "created, backend, resources, auto_resume, token) "
                        "VALUES (?, 'queued', ?, ?, ?, ?, ?, '', ?, ?, ?, ?, ?)",
                        (checkpoint.name, str(recipe), json.dumps(overrides), device, gpus, str(checkpoint),
                         time.time(), backend, json.dumps(resources), int(bool(auto_resume)), token))
                    job_id = cur.lastrowid
                    job_dir = self.root / "jobs" / str(job_id)
                    if job_dir.exists():    # left by a rolled-back attempt that had this id
                        shutil.rmtree(job_dir)
                    job_dir.mkdir(parents=True)
                    (job_dir / CONFIG_NAME).write_text(
                        f"# job {job_id}: {recipe}" + "".join(f" --set {o}" for o in overrides) + "\n" + cfg.to_yaml())
                    job = Job.from_row(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())
                    job.job_dir = str(job_dir)
                    command = self._display_command(job)
                    if backend != "local":
                        cluster_id = runner.launch(self, job)
                    db.execute("UPDATE jobs SET job_dir = ?, command = ?, cluster_id = ? WHERE id = ?",
                               (str(job_dir), json.dumps(command), cluster_id, job_id))
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
        except BaseException as e:
            if cluster_id:
                try:
                    runner.stop(self, Job(**{**asdict(job), "cluster_id": cluster_id}), grace_s=0)
                except MinbertError:
                    pass
            if job_dir is not None:
                shutil.rmtree(job_dir, ignore_errors=True)
            shutil.rmtree(checkpoint, ignore_errors=True)
            if isinstance(e, OSError):
                raise JobError(f"cannot create the job's files under {self.root}: {e}") from None
            if isinstance(e, sqlite3.Error):
                raise JobError(f"cannot record the job in {self.db_path}: {e}") from None
            raise
        return job_id

    def _display_command(self, job: Job) -> list[str]:
        if job.backend == "slurm":
            return ["sbatch", str(Path(job.job_dir) / SCRIPT_NAME)]
        return self.train_command(job)

    def _check_gpus(self, gpus: int) -> None:
        import torch
        import torch.distributed
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise JobError("a GPU was asked for but no CUDA GPU is visible on this machine; choose cpu "
                           "(several CPU processes train with gloo) or the slurm backend")
        if gpus > n:
            raise JobError(f"{gpus} GPUs were asked for but only {n} are visible")
        if gpus > 1 and not torch.distributed.is_available():
            raise JobError("this torch build has no torch.distributed: multi-GPU jobs need it; use 1 GPU")

    def _reserve_checkpoint(self, base: str) -> Path:
        """A fresh output directory ``<root>/<base>[-N]``, created now so that no other
        job takes it (the trainer refuses to overwrite a directory holding a run)."""
        with self._db() as db:
            taken = {Path(r[0]).name for r in db.execute("SELECT checkpoint FROM jobs")}
        for i in range(1, 10_000):
            candidate = self.root / (base if i == 1 else f"{base}-{i}")
            if candidate.name in taken or candidate.name.lower() in RESERVED_NAMES:
                continue
            try:
                candidate.mkdir(parents=True)
            except FileExistsError:
                continue
            return candidate
        raise JobError(f"no free checkpoint name left for {base!r} under {self.root}")

    # ------------------------------------------------------------ scheduling
    def start_queued(self) -> list[int]:
        """Start queued local jobs, oldest first, while fewer than ``max_running`` run."""
        started = []
        while True:
            with self._db() as db:
                db.execute("BEGIN IMMEDIATE")  # claim atomically across processes
                running = db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'running' "
                                     "AND backend = 'local'").fetchone()[0]
                row = db.execute("SELECT id FROM jobs WHERE state = 'queued' AND backend = 'local' "
                                 "ORDER BY id LIMIT 1").fetchone()
                if row is None or running >= self.max_running:
                    db.execute("COMMIT")
                    return started
                job_id = row[0]
                db.execute("UPDATE jobs SET state = 'running', started = ?, pid = NULL, pid_start = NULL, "
                           "train_pid = NULL, train_pid_start = NULL WHERE id = ?", (time.time(), job_id))
                db.execute("COMMIT")
            self._spawn_worker(job_id)
            started.append(job_id)

    def _spawn_worker(self, job_id: int) -> None:
        job = self.get(job_id)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "MINBERT_JOBS_ROOT": str(self.root), TOKEN_VAR: job.token}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
        try:
            self._paths(job)
            with job.log_path.open("ab") as log:
                proc = subprocess.Popen(
                    [self.python, "-m", "core.jobs", "--root", str(self.root), "_worker", str(job_id)],
                    cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, close_fds=True)
        except (OSError, JobError) as e:
            self._update(job_id, state="failed", finished=time.time(), message=f"could not start the job: {e}")
            return
        _CHILDREN[proc.pid] = proc
        start = pid_start_time(proc.pid)
        self._update(job_id, pid=proc.pid, pid_start=start)
        self._spawn_watchdog(job_id, proc.pid, start, env)
        # The launcher watches its worker: one that dies without recording a result is
        # settled at once, not only at the next refresh.
        threading.Thread(target=self._watch_worker, args=(proc, job_id), daemon=True,
                         name=f"minbert-job-{job_id}-watch").start()

    def _spawn_watchdog(self, job_id: int, pid: int, start: int | None, env: dict) -> None:
        """The worker's watchdog (:func:`run_watchdog`): its own session, the job's token
        in its environment (so cancel stops it with the rest of the job)."""
        try:
            watchdog = subprocess.Popen(
                [self.python, "-m", "core.jobs", "--root", str(self.root), "_watchdog", str(job_id), str(pid),
                 str(start if start is not None else -1)],
                cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, close_fds=True)
        except OSError:
            return   # the fallbacks (watcher thread, refresh) still settle the job
        _CHILDREN[watchdog.pid] = watchdog

    def _watch_worker(self, proc: subprocess.Popen, job_id: int) -> None:
        proc.wait()
        _CHILDREN.pop(proc.pid, None)
        try:
            job = self.get(job_id)
            if job.state == "running" and job.pid == proc.pid:
                self._settle_dead(job)
                self.start_queued()
        except Exception:   # noqa: BLE001 - best effort; refresh() settles it otherwise
            pass

    # ------------------------------------------------------------ monitoring
    def refresh(self) -> list[Job]:
        """Settle active jobs whose run ended without reporting (dead local workers; Slurm
        jobs that ended, were requeued or vanished), start queued local jobs if slots freed
        up. Returns every job of every backend, newest first."""
        _reap()
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

    def _settle_dead(self, job: Job) -> None:
        """The worker is gone but the row still says running: it was killed."""
        # Whatever it left behind (trainer, torchrun and its workers) must not go on
        # writing the checkpoint.
        stop_job_processes((job.pid, job.pid_start), job.token, grace_s=5.0,
                           extra=[(job.train_pid, job.train_pid_start)])
        progress = job.progress()
        if progress.phase == "done":
            state, message = "succeeded", ""
        else:
            state = "failed"
            message = (f"the job's worker process (pid {job.pid}) died without reporting a result "
                       f"(killed, or the machine restarted). Last log lines:\n{job.log_tail(15)}").rstrip()
        if self._update(job.id, ["running"], state=state, finished=time.time(), message=message) \
                and state == "failed":
            self._maybe_auto_resume(job, "its worker died")

    def _maybe_auto_resume(self, job: Job, why: str) -> bool:
        """Requeue a failed ``auto_resume`` job, at most ``max_requeues`` times."""
        if not job.auto_resume:
            return False
        limit = self._cluster_or_default().max_requeues
        if job.attempt >= limit:
            return False
        try:
            self.resume(job.id, reason=f"automatic resume after {why} (attempt {job.attempt + 1} of {limit})")
        except MinbertError:
            return False
        return True

    # --------------------------------------------------------------- resume
    def resume(self, job_id: int | str, reason: str | None = None) -> Job:
        """Run a failed or cancelled job again in its checkpoint: with ``--resume`` from
        its last resume state when there is one (else from the start)."""
        job = self.get(job_id)
        if not job.resumable:
            raise JobError(f"job {job.id} is {job.state}; only failed or cancelled jobs can be resumed")
        job_dir, checkpoint = self._paths(job)
        runner = self.backend(job.backend)
        why = runner.unavailable()
        if why:
            raise JobError(f"cannot resume job {job.id} on {job.backend}: {why}")
        checkpoint.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(8)
        message = reason or f"resumed by the user (attempt {job.attempt + 1})"
        cluster_id = job.cluster_id
        mode = resume_args(checkpoint)
        note = {"--resume": "from its last resume state", "--overwrite": "from the start (no resume state)"}.get(
            mode[0] if mode else "", "from the start")
        with job.log_path.open("a") as log:
            log.write(f"[job {job.id}] {message}: continues {note}\n")
        if job.backend != "local":
            relaunched = Job(**{**asdict(job), "token": token, "attempt": job.attempt + 1})
            cluster_id = runner.launch(self, relaunched)
        if not self._update(job.id, list(RESUMABLE), state="queued", attempt=job.attempt + 1, token=token,
                            cluster_id=cluster_id, pid=None, pid_start=None, train_pid=None,
                            train_pid_start=None, finished=None, returncode=None, message=message):
            if job.backend != "local" and cluster_id:
                runner.stop(self, Job(**{**asdict(job), "cluster_id": cluster_id}), grace_s=0)
            raise JobError(f"job {job.id} changed state meanwhile; try again")
        if job.backend == "local":
            self.start_queued()
        return self.get(job.id)

    # --------------------------------------------------------------- cancel
    def cancel(self, job_id: int | str, grace_s: float = 10.0) -> Job:
        """Cancel a queued job, or stop a running one: SIGTERM to every process of the
        job, SIGKILL after ``grace_s`` seconds (``scancel`` for a Slurm job)."""
        job = self.get(job_id)
        if job.backend == "local" and job.state == "queued":
            if self._update(job.id, ["queued"], state="cancelled", finished=time.time(),
                            message="cancelled before it started"):
                return self.get(job.id)
            job = self.get(job.id)  # it started meanwhile
        if not job.active:
            raise JobError(f"job {job.id} is already {job.state}; only queued or running jobs can be cancelled")
        if not self._update(job.id, [job.state], state="cancelled", message="cancelled by the user"):
            return self.cancel(job.id, grace_s)   # it changed state meanwhile: look again
        try:
            self.backend(job.backend).stop(self, job, grace_s)
        except MinbertError:
            self._update(job.id, ["cancelled"], state=job.state, message=job.message)
            raise
        self._update(job.id, finished=time.time())
        self.start_queued()
        return self.get(job.id)

    # --------------------------------------------------------------- worker
    def run_worker(self, job_id: int) -> int:
        """Body of the job's worker process: run the trainer, record how it ended."""
        job = self.get(job_id)
        if job.state != "running" or job.backend != "local":
            return 0  # cancelled between claim and start
        # SIGTERM reaches the whole group: let the trainer die of it, then record.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            command = self.train_command(job)   # from the job's fields, not the database's command column
        except JobError as e:
            self._update(job.id, ["running"], state="failed", finished=time.time(), message=str(e))
            print(f"[job {job.id}] {e}", flush=True)
            return 1
        print(f"[job {job.id}] {' '.join(command)}", flush=True)
        self._update(job.id, command=json.dumps(command))
        try:
            proc = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL,
                                    preexec_fn=_trainer_preexec(os.getpid()))
        except OSError as e:
            self._update(job.id, ["running"], state="failed", finished=time.time(),
                         message=f"could not start the trainer: {e}")
            return 1
        self._update(job.id, train_pid=proc.pid, train_pid_start=pid_start_time(proc.pid))
        rc = proc.wait()
        progress = read_progress(job.train_log)
        finished = time.time()
        if rc == 0 and progress.phase == "done":
            state, message = "succeeded", ""
        elif rc < 0:
            state = "failed"
            message = f"the trainer was killed by {signal.Signals(-rc).name}"
        else:
            state = "failed"
            message = f"the trainer exited with code {rc}"
        if state == "failed":
            print(f"[job {job.id}] {message}", flush=True)
            message += f". Last log lines:\n{tail(job.log_path, 15)}"
        self._update(job.id, returncode=rc)
        if not self._update(job.id, ["running"], state=state, finished=finished, message=message):
            # cancelled meanwhile: make the event log say so too
            if self.get(job.id).state == "cancelled" and progress.phase not in ("done", "cancelled"):
                with job.train_log.open("a") as f:
                    f.write(json.dumps({"event": "cancelled", "time": round(finished, 3),
                                        "step": progress.step, "epoch": progress.epoch}) + "\n")
            print(f"[job {job.id}] cancelled", flush=True)
        else:
            print(f"[job {job.id}] {state} (exit code {rc})", flush=True)
            if state == "failed" and rc < 0:   # killed from outside (OOM killer, kill -9): not the recipe's fault
                self._maybe_auto_resume(job, f"the trainer was killed by {signal.Signals(-rc).name}")
        self.start_queued()
        return 0


# ----------------------------------------------------------------- watchdog
_PR_SET_PDEATHSIG = 1
try:   # resolved before any fork: preexec_fn runs between fork and exec
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):   # not Linux
    _prctl = None


def _trainer_preexec(worker_pid: int):
    """In the trainer, before exec: SIGTERM back to its default, and the kernel's
    parent-death signal set to SIGTERM, so the trainer stops the moment its worker dies
    (a worker that died before this line ran is caught by the ppid check)."""
    def run() -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
            if os.getppid() != worker_pid:
                os.kill(os.getpid(), signal.SIGTERM)
    return run


def wait_for_exit(pid: int, start: int | None, poll_s: float) -> None:
    """Block until process ``pid`` (started at ``start``) has ended: on a pidfd where the
    kernel offers one (woken at the exit itself), else by polling every ``poll_s`` s."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    try:
        while pid_alive(pid, start):
            if fd is not None:
                select.select([fd], [], [], poll_s)
            else:
                time.sleep(poll_s)
    finally:
        if fd is not None:
            os.close(fd)


def run_watchdog(jm: "JobManager", job_id: int, pid: int, start: int | None) -> int:
    """Body of a job's watchdog (``python -m core.jobs _watchdog ID PID START``): wait
    for the worker ``pid`` to end; if the job still says running with that worker, the
    worker died without recording a result: settle it (:meth:`JobManager._settle_dead`
    stops the orphaned trainer and every process with the job's token, marks the job
    failed or resumes it). Then start queued jobs (nobody else will)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    wait_for_exit(pid, start, env_float("MINBERT_WATCHDOG_S", 1.0, 0.05, 60.0))
    try:
        job = jm.get(job_id)
        if job.state == "running" and job.pid == pid:
            jm._settle_dead(job)
        jm.start_queued()
    except MinbertError:
        return 1
    return 0


def _memory_for(backend: str, resources: dict, procs: int) -> tuple[int | None, str]:
    """(bytes one training process may use, where) for the fit check at submission: this
    machine's memory shared by ``procs`` processes (local), the Slurm job's ``--mem`` per
    node shared by its processes (slurm; no check when no --mem is asked for)."""
    from core.config.limits import machine_memory
    if backend == "slurm":
        mem = resources.get("mem")
        if not mem:
            return None, ""
        per_node = max(1, int(resources.get("gpus_per_node") or procs))
        return mem_bytes(mem) // per_node, f"the Slurm job's --mem {mem} per process"
    return machine_memory() // max(1, procs), "this machine" + (f" per process ({procs})" if procs > 1 else "")


# --------------------------------------------------------------------- CLI
def fmt_duration(seconds: float | None) -> str:
    """The one duration format (CLI and app): "5s", "2m 05s", "1h 02m"; "–" for None."""
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m" if h else (f"{m}m {s:02d}s" if m else f"{s}s")


def _print_job(job: Job) -> None:
    d = job.to_dict()
    print(f"job {job.id}: {job.name} [{job.state}]")
    print(f"  progress   {d['progress'] * 100:.0f}%  (step {d['step']}/{d['total_steps'] or '?'}, "
          f"phase {d['phase']}, eta {fmt_duration(d['eta_s'])})")
    print(f"  recipe     {job.recipe} {' '.join('--set ' + o for o in job.overrides)}")
    print(f"  backend    {job.where}" + (f"   resources {json.dumps(job.resources)}" if job.resources else "")
          + (f"   attempt {job.attempt}" if job.attempt else "") + ("   auto-resume" if job.auto_resume else ""))
    print(f"  checkpoint {job.checkpoint}")
    print(f"  log        {job.log_path}")
    print(f"  pid        {job.pid}   duration {fmt_duration(job.duration_s())}")
    if job.message:
        print("  message    " + job.message.replace("\n", "\n             "))


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core.jobs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=None,
                   help="jobs root (default: $MINBERT_JOBS_ROOT or the repository's checkpoints/)")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("submit", help="validate a recipe and start (or queue) a training job")
    s.add_argument("--config", required=True, help="recipe YAML, e.g. configs/quick.yaml")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field (repeatable)")
    s.add_argument("--name", help="checkpoint name (default: the recipe's file name; -2, -3 ... if taken)")
    s.add_argument("--limit", type=int, help="train on a seeded, label-stratified sample of N examples of every training set")
    s.add_argument("--max-steps", type=int, help="stop after N optimizer steps")
    s.add_argument("--device", choices=DEVICES, default="auto")
    s.add_argument("--gpus", "--procs", type=int, default=1, dest="gpus",
                   help="processes per node: GPUs (more than 1 launches torchrun, NCCL), or CPU processes "
                        "(gloo) with --device cpu")
    s.add_argument("--backend", choices=BACKENDS, default=None,
                   help="where the job runs (default: cluster.yaml's backend or $MINBERT_BACKEND, else local)")
    g = s.add_argument_group("Slurm resources (default: <root>/cluster.yaml, $MINBERT_SLURM_*)")
    g.add_argument("--nodes", type=int)
    g.add_argument("--gpus-per-node", type=int)
    g.add_argument("--cpus-per-task", type=int)
    g.add_argument("--mem", help="memory per node, e.g. 32G")
    g.add_argument("--time", help="time limit, e.g. 4:00:00")
    g.add_argument("--partition")
    s.add_argument("--auto-resume", action="store_true",
                   help="resume the job automatically (at most slurm.max_requeues times) when its worker dies "
                        "or its Slurm job times out, is preempted or loses its node")
    st_ = sub.add_parser("status", help="one job's state and progress")
    st_.add_argument("id")
    st_.add_argument("--json", action="store_true")
    ls = sub.add_parser("list", help="all jobs (local and cluster), newest first")
    ls.add_argument("--json", action="store_true")
    c = sub.add_parser("cancel", help="cancel a queued or running job")
    c.add_argument("id")
    r = sub.add_parser("resume", help="run a failed or cancelled job again from its last resume state")
    r.add_argument("id")
    lg = sub.add_parser("log", help="the last lines of a job's log")
    lg.add_argument("id")
    lg.add_argument("-n", type=int, default=40)
    w = sub.add_parser("_worker", help=argparse.SUPPRESS)
    w.add_argument("id", type=int)
    wd = sub.add_parser("_watchdog", help=argparse.SUPPRESS)
    wd.add_argument("id", type=int)
    wd.add_argument("pid", type=int)
    wd.add_argument("start", type=int)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        jm = JobManager(args.root, sweep=args.command not in ("_worker", "_watchdog"))
        if args.command == "_worker":
            return jm.run_worker(args.id)
        if args.command == "_watchdog":
            return run_watchdog(jm, args.id, args.pid, None if args.start < 0 else args.start)
        if args.command == "submit":
            resources = {k: getattr(args, k) for k in ("nodes", "gpus_per_node", "cpus_per_task", "mem", "time",
                                                       "partition") if getattr(args, k) is not None}
            job = jm.submit(args.config, args.set, name=args.name, limit=args.limit,
                            max_steps=args.max_steps, device=args.device, gpus=args.gpus,
                            backend=args.backend, resources=resources or None, auto_resume=args.auto_resume)
            where = f" as Slurm job {job.cluster_id}" if job.cluster_id else ""
            print(f"submitted job {job.id} ({job.state}){where}: checkpoint {job.checkpoint}, log {job.log_path}")
            print(job.id)
        elif args.command == "status":
            jm.refresh()
            job = jm.get(args.id)
            if args.json:
                print(json.dumps(job.to_dict()))
            else:
                _print_job(job)
        elif args.command == "list":
            jobs = jm.refresh()
            if args.json:
                print(json.dumps([j.to_dict() for j in jobs]))
            elif not jobs:
                print(f"no jobs in {jm.db_path}")
            else:
                print(f"{'id':>4}  {'state':<10} {'progress':>8}  {'eta':>7}  {'where':<12} name")
                for job in jobs:
                    d = job.to_dict()
                    print(f"{job.id:>4}  {job.state:<10} {d['progress'] * 100:>7.0f}%  "
                          f"{fmt_duration(d['eta_s']):>7}  {job.where:<12} {job.name}")
        elif args.command == "cancel":
            job = jm.cancel(args.id)
            print(f"job {job.id}: {job.state}")
        elif args.command == "resume":
            job = jm.resume(args.id)
            print(f"job {job.id}: {job.state} (attempt {job.attempt}"
                  + (f", Slurm job {job.cluster_id}" if job.backend == "slurm" else "") + ")")
        elif args.command == "log":
            print(jm.get(args.id).log_tail(args.n))
    except MinbertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

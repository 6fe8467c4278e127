"""The job database: the SQLite schema (``<root>/jobs.sqlite``, WAL mode, one short-lived
connection per call, safe across threads and processes), its queries, :class:`Job` (one
row, read defensively: an altered row never raises), the rules for where a job's files and
checkpoint live (:meth:`JobStore.paths`: a row that points elsewhere is refused, never
run), and the names a checkpoint may take. No processes, no Slurm, no torch.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from core.errors import JobError
from core.jobs.progress import Progress, read_progress
from core.paths import REPO
from core.settings import env_path

ACTIVE = ("queued", "running")
RESUMABLE = ("failed", "cancelled")
DB_NAME = "jobs.sqlite"
LOG_NAME = "job.log"
CONFIG_NAME = "config.yaml"
SCRIPT_NAME = "slurm.sh"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Names a job's checkpoint may not take: the zero-shot model, the shipped checkpoint,
# and the job root's own files.
RESERVED_NAMES = frozenset({"pretrained", "minbert-multitask", "jobs", DB_NAME, "cluster.yaml"})
MAX_PROCS_PER_NODE = 64
PID_MAX = 2**22           # Linux's largest pid_max (/proc/sys/kernel/pid_max)

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
        damaged; it never raises (the worker refuses to run such a job: :meth:`JobStore.paths`)."""
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


class JobStore:
    """The jobs table under ``root``: created (and migrated) on first use."""

    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "jobs").mkdir(exist_ok=True)
        self.db_path = self.root / DB_NAME
        with self.connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
            have = {r[1] for r in db.execute("PRAGMA table_info(jobs)")}
            for column, decl in _ADDED_COLUMNS:
                if column not in have:
                    try:
                        db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {decl}")
                    except sqlite3.OperationalError:
                        pass   # another process added it meanwhile

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """One short-lived connection per call (safe across threads and processes)."""
        try:
            conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        except sqlite3.Error as e:
            raise JobError(f"cannot open the job database {self.db_path}: {e}") from None
        conn.row_factory = sqlite3.Row
        with closing(conn):
            yield conn

    def update(self, job_id: int, only_if_state: Sequence[str] | None = None, **values) -> bool:
        """Set columns of job ``job_id`` (only while its state is one of ``only_if_state``,
        when given); True when the row changed."""
        sets = ", ".join(f"{k} = ?" for k in values)
        sql, args = f"UPDATE jobs SET {sets} WHERE id = ?", [*values.values(), job_id]
        if only_if_state:
            sql += f" AND state IN ({', '.join('?' * len(only_if_state))})"
            args += list(only_if_state)
        with self.connect() as db:
            return db.execute(sql, args).rowcount > 0

    def get(self, job_id: int | str) -> Job:
        try:
            job_id = int(job_id)
        except (TypeError, ValueError):
            raise JobError(f"job id must be a number, got {str(job_id)[:40]!r}") from None
        if not 1 <= job_id <= 2**63 - 1:
            raise JobError(f"no job {str(job_id)[:40]}: job ids are whole numbers from 1; "
                           f"`python -m core.jobs list` shows the jobs")
        with self.connect() as db:
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
        with self.connect() as db:
            rows = db.execute(sql + " ORDER BY id DESC", args).fetchall()
        return [Job.from_row(r) for r in rows]

    def count(self, states: Sequence[str]) -> int:
        with self.connect() as db:
            return db.execute(f"SELECT COUNT(*) FROM jobs WHERE state IN ({', '.join('?' * len(states))})",
                              list(states)).fetchone()[0]

    def claim_next_local(self, max_running: int) -> int | None:
        """Mark the oldest queued local job running (atomically across processes) while
        fewer than ``max_running`` run; its id, or None."""
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            running = db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'running' "
                                 "AND backend = 'local'").fetchone()[0]
            row = db.execute("SELECT id FROM jobs WHERE state = 'queued' AND backend = 'local' "
                             "ORDER BY id LIMIT 1").fetchone()
            if row is None or running >= max_running:
                db.execute("COMMIT")
                return None
            db.execute("UPDATE jobs SET state = 'running', started = ?, pid = NULL, pid_start = NULL, "
                       "train_pid = NULL, train_pid_start = NULL WHERE id = ?", (time.time(), row[0]))
            db.execute("COMMIT")
            return row[0]

    def paths(self, job: Job) -> tuple[Path, Path]:
        """The job's directory and checkpoint, checked against where this store puts
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

    def reserve_checkpoint(self, base: str) -> Path:
        """A fresh output directory ``<root>/<base>[-N]``, created now so that no other
        job takes it (the trainer refuses to overwrite a directory holding a run)."""
        with self.connect() as db:
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


def procs_of(job: Job) -> int:
    """The job's processes per node, checked (1 to :data:`MAX_PROCS_PER_NODE`)."""
    n = job.gpus
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_PROCS_PER_NODE:
        raise JobError(f"job {job.id}: {n!r} processes per node is not a whole number from 1 to "
                       f"{MAX_PROCS_PER_NODE}")
    return n


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


"""Background training jobs: submit, watch, cancel, and find them again after a restart.

    python -m core.jobs submit --config FILE [--set key=value ...] [--name NAME]
            [--limit N] [--max-steps N] [--device auto|cpu|cuda] [--gpus N]
    python -m core.jobs status ID [--json] | list [--json] | cancel ID | log ID [-n N]

A job is one ``python -m core.train`` run (``torchrun`` for several GPUs) in a process
group of its own, so it outlives the browser tab, the Streamlit server and the shell
that submitted it. Its state lives in SQLite (``<root>/jobs.sqlite``, WAL mode, one
connection per call), its files in ``<root>/jobs/<id>/`` (``config.yaml``: the resolved
recipe that runs; ``job.log``: stdout and stderr) and its checkpoint in ``<root>/<name>/``.

Each job runs under a small *worker* process (``python -m core.jobs _worker ID``, the
leader of the job's process group) that starts the trainer, waits for it, records its
exit code and final state, and then starts the next queued job. Jobs beyond
``max_running`` (default 1: training already uses every CPU core) wait as ``queued``.

Progress, ETA, loss curves and dev metrics are read from the checkpoint's
``train_log.jsonl`` (events ``start``, ``step``, ``eval``, ``checkpoint``, ``done``,
``error``, ``cancelled``; see ``core.train``). :meth:`JobManager.refresh` finds jobs
whose worker died without reporting (killed, machine rebooted): a pid that no longer
exists, is a zombie, or now belongs to another process (its start time differs) marks
the job failed, with the last lines of its log as the reason.

No Streamlit here: the app's Train page and this command line share this module.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from core.config import Config
from core.errors import ConfigError, JobError, MinbertError

REPO = Path(__file__).resolve().parents[1]
STATES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")
DEVICES = ("auto", "cpu", "cuda")
DB_NAME = "jobs.sqlite"
LOG_NAME = "job.log"
CONFIG_NAME = "config.yaml"
START_GRACE_S = 60.0      # a claimed job may take this long to record its worker's pid
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

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


def default_root() -> Path:
    """``$MINBERT_JOBS_ROOT`` if set, else the repository's ``checkpoints/``."""
    return Path(os.environ.get("MINBERT_JOBS_ROOT") or REPO / "checkpoints").resolve()


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
    eta_s: float | None = None
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
    for line in path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # the trainer may be writing this line right now
        kind, when = event.get("event"), event.get("time")
        progress.last_event = kind
        if kind == "start":
            progress.phase = "preparing"   # building the model, (frozen encoder) caching vectors
            progress.total_steps = event.get("total_steps")
            progress.epochs = event.get("epochs")
            progress.step = event.get("resumed_at_step") or 0
        elif kind == "stage":
            progress.phase = "training"
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
            anchor = (when, progress.step)  # dev evaluation time is not training speed
        elif kind == "done":
            progress.phase = "done"
        elif kind == "error":
            progress.phase, progress.error = "error", event.get("message")
        elif kind == "cancelled":
            progress.phase = "cancelled"
    if (progress.phase == "training" and progress.total_steps and anchor and last and None not in (*anchor, *last)
            and last[1] > anchor[1] and last[0] > anchor[0]):
        per_step = (last[0] - anchor[0]) / (last[1] - anchor[1])
        progress.eta_s = round(per_step * (progress.total_steps - progress.step), 1)
    return progress


# ------------------------------------------------------------------------ jobs
@dataclass
class Job:
    id: int
    name: str
    state: str
    recipe: str
    overrides: list[str]
    device: str
    gpus: int
    checkpoint: str
    job_dir: str
    command: list[str]
    pid: int | None
    pid_start: int | None
    train_pid: int | None
    train_pid_start: int | None
    created: float
    started: float | None
    finished: float | None
    returncode: int | None
    message: str

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
        if with_progress:
            p = self.progress()
            out.update(progress=1.0 if self.state == "succeeded" else round(p.fraction, 4),
                       phase=p.phase, step=p.step, total_steps=p.total_steps, epoch=p.epoch,
                       eta_s=p.eta_s if self.state == "running" else None,
                       duration_s=self.duration_s(), log=str(self.log_path), config=str(self.config_path))
        return out

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Job":
        d = dict(row)
        d["overrides"] = json.loads(d["overrides"])
        d["command"] = json.loads(d["command"])
        return cls(**d)


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
    live = [(p, s) for p, s in pids if pid_alive(p, s)]
    for pid, _ in live:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.time() + grace_s
    while time.time() < deadline and any(pid_alive(p, s) for p, s in live):
        time.sleep(0.1)
    for pid, start in live:
        if pid_alive(pid, start):
            _signal_group(pid, signal.SIGKILL)


# ------------------------------------------------------------------ manager
class JobManager:
    """Training jobs under ``root`` (default :func:`default_root`)."""

    def __init__(self, root: str | Path | None = None, max_running: int | None = None,
                 python: str | None = None):
        self.root = Path(root).resolve() if root is not None else default_root()
        self.max_running = max_running or int(os.environ.get("MINBERT_MAX_RUNNING_JOBS", "1"))
        self.python = python or sys.executable
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "jobs").mkdir(exist_ok=True)
        self.db_path = self.root / DB_NAME
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)

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
            raise JobError(f"job id must be a number, got {job_id!r}") from None
        with self._db() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobError(f"no job {job_id} in {self.db_path}; `python -m core.jobs list` shows the jobs")
        return Job.from_row(row)

    def list(self, states: Sequence[str] | None = None) -> list[Job]:
        """Jobs, newest first."""
        sql, args = "SELECT * FROM jobs", []
        if states:
            sql += f" WHERE state IN ({', '.join('?' * len(states))})"
            args = list(states)
        with self._db() as db:
            rows = db.execute(sql + " ORDER BY id DESC", args).fetchall()
        return [Job.from_row(r) for r in rows]

    # --------------------------------------------------------------- submit
    def submit(self, config: str | Path, overrides: Sequence[str] = (), name: str | None = None,
               limit: int | None = None, max_steps: int | None = None, device: str = "auto",
               gpus: int = 1) -> Job:
        """Validate the recipe with its overrides, then queue a job (and start it if a
        slot is free). A bad recipe raises :class:`ConfigError` and creates nothing."""
        recipe = Path(config)
        if not recipe.is_absolute() and not recipe.exists() and (REPO / recipe).exists():
            recipe = REPO / recipe
        recipe = recipe.resolve()
        if device not in DEVICES:
            raise JobError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
        if not isinstance(gpus, int) or gpus < 1:
            raise JobError(f"gpus must be a whole number >= 1, got {gpus!r}")
        overrides = [str(o) for o in overrides]
        if limit is not None:
            overrides.append(f"data.limit={limit}")
        if max_steps is not None:
            overrides.append(f"train.max_steps={max_steps}")
        overrides.append(f"train.device={'cuda' if gpus > 1 else device}")
        cfg = Config.from_yaml(recipe, overrides)  # raises ConfigError: nothing created yet
        if gpus > 1 or device == "cuda":
            self._check_gpus(gpus)
        data_dir = Path(cfg.data.dir)
        if not data_dir.is_absolute():
            data_dir = (REPO / data_dir).resolve()
        base = name if name is not None else recipe.stem
        if not NAME_RE.match(base or ""):
            raise JobError(f"job name {base!r} is not usable as a directory name: use letters, digits, "
                           f"'.', '_' or '-' (at most 64 characters, starting with a letter or digit)")
        checkpoint = self._reserve_checkpoint(base)
        cfg = cfg.with_overrides([f"name={json.dumps(checkpoint.name)}", f"data.dir={json.dumps(str(data_dir))}"])
        now = time.time()
        try:
            with self._db() as db:
                cur = db.execute(
                    "INSERT INTO jobs (name, state, recipe, overrides, device, gpus, checkpoint, job_dir, "
                    "created) VALUES (?, 'queued', ?, ?, ?, ?, ?, '', ?)",
                    (checkpoint.name, str(recipe), json.dumps(overrides), device, gpus, str(checkpoint), now))
                job_id = cur.lastrowid
                job_dir = self.root / "jobs" / str(job_id)
                job_dir.mkdir(parents=True, exist_ok=True)
                (job_dir / CONFIG_NAME).write_text(
                    f"# job {job_id}: {recipe}" + "".join(f" --set {o}" for o in overrides) + "\n" + cfg.to_yaml())
                command = self._train_command(job_dir / CONFIG_NAME, checkpoint, gpus)
                db.execute("UPDATE jobs SET job_dir = ?, command = ? WHERE id = ?",
                           (str(job_dir), json.dumps(command), job_id))
        except OSError as e:
            raise JobError(f"cannot create the job's files under {self.root}: {e}") from None
        self.start_queued()
        return self.get(job_id)

    def _check_gpus(self, gpus: int) -> None:
        import torch
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise JobError("a GPU was asked for but no CUDA GPU is visible on this machine; choose cpu or auto")
        if gpus > n:
            raise JobError(f"{gpus} GPUs were asked for but only {n} are visible")
        if gpus > 1:
            import core.train
            if not getattr(core.train, "SUPPORTS_TORCHRUN", False):
                raise JobError("multi-GPU (torchrun) jobs need a trainer with distributed support; this "
                               "core.train has none, so use 1 GPU")

    def _reserve_checkpoint(self, base: str) -> Path:
        """A fresh output directory ``<root>/<base>[-N]``, created now so that no other
        job takes it (the trainer refuses to overwrite a directory holding a run)."""
        with self._db() as db:
            taken = {Path(r[0]).name for r in db.execute("SELECT checkpoint FROM jobs")}
        for i in range(1, 10_000):
            candidate = self.root / (base if i == 1 else f"{base}-{i}")
            if candidate.name in taken or candidate.name in ("jobs", DB_NAME):
                continue
            try:
                candidate.mkdir(parents=True)
            except FileExistsError:
                continue
            return candidate
        raise JobError(f"no free checkpoint name left for {base!r} under {self.root}")

    def _train_command(self, config_path: Path, checkpoint: Path, gpus: int) -> list[str]:
        if gpus > 1:
            head = [self.python, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={gpus}", "-m", "core.train"]
        else:
            head = [self.python, "-m", "core.train"]
        return head + ["--config", str(config_path), "--out", str(checkpoint), "--no-progress"]

    # ------------------------------------------------------------ scheduling
    def start_queued(self) -> list[int]:
        """Start queued jobs, oldest first, while fewer than ``max_running`` run."""
        started = []
        while True:
            with self._db() as db:
                db.execute("BEGIN IMMEDIATE")  # claim atomically across processes
                running = db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'running'").fetchone()[0]
                row = db.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1").fetchone()
                if row is None or running >= self.max_running:
                    db.execute("COMMIT")
                    return started
                job_id = row[0]
                db.execute("UPDATE jobs SET state = 'running', started = ? WHERE id = ?", (time.time(), job_id))
                db.execute("COMMIT")
            self._spawn_worker(job_id)
            started.append(job_id)

    def _spawn_worker(self, job_id: int) -> None:
        job = self.get(job_id)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "MINBERT_JOBS_ROOT": str(self.root)}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
        try:
            with job.log_path.open("ab") as log:
                proc = subprocess.Popen(
                    [self.python, "-m", "core.jobs", "--root", str(self.root), "_worker", str(job_id)],
                    cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, close_fds=True)
        except OSError as e:
            self._update(job_id, state="failed", finished=time.time(), message=f"could not start the job: {e}")
            return
        _CHILDREN[proc.pid] = proc
        self._update(job_id, pid=proc.pid, pid_start=pid_start_time(proc.pid))

    # ------------------------------------------------------------ monitoring
    def refresh(self) -> list[Job]:
        """Find running jobs whose worker died without reporting and settle them; start
        queued jobs if slots freed up. Returns every job, newest first."""
        _reap()
        for job in self.list(["running"]):
            if job.pid is None:
                if time.time() - (job.started or job.created) > START_GRACE_S:
                    self._update(job.id, ["running"], state="failed", finished=time.time(),
                                 message="the job's worker never started")
                continue
            if pid_alive(job.pid, job.pid_start):
                continue
            self._settle_dead(job)
        self.start_queued()
        return self.list()

    def _settle_dead(self, job: Job) -> None:
        """The worker is gone but the row still says running: it was killed."""
        # A trainer left behind by a killed worker must not go on writing the checkpoint.
        _stop_processes([(job.train_pid, job.train_pid_start)], grace_s=5.0)
        progress = job.progress()
        if progress.phase == "done":
            state, message = "succeeded", ""
        else:
            state = "failed"
            message = (f"the job's worker process (pid {job.pid}) died without reporting a result "
                       f"(killed, or the machine restarted). Last log lines:\n{job.log_tail(15)}").rstrip()
        self._update(job.id, ["running"], state=state, finished=time.time(), message=message)

    # --------------------------------------------------------------- cancel
    def cancel(self, job_id: int | str, grace_s: float = 10.0) -> Job:
        """Cancel a queued job, or stop a running one: SIGTERM to its process group,
        SIGKILL after ``grace_s`` seconds."""
        job = self.get(job_id)
        if job.state == "queued":
            if self._update(job.id, ["queued"], state="cancelled", finished=time.time(),
                            message="cancelled before it started"):
                return self.get(job.id)
            job = self.get(job.id)  # it started meanwhile
        if job.state != "running":
            raise JobError(f"job {job.id} is already {job.state}; only queued or running jobs can be cancelled")
        self._update(job.id, ["running"], state="cancelled", message="cancelled by the user")
        _stop_processes([(job.pid, job.pid_start), (job.train_pid, job.train_pid_start)], grace_s)
        self._update(job.id, finished=time.time())
        self.start_queued()
        return self.get(job.id)

    # --------------------------------------------------------------- worker
    def run_worker(self, job_id: int) -> int:
        """Body of the job's worker process: run the trainer, record how it ended."""
        job = self.get(job_id)
        if job.state != "running":
            return 0  # cancelled between claim and start
        # SIGTERM reaches the whole group: let the trainer die of it, then record.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print(f"[job {job.id}] {' '.join(job.command)}", flush=True)
        try:
            proc = subprocess.Popen(job.command, cwd=REPO, stdin=subprocess.DEVNULL,
                                    preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
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
        self.start_queued()
        return 0


# --------------------------------------------------------------------- CLI
def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _print_job(job: Job) -> None:
    d = job.to_dict()
    print(f"job {job.id}: {job.name} [{job.state}]")
    print(f"  progress   {d['progress'] * 100:.0f}%  (step {d['step']}/{d['total_steps'] or '?'}, "
          f"phase {d['phase']}, eta {_fmt_duration(d['eta_s'])})")
    print(f"  recipe     {job.recipe} {' '.join('--set ' + o for o in job.overrides)}")
    print(f"  checkpoint {job.checkpoint}")
    print(f"  log        {job.log_path}")
    print(f"  pid        {job.pid}   duration {_fmt_duration(job.duration_s())}")
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
    s.add_argument("--limit", type=int, help="keep the first N examples of every training set")
    s.add_argument("--max-steps", type=int, help="stop after N optimizer steps")
    s.add_argument("--device", choices=DEVICES, default="auto")
    s.add_argument("--gpus", type=int, default=1, help="GPUs to use; more than 1 launches torchrun")
    st_ = sub.add_parser("status", help="one job's state and progress")
    st_.add_argument("id")
    st_.add_argument("--json", action="store_true")
    ls = sub.add_parser("list", help="all jobs, newest first")
    ls.add_argument("--json", action="store_true")
    c = sub.add_parser("cancel", help="cancel a queued or running job")
    c.add_argument("id")
    lg = sub.add_parser("log", help="the last lines of a job's log")
    lg.add_argument("id")
    lg.add_argument("-n", type=int, default=40)
    w = sub.add_parser("_worker", help=argparse.SUPPRESS)
    w.add_argument("id", type=int)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        jm = JobManager(args.root)
        if args.command == "_worker":
            return jm.run_worker(args.id)
        if args.command == "submit":
            job = jm.submit(args.config, args.set, name=args.name, limit=args.limit,
                            max_steps=args.max_steps, device=args.device, gpus=args.gpus)
            print(f"submitted job {job.id} ({job.state}): checkpoint {job.checkpoint}, log {job.log_path}")
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
                print(f"{'id':>4}  {'state':<10} {'progress':>8}  {'eta':>7}  name")
                for job in jobs:
                    d = job.to_dict()
                    print(f"{job.id:>4}  {job.state:<10} {d['progress'] * 100:>7.0f}%  "
                          f"{_fmt_duration(d['eta_s']):>7}  {job.name}")
        elif args.command == "cancel":
            job = jm.cancel(args.id)
            print(f"job {job.id}: {job.state}")
        elif args.command == "log":
            print(jm.get(args.id).log_tail(args.n))
    except MinbertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

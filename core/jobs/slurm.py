"""The Slurm side of training jobs: resources, cluster defaults, the batch script, and
Slurm's job states, through the plain Slurm commands ``sbatch``, ``squeue``/``scontrol``
and ``scancel`` (see ``docs/backends.md`` for why not submitit).

The job manager (:mod:`core.jobs.manager`) owns the jobs and :class:`core.jobs.backends.SlurmBackend`
runs them through this module, which only knows Slurm:

* :class:`Resources`: what a job asks Slurm for (nodes, GPUs per node, CPUs per task,
  memory, time limit, partition), validated before anything is submitted, with defaults
  from ``<jobs root>/cluster.yaml`` and ``MINBERT_SLURM_*`` environment variables
  (:func:`load_cluster`).
* :func:`batch_script`: the ``sbatch`` script of a job, rebuilt from the job's fields on
  every (re)submission. One ``srun`` task per node; more than one process per node (or
  more than one node) runs ``torchrun`` on every node with a c10d rendezvous on the
  job's first node. The trainer's arguments and the script's resume-or-overwrite test
  come from :mod:`core.jobs.launch` (the one owner of both rules): ``--resume`` when the
  checkpoint holds resume state, so a job that Slurm requeues (preemption, ``scontrol requeue``,
  node failure with ``--requeue``) continues where it was.
* :func:`map_state`: Slurm's job states (squeue(1), "JOB STATE CODES") onto the app's
  ``queued | running | succeeded | failed | cancelled``.
* :class:`SlurmClient`: thin, typed wrappers of the commands; errors become
  :class:`core.errors.JobError` with Slurm's own message.

Job states are read from ``scontrol show job`` (the controller keeps finished jobs for
``MinJobAge``, 300 s by default), not from ``sacct``, which needs ``slurmdbd``; for a job
the controller has forgotten, the exit code the script leaves in the job directory and
the checkpoint's ``train_log.jsonl`` decide. No Streamlit here.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from core.errors import JobError
from core.jobs.launch import launcher, resume_mode_shell, trainer_args

CLUSTER_FILE = "cluster.yaml"
BACKENDS = ("local", "slurm")
EXIT_FILE = "slurm-exit-{}"     # in the job directory, per Slurm job id: the trainer's exit code

# ------------------------------------------------------------------ states
# squeue(1) / scontrol(1) job state names, grouped by what the app shows.
PENDING_STATES = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
                            "RESV_DEL_HOLD"})
FAILED_STATES = frozenset({"FAILED", "NODE_FAIL", "BOOT_FAIL", "TIMEOUT", "PREEMPTED", "OUT_OF_MEMORY",
                           "DEADLINE", "SPECIAL_EXIT", "REVOKED"})
# Ends that are not the recipe's fault: requeued automatically for a job submitted with
# auto-resume (up to ``max_requeues`` times), and resumable by hand otherwise.
REQUEUE_STATES = frozenset({"TIMEOUT", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL"})

STATE_TEXT = {
    "FAILED": "the job's script exited with a non-zero code",
    "NODE_FAIL": "a node of the job failed",
    "BOOT_FAIL": "a node of the job failed to boot",
    "TIMEOUT": "the job reached its time limit",
    "PREEMPTED": "the job was preempted by another job",
    "OUT_OF_MEMORY": "the job ran out of memory (raise --mem)",
    "DEADLINE": "the job reached its deadline",
    "SPECIAL_EXIT": "the job was held after a special exit",
    "REVOKED": "the job was revoked (federation)",
    "CANCELLED": "the job was cancelled outside minBERT (scancel, an administrator, or a signal)",
    "COMPLETED": "the job completed",
}


def map_state(slurm_state: str) -> str:
    """Slurm's state name -> ``queued | running | succeeded | failed | cancelled``.

    ``COMPLETED`` maps to ``succeeded`` (the caller still checks that the trainer logged
    ``done``); ``CANCELLED`` maps to ``cancelled`` (the caller turns it into ``failed``
    when the cancel did not come from us). An unknown state name counts as running: it
    is still in the controller, so it has not ended."""
    s = (slurm_state or "").split()[0].upper().rstrip("+") if slurm_state else ""
    if s in PENDING_STATES:
        return "queued"
    if s == "COMPLETED":
        return "succeeded"
    if s == "CANCELLED":
        return "cancelled"
    if s in FAILED_STATES:
        return "failed"
    return "running"


# --------------------------------------------------------------- resources
# sbatch(1) --time: "minutes", "minutes:seconds", "hours:minutes:seconds", "days-hours",
# "days-hours:minutes" and "days-hours:minutes:seconds".
_TIME_RE = re.compile(r"^(?:(?P<d>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?"
                      r"|(?P<a>\d+)(?::(?P<b>\d+)(?::(?P<c>\d+))?)?)$", re.ASCII)
# sbatch(1) --mem: "Default units are megabytes. Different units can be specified using
# the suffix [K|M|G|T]."
_MEM_RE = re.compile(r"^[0-9]{1,12}[KMGT]?$")
_MEM_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def mem_bytes(text: str) -> int:
    """Bytes of a Slurm ``--mem`` size ("32G"; a bare number is megabytes, sbatch(1))."""
    text = str(text).strip().upper()
    if not _MEM_RE.match(text):
        raise JobError(f"memory {text[:40]!r} is not a Slurm size: a number of megabytes, or with K, M, G or T "
                       f"(e.g. 32G)")
    unit = text[-1] if text[-1] in _MEM_UNITS else "M"
    return int(text.rstrip("KMGT")) * _MEM_UNITS[unit]
_PARTITION_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}(,[A-Za-z0-9_.-]{1,64})*$")


def time_limit_seconds(text: str) -> int:
    """Seconds in a Slurm time limit; :class:`JobError` for text Slurm would not take."""
    m = _TIME_RE.match(str(text).strip()) if len(str(text)) <= 32 else None
    if not m:
        raise JobError(f"time limit {str(text)[:40]!r} is not a Slurm time: use minutes, MM:SS, HH:MM:SS, D-HH, "
                       f"D-HH:MM or D-HH:MM:SS (e.g. 4:00:00 for four hours)")
    g = {k: int(v) for k, v in m.groupdict().items() if v is not None}
    if "d" in g:
        return g["d"] * 86400 + g["dh"] * 3600 + g.get("dm", 0) * 60 + g.get("ds", 0)
    if "c" in g:
        return g["a"] * 3600 + g["b"] * 60 + g["c"]
    return g["a"] * 60 + g.get("b", 0)


@dataclass
class Resources:
    """What one Slurm job asks for. ``None`` leaves a value to the cluster's defaults."""
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 2
    mem: str | None = None          # per node, e.g. 32G
    time: str | None = None         # e.g. 4:00:00
    partition: str | None = None

    LIMITS = {"nodes": (1, 1024), "gpus_per_node": (0, 64), "cpus_per_task": (1, 1024)}

    def validated(self) -> "Resources":
        for name, (lo, hi) in self.LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                try:
                    value = int(str(value).strip())
                except ValueError:
                    raise JobError(f"{name} must be a whole number, got {str(value)[:40]!r}") from None
                setattr(self, name, value)
            if not lo <= value <= hi:
                raise JobError(f"{name} must be between {lo} and {hi}, got {value}")
        for name in ("mem", "time", "partition"):
            value = getattr(self, name)
            if value is not None:
                value = str(value).strip() or None
                setattr(self, name, value)
        if self.mem is not None:
            self.mem = self.mem.upper()
            if not _MEM_RE.match(self.mem):
                raise JobError(f"memory {self.mem[:40]!r} is not a Slurm size: a number of megabytes, or with "
                               f"K, M, G or T (e.g. 32G)")
        if self.time is not None:
            time_limit_seconds(self.time)
        if self.partition is not None and not _PARTITION_RE.match(self.partition):
            raise JobError(f"partition {self.partition!r} is not a partition name (letters, digits, '_', '.', "
                           f"'-'; several separated by commas)")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "Resources":
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise JobError(f"unknown resource field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**d).validated()


@dataclass
class Cluster:
    """Site settings: ``<jobs root>/cluster.yaml`` overridden by the environment.

    ::

        backend: slurm            # default backend of new jobs (local if absent)
        slurm:
          partition: gpu          # any Resources field: defaults of the Train form / CLI
          nodes: 1
          gpus_per_node: 1
          cpus_per_task: 8
          mem: 32G
          time: "4:00:00"
          python: /shared/venv/bin/python   # the interpreter on the compute nodes
          setup: ["module load cuda"]       # shell lines run before training
          sbatch_args: ["--account=nlp"]    # further #SBATCH lines
          max_requeues: 3                   # automatic resubmissions of an auto-resume job
          rdzv_port: 29400                  # torchrun rendezvous port base on the first node

    Environment (wins over the file): ``MINBERT_BACKEND``, ``MINBERT_SLURM_NODES``,
    ``MINBERT_SLURM_GPUS_PER_NODE``, ``MINBERT_SLURM_CPUS_PER_TASK``, ``MINBERT_SLURM_MEM``,
    ``MINBERT_SLURM_TIME``, ``MINBERT_SLURM_PARTITION``, ``MINBERT_SLURM_PYTHON``."""
    backend: str = "local"
    resources: Resources = field(default_factory=Resources)
    python: str | None = None
    setup: list[str] = field(default_factory=list)
    sbatch_args: list[str] = field(default_factory=list)
    max_requeues: int = 3
    rdzv_port: int = 29400
    source: str = "built-in defaults"


ENV_RESOURCES = {"nodes": "MINBERT_SLURM_NODES", "gpus_per_node": "MINBERT_SLURM_GPUS_PER_NODE",
                 "cpus_per_task": "MINBERT_SLURM_CPUS_PER_TASK", "mem": "MINBERT_SLURM_MEM",
                 "time": "MINBERT_SLURM_TIME", "partition": "MINBERT_SLURM_PARTITION"}
_SLURM_KEYS = {f.name for f in fields(Resources)} | {"python", "setup", "sbatch_args", "max_requeues", "rdzv_port"}


def _str_list(value, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and "\n" not in v and "\r" not in v
                                              for v in value):
        raise JobError(f"{CLUSTER_FILE}: slurm.{key} must be a list of one-line strings")
    return list(value)


def load_cluster(root: str | Path, env: dict | None = None) -> Cluster:
    """The site settings for jobs under ``root``: built-in defaults < ``root/cluster.yaml``
    < environment. A malformed file or value raises :class:`JobError` naming it."""
    env = os.environ if env is None else env
    path = Path(root) / CLUSTER_FILE
    data: dict = {}
    sources = []
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise JobError(f"{path} is not readable YAML: {e}") from None
        if not isinstance(data, dict):
            raise JobError(f"{path} must be a mapping with the keys backend and slurm")
        sources.append(str(path))
    unknown = sorted(set(data) - {"backend", "slurm"})
    if unknown:
        raise JobError(f"{path}: unknown key(s) {', '.join(unknown)}; known: backend, slurm")
    slurm = data.get("slurm") or {}
    if not isinstance(slurm, dict):
        raise JobError(f"{path}: slurm must be a mapping")
    unknown = sorted(set(slurm) - _SLURM_KEYS)
    if unknown:
        raise JobError(f"{path}: unknown key(s) slurm.{', slurm.'.join(unknown)}; known: {', '.join(sorted(_SLURM_KEYS))}")
    res = {k: slurm[k] for k in (f.name for f in fields(Resources)) if k in slurm}
    for key, var in ENV_RESOURCES.items():
        if env.get(var):
            res[key] = env[var]
            sources.append(f"${var}")
    try:
        resources = Resources.from_dict(res)
    except JobError as e:
        raise JobError(f"cluster defaults ({', '.join(sources) or 'built-in'}): {e}") from None
    backend = str(env.get("MINBERT_BACKEND") or data.get("backend") or "local")
    if backend not in BACKENDS:
        raise JobError(f"backend {backend!r} (from {'$MINBERT_BACKEND' if env.get('MINBERT_BACKEND') else path}) "
                       f"is not one of {', '.join(BACKENDS)}")
    ints = {}
    for key, default, lo, hi in (("max_requeues", 3, 0, 100), ("rdzv_port", 29400, 1024, 65000)):
        value = slurm.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise JobError(f"{path}: slurm.{key} must be a whole number from {lo} to {hi}, got {value!r}")
        ints[key] = value
    python = env.get("MINBERT_SLURM_PYTHON") or slurm.get("python")
    if python is not None and (not isinstance(python, str) or "\n" in python):
        raise JobError(f"{path}: slurm.python must be a path to a Python interpreter")
    return Cluster(backend=backend, resources=resources, python=python,
                   setup=_str_list(slurm.get("setup"), "setup"),
                   sbatch_args=_str_list(slurm.get("sbatch_args"), "sbatch_args"),
                   source=", ".join(sources) or "built-in defaults", **ints)


# ----------------------------------------------------------------- script
def batch_script(*, job_id: int, job_dir: Path, checkpoint: Path, config_path: Path, repo: Path,
                 python: str, procs_per_node: int, resources: Resources, cluster: Cluster,
                 token: str) -> str:
    """The ``sbatch`` script of a job. Every value in it comes from the job's validated
    fields (paths under the jobs root, whole numbers, validated Slurm sizes), quoted for
    the shell; nothing is taken from a stored command line."""
    q = shlex.quote
    r = resources
    for what, path in (("job directory", job_dir), ("repository", repo)):
        if any(c.isspace() for c in str(path)):
            raise JobError(f"the {what} {path} contains white space, which #SBATCH lines cannot carry: "
                           f"use a jobs root and a checkout without spaces for Slurm jobs")
    lines = ["#!/bin/bash",
             f"#SBATCH --job-name=minbert-{int(job_id)}",
             f"#SBATCH --output={job_dir / 'job.log'}",
             "#SBATCH --open-mode=append",
             f"#SBATCH --chdir={repo}",
             f"#SBATCH --nodes={r.nodes}",
             "#SBATCH --ntasks-per-node=1",
             f"#SBATCH --cpus-per-task={r.cpus_per_task}",
             "#SBATCH --requeue"]
    if r.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={r.gpus_per_node}")
    if r.mem:
        lines.append(f"#SBATCH --mem={r.mem}")
    if r.time:
        lines.append(f"#SBATCH --time={r.time}")
    if r.partition:
        lines.append(f"#SBATCH --partition={r.partition}")
    lines += [f"#SBATCH {a}" for a in cluster.sbatch_args]
    lines += [f"# minBERT job {int(job_id)}: written by core.jobs.manager from the job's fields; rebuilt on every submission.",
              *cluster.setup,
              f"export PYTHONUNBUFFERED=1 MINBERT_JOB_TOKEN={q(token)}",
              f'export PYTHONPATH={q(str(repo))}"${{PYTHONPATH:+:$PYTHONPATH}}"',
              f"CKPT={q(str(checkpoint))}",
              "# resume state in the checkpoint (a requeued, preempted or resumed job): continue from it;",
              "# an earlier attempt without resume state: start again.",
              *resume_mode_shell("CKPT", "MODE"),
              f'echo "[job {int(job_id)}] Slurm job $SLURM_JOB_ID (restart ${{SLURM_RESTART_COUNT:-0}}) on '
              f'$SLURM_JOB_NODELIST ${{MODE[*]}}"']
    train = trainer_args(q(str(config_path)), '"$CKPT"', mode=['"${MODE[@]}"'])
    # srun does not inherit sbatch's --cpus-per-task since Slurm 22.05: ask again
    srun = ["srun", "--kill-on-bad-exit=1", f"--cpus-per-task={r.cpus_per_task}"]
    if r.nodes == 1 and procs_per_node == 1:
        lines.append(" ".join([*srun, q(python), *train]))
    else:
        torchrun = launcher(q(python), procs_per_node, before=['--nnodes="$SLURM_JOB_NUM_NODES"'],
                            after=["--rdzv_backend=c10d", '--rdzv_endpoint="$HEAD:$PORT"', '--rdzv_id="$SLURM_JOB_ID"'])
        lines += ['HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
                  f"PORT=$(( {cluster.rdzv_port} + SLURM_JOB_ID % 1000 ))",
                  " ".join([*srun, "--ntasks-per-node=1", *torchrun, *train])]
    lines += ["RC=$?",
              f'echo "$RC" > {q(str(job_dir))}/"slurm-exit-$SLURM_JOB_ID"',
              f'echo "[job {int(job_id)}] trainer exited with code $RC"',
              'exit "$RC"', ""]
    return "\n".join(lines)


# ----------------------------------------------------------------- client
@dataclass
class SlurmJob:
    """One job as ``scontrol show job`` reports it."""
    id: str
    state: str
    reason: str = ""
    exit_code: str = ""
    nodes: str = ""
    restarts: int = 0


_KV_RE = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=(\S*)")
_CACHE: dict[tuple[str, str], tuple[float, SlurmJob | None]] = {}
CACHE_S = 2.0


class SlurmClient:
    """``sbatch``, ``scontrol``, ``scancel``, run with this process's environment (so
    ``SLURM_CONF`` picks the cluster)."""

    COMMANDS = ("sbatch", "squeue", "scontrol", "scancel")

    def __init__(self, timeout_s: float = 30.0):
        self.timeout_s = timeout_s

    def unavailable(self) -> str | None:
        """Why this machine cannot submit to Slurm (None when it can)."""
        missing = [c for c in self.COMMANDS if shutil.which(c) is None]
        if missing:
            return (f"the Slurm commands {', '.join(missing)} are not on PATH: run the app on a "
                    f"machine that can submit to your cluster (a login node)")
        return None

    def _run(self, args: list[str]) -> subprocess.CompletedProcess:
        reason = self.unavailable()
        if reason:
            raise JobError(reason)
        try:
            return subprocess.run(args, capture_output=True, text=True, timeout=self.timeout_s,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise JobError(f"`{' '.join(args)}` did not answer within {self.timeout_s:.0f} s: is slurmctld up?") from None
        except OSError as e:
            raise JobError(f"cannot run {args[0]}: {e}") from None

    def submit(self, script: Path) -> str:
        out = self._run(["sbatch", "--parsable", str(script)])
        if out.returncode != 0:
            raise JobError(f"sbatch refused the job: {(out.stderr or out.stdout).strip()}")
        job_id = out.stdout.strip().split(";")[0]
        if not job_id.isdigit():
            raise JobError(f"sbatch printed no job id: {out.stdout.strip()!r} {out.stderr.strip()!r}")
        return job_id

    def job(self, job_id: str, max_age_s: float = CACHE_S) -> SlurmJob | None:
        """The job's state, or None when the controller no longer knows it."""
        key = (os.environ.get("SLURM_CONF", ""), str(job_id))
        hit = _CACHE.get(key)
        if hit and time.monotonic() - hit[0] < max_age_s:
            return hit[1]
        out = self._run(["scontrol", "show", "job", "-o", str(job_id)])
        if out.returncode != 0:
            if "Invalid job id" in out.stderr or "Invalid job id" in out.stdout:
                info = None
            else:
                raise JobError(f"scontrol cannot read Slurm job {job_id}: {(out.stderr or out.stdout).strip()}")
        else:
            kv = dict(_KV_RE.findall(out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""))
            if "JobState" not in kv:
                info = None
            else:
                info = SlurmJob(id=kv.get("JobId", str(job_id)), state=kv["JobState"],
                                reason=kv.get("Reason", ""), exit_code=kv.get("ExitCode", ""),
                                nodes=kv.get("NodeList", ""), restarts=int(kv.get("Restarts", "0") or 0))
        _CACHE[key] = (time.monotonic(), info)
        return info

    def cancel(self, job_id: str, signal: str | None = None) -> None:
        args = ["scancel", *([f"--signal={signal}"] if signal else []), str(job_id)]
        out = self._run(args)
        _CACHE.pop((os.environ.get("SLURM_CONF", ""), str(job_id)), None)
        if out.returncode != 0 and "Invalid job id" not in out.stderr:
            raise JobError(f"scancel failed for Slurm job {job_id}: {(out.stderr or out.stdout).strip()}")

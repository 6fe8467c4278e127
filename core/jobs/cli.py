"""Background training jobs: submit, watch, cancel, resume, and find them again after a restart.

    python -m core.jobs submit --config FILE [--set key=value ...] [--name NAME]
            [--limit N] [--max-steps N] [--device auto|cpu|cuda] [--gpus N]
            [--backend local|slurm] [--nodes N] [--gpus-per-node N] [--cpus-per-task N]
            [--mem 32G] [--time 4:00:00] [--partition P] [--auto-resume]
    python -m core.jobs status ID [--json] | list [--json] | cancel ID | resume ID | log ID [-n N]

A job is one ``python -m core.train`` run (``torchrun`` for several processes) on one of
two *backends* behind one interface (:class:`core.jobs.backends.Backend`):

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
:meth:`core.jobs.manager.JobManager.refresh` and the first open of a job root settle dead workers too: a
pid that no longer exists, is a zombie, or now belongs to another process (its start
time differs) marks the job failed, with the last lines of its log as the reason. Stopping a job stops every process that
carries the job's token in its environment (the worker, torchrun, and torchrun's
workers, which run in sessions of their own), then the worker's process group.

No Streamlit here: the app's Train page and this command line share :class:`core.jobs.manager.JobManager`.
This module owns the command line (``python -m core.jobs``); where each piece lives:
:mod:`core.jobs.manager`.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from core.errors import MinbertError
from core.jobs.manager import JobManager
from core.jobs.progress import fmt_duration
from core.jobs.slurm import BACKENDS
from core.jobs.store import Job
from core.jobs.submission import DEVICES
from core.jobs.worker import run_watchdog, run_worker


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
            return run_worker(jm, args.id)
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

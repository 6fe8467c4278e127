"""The processes of a local job: the children this process started (reaped so they do
not linger as zombies), the job's processes found by the token in their environment,
stopping them all (SIGTERM, then SIGKILL), the trainer's parent-death signal, and
waiting for a process to end. Whether a pid is alive is core.atomic's rule
(:func:`core.atomic.pid_alive`).
"""
from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Sequence

from core.atomic import pid_alive, pid_start_time

TOKEN_VAR = "MINBERT_JOB_TOKEN"

# Workers started by this process: polled so that finished ones do not linger as zombies.
_CHILDREN: dict[int, subprocess.Popen] = {}


def adopt(proc: subprocess.Popen) -> None:
    """Remember a child this process started (a worker, a watchdog), to reap it later."""
    _CHILDREN[proc.pid] = proc


def reap(pid: int | None = None) -> None:
    """Collect the exit status of finished children (``pid``, or all of them)."""
    for child_pid, proc in list(_CHILDREN.items()):
        if pid is None or child_pid == pid:
            if proc.poll() is not None:
                _CHILDREN.pop(child_pid, None)

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


_PR_SET_PDEATHSIG = 1
try:   # resolved before any fork: preexec_fn runs between fork and exec
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):   # not Linux
    _prctl = None


def trainer_preexec(worker_pid: int):
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


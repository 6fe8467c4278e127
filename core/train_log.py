"""The training run's event log, ``train_log.jsonl``: one JSON event per line, flushed
at once (the app tails it). Events: ``start``, ``stage``, ``step`` (losses per task,
lr, examples/s), ``eval``, ``checkpoint``, ``resume_state``, ``resume``,
``stage_done``, ``done``, ``cancelled``, ``error``.

:class:`StepLog` decides which steps are logged (every ``train.log_every`` optimizer
steps and an epoch's last) and measures throughput over the window since the last one.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np


def json_default(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


_json_default = json_default   # the earlier private name


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a JSON-lines file written by :class:`EventLog` (or the study's
    results file): ``[]`` when it does not exist yet, and a line that does not parse —
    the one a writer is appending right now, or one cut short by a kill — is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


class EventLog:
    """``train_log.jsonl``: one JSON event per line, flushed at once (the app tails it)."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = path
        self.start = time.time()
        self.enabled = enabled   # False on data-parallel ranks other than 0

    def write(self, event: str, **fields) -> dict:
        record = {"event": event, "time": round(time.time(), 3), **fields}
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record, default=json_default) + "\n")
        return record


class StepLog:
    """``step`` events of one epoch: every ``log_every`` optimizer steps and the
    epoch's last, each with the examples/s of the window since the previous one."""

    def __init__(self, events: EventLog, log_every: int):
        self.events, self.log_every = events, log_every
        self.window_t, self.window_n = time.time(), 0

    def record(self, step: int, last_of_epoch: bool, examples: int, started: float, **fields) -> None:
        """Count a step's examples; write its event when due. ``started``: the wall-clock
        time the run would have started without interruptions (``elapsed_s`` = now - it)."""
        self.window_n += examples
        if step % self.log_every == 0 or last_of_epoch:
            now = time.time()
            extra = {k: fields.pop(k) for k in ("aux", "loss_weights") if k in fields}
            self.events.write("step", step=step, **fields,
                              examples_per_s=round(self.window_n / max(now - self.window_t, 1e-9), 2),
                              elapsed_s=round(now - started, 2), **extra)
            self.window_t, self.window_n = now, 0

"""The training run's event log, ``train_log.jsonl``: one JSON event per line, flushed
at once (the app tails it). Events: ``start``, ``stage``, ``step`` (losses per task,
lr, examples/s), ``eval``, ``checkpoint``, ``resume_state``, ``resume``,
``stage_done``, ``done``, ``cancelled``, ``error``.

The same ``step`` and ``eval`` events also go, as TensorBoard scalars, into a TensorBoard
event file beside it (:class:`TensorBoardLog`, ``events.out.tfevents.minbert``), so
``tensorboard --logdir checkpoints`` shows every run's curves: ``train/loss/<task>``,
``train/lr``, ``train/examples_per_s``, and ``dev/<metric>`` per evaluation
(``dev_subset/<metric>`` with ``dev_subset/<task>_n`` when the dev figures come from a
sample of the dev files). The file is written with the ``tensorboard`` package's own
record writer and protocol buffers; without that package the run trains as before and
writes no event file.

:class:`StepLog` decides which steps are logged (every ``train.log_every`` optimizer
steps and an epoch's last) and measures throughput over the window since the last one.
"""
from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import numpy as np

from core.atomic import save_errors

log = logging.getLogger(__name__)

TENSORBOARD_FILE = "events.out.tfevents.minbert"   # TensorBoard reads files named *tfevents*


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
    """``train_log.jsonl``: one JSON event per line, flushed at once (the app tails it);
    its ``step`` and ``eval`` events also as TensorBoard scalars (:class:`TensorBoardLog`)
    in the same directory, unless ``tensorboard=False``."""

    def __init__(self, path: Path, enabled: bool = True, tensorboard: bool = True):
        self.path = path
        self.start = time.time()
        self.enabled = enabled   # False on data-parallel ranks other than 0
        # a new log (no train_log.jsonl yet: a new run, or --overwrite) starts a new event file
        self.tensorboard = (TensorBoardLog(Path(path).parent / TENSORBOARD_FILE, fresh=not Path(path).exists())
                            if enabled and tensorboard else None)

    def write(self, event: str, **fields) -> dict:
        record = {"event": event, "time": round(time.time(), 3), **fields}
        if self.enabled:
            with save_errors(self.path, "the training log"), self.path.open("a") as f:   # disk full: one message
                f.write(json.dumps(record, default=json_default) + "\n")
            if self.tensorboard is not None:
                self.tensorboard.record(record)
        return record


def _scalars(prefix: str, value, skip=frozenset()) -> dict[str, float]:
    """``{tag: number}`` of the numeric leaves of a (nested) field: dict keys joined by /."""
    if isinstance(value, dict):
        out = {}
        for key, sub in value.items():
            if key not in skip:
                out.update(_scalars(f"{prefix}/{key}" if prefix else str(key), sub))
        return out
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return {}
    return {prefix: float(value)}


# event fields that are bookkeeping, not curves
_STEP_SKIP = frozenset({"event", "time", "step", "epoch", "stage", "total_steps", "elapsed_s"})
_EVAL_SKIP = frozenset({"event", "time", "step", "epoch", "stage", "best", "subset"})


def tensorboard_scalars(record: dict) -> dict[str, float]:
    """The TensorBoard scalars of one event (``{}`` for events without curves): a ``step``
    event's numbers under ``train/``; an ``eval`` event's under ``dev/``, or under
    ``dev_subset/`` with the tasks' ``*_n`` when its figures carry a subset mark (its
    ``train_*`` fields, training figures of the epoch, under ``train/epoch_*``)."""
    if record.get("event") == "step":
        return _scalars("train", record, _STEP_SKIP)
    if record.get("event") == "eval":
        group = "dev_subset" if record.get("subset") else "dev"
        train = {k[len("train_"):]: v for k, v in record.items() if k.startswith("train_")}
        values = _scalars(group, record, _EVAL_SKIP | set(f"train_{k}" for k in train))
        if group == "dev":
            values = {k: v for k, v in values.items() if not k.endswith("_n")}
        # training figures an eval event carries (e.g. the epoch's mean train_loss): train/epoch_*
        values.update(_scalars("train", {f"epoch_{k}": v for k, v in train.items()}))
        return values
    return {}


class TensorBoardLog:
    """A TensorBoard event file written through the ``tensorboard`` package's record
    writer and ``Event`` protos, appended to by path at each event (like
    ``train_log.jsonl``: a checkpoint publication that carries the file over keeps it).
    A ``resume`` event at step S drops the records of steps >= S that the interrupted
    run wrote after its resume state, so a resumed run's curves are those of an
    uninterrupted one. Any failure (no ``tensorboard`` package, a full disk) is logged
    once and turns the file off: training never stops for it."""

    def __init__(self, path: Path, fresh: bool = True):
        self.path, self.fresh, self.active, self._proto = Path(path), fresh, True, None

    def _modules(self):
        if self._proto is None:
            from tensorboard.compat.proto import event_pb2, summary_pb2
            from tensorboard.summary.writer.record_writer import RecordWriter
            self._proto = (event_pb2, summary_pb2, RecordWriter)
        return self._proto

    def _records(self, events) -> bytes:
        """TFRecord framing of ``Event`` protos (or of already serialized ones)."""
        buffer = io.BytesIO()
        writer = self._modules()[2](buffer)
        for event in events:
            writer.write(event if isinstance(event, bytes) else event.SerializeToString())
        return buffer.getvalue()

    def _start(self) -> None:
        """A new file (or none yet): the header record TensorBoard expects first."""
        if self.fresh or not self.path.is_file():
            event_pb2 = self._modules()[0]
            self.path.write_bytes(self._records([event_pb2.Event(wall_time=time.time(),
                                                                  file_version="brain.Event:2")]))
        self.fresh = False

    def record(self, record: dict) -> None:
        if not self.active:
            return
        try:
            self._start()
            if record.get("event") == "resume" and isinstance(record.get("step"), int):
                self._truncate(record["step"])
                return
            values = tensorboard_scalars(record)
            if not values or not isinstance(record.get("step"), (int, np.integer)):
                return
            event_pb2, summary_pb2, _ = self._modules()
            summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=v)
                                                 for tag, v in values.items()])
            event = event_pb2.Event(wall_time=float(record.get("time", time.time())), step=int(record["step"]),
                                    summary=summary)
            with self.path.open("ab") as f:
                f.write(self._records([event]))
        except Exception as e:   # noqa: BLE001 - the curves are a convenience, never a failure
            self.active = False
            how = ("the tensorboard package is not installed" if isinstance(e, ImportError)
                   else f"{type(e).__name__}: {e}")
            log.warning("no TensorBoard event file for this run (%s); train_log.jsonl is complete", how)

    def raw_events(self) -> list[bytes]:
        """The file's records, serialized ``Event`` protos as written (tensorboard's reader)."""
        from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
        return list(RawEventFileLoader(str(self.path)).Load()) if self.path.is_file() else []

    def events(self) -> list:
        """The file's ``Event`` protos, in order, as written."""
        event_pb2 = self._modules()[0]
        return [event_pb2.Event.FromString(raw) for raw in self.raw_events()]

    def _truncate(self, step: int) -> None:
        """Keep the header and the records of steps up to ``step`` (the resume state's: the
        run continues with step + 1), byte for byte; an atomic rewrite."""
        from core.atomic import atomic_write_bytes
        event_pb2 = self._modules()[0]
        kept = []
        for raw in self.raw_events():
            event = event_pb2.Event.FromString(raw)
            if event.HasField("file_version") or event.step <= step:
                kept.append(raw)
        atomic_write_bytes(self.path, self._records(kept))


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

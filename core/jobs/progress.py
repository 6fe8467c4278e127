"""A run's progress as its checkpoint's ``train_log.jsonl`` tells it (events ``start``,
``stage``, ``step``, ``eval``, ``checkpoint``, ``done``, ``error``, ``cancelled``; see
``core.training.trainer``): phase, step, speed, the ETA (training steps left at the current
speed plus one dev evaluation: the last one's duration, or an estimate before the first),
loss curves and dev metrics; and :func:`fmt_duration`, the one duration format of the CLI
and the app. Reads files only; no database, no processes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from core.train_log import read_jsonl


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



def fmt_duration(seconds: float | None) -> str:
    """The one duration format (CLI and app): "5s", "2m 05s", "1h 02m"; "–" for None."""
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m" if h else (f"{m}m {s:02d}s" if m else f"{s}s")


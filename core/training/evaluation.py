"""Dev evaluation during training and the choice of the checkpoint.

* :func:`evaluate_stage` - a stage's dev metrics (core/evaluation/evaluator.py): the
  trained tasks' heads after a supervised stage, the embeddings' zero-shot STS
  correlation after a sentence-embedding stage; :func:`stage_score` - the one number
  the epochs are compared by;
* :class:`CheckpointSelection` - the dev history, the best epoch so far and the rule
  that decides whether an epoch replaces it (``train.select``: 'mean', 'majority',
  'last'), and ``metrics.json``'s summary;
* :func:`publish_checkpoint` - the best epoch's weights, config, tokenizer,
  ``metrics.json`` and ``predictions/`` in one atomic publication.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from core.atomic import atomic_write_json
from core.config.schema import Config
from core.data.datasets import TaskData
from core.evaluation.evaluator import embedding_sts_metrics, evaluate_model, write_predictions
from core.model.multitask import MultitaskBert
from core.tasks import PRIMARY, TASKS, mean_score
from core.train_log import json_default
from core.training.state import Stage


def evaluate_stage(model: MultitaskBert, stages: list[Stage], stage: Stage,
                   dev_data: dict[str, TaskData]) -> tuple[dict, dict]:
    """Dev metrics and prediction frames: the heads trained so far (this stage included)
    after a supervised stage; the embeddings' zero-shot STS correlation after an
    objective stage."""
    batch_size = stage.train.eval_batch_size
    if not stage.supervised:
        return embedding_sts_metrics(model, dev_data["sts"], batch_size), {}
    trained = {t for s in stages[:stage.index + 1] if s.supervised for t in s.streams}
    return evaluate_model(model, tasks=[t for t in TASKS if t in trained], datasets=dev_data, batch_size=batch_size)


def stage_score(stage: Stage, metrics: dict) -> float:
    """The epoch's score: the mean of the stage's tasks' primary metrics (supervised), the
    embeddings' STS Pearson correlation (objective stages)."""
    if not stage.supervised:
        return float(metrics["embedding_sts_pearson"])
    return mean_score(metrics, list(stage.streams))


class CheckpointSelection:
    """The dev history of a run and its best epoch (the checkpoint): ``best`` is the
    record of that epoch (None before the first), ``best_score`` its score."""

    def __init__(self):
        self.best_score: float = -math.inf
        self.best: dict | None = None
        self.history: list[dict] = []

    def improves(self, select: str, score: float, metrics: dict, tasks) -> bool:
        """Whether this epoch's dev metrics replace the checkpoint (``train.select``): 'last'
        always; 'mean' on a higher mean score; 'majority' when more than half of the trained
        ``tasks``' primary metrics beat the checkpoint's (report 000 §5.2: two of three). The
        first evaluated epoch of the last stage always does."""
        if select == "last":
            return True
        if select == "mean":
            return score > self.best_score
        if self.best is None:
            return True
        tasks = [t for t in tasks if PRIMARY.get(t) in metrics]
        better = sum(metrics[PRIMARY[t]] > self.best.get(PRIMARY[t], -math.inf) for t in tasks)
        return better * 2 > len(tasks)

    def keep(self, record: dict) -> None:
        self.best_score, self.best = record["score"], record

    def state(self) -> dict:
        """The resume state's part of it."""
        return {"best_score": self.best_score, "best": self.best, "history": self.history}

    def restore(self, state: dict) -> None:
        self.best_score = state["best_score"] if state["best_score"] is not None else -math.inf
        if state.get("best"):
            self.best = state["best"]
        self.history = state["history"]

    def summary(self, config: Config, stages: list[Stage], *, steps: int, wall: float, device: torch.device,
                finished: bool, world_size: int | None = None) -> dict:
        """``metrics.json``: the best epoch's dev metrics, the history, the run's size."""
        best = self.best or {}
        summary = {
            "name": config.name,
            "dev": {k: v for k, v in best.items() if k not in ("epoch", "step", "score", "stage")},
            "mean_score": best.get("score"), "best_epoch": best.get("epoch"), "best_step": best.get("step"),
            "primary_metrics": {t: PRIMARY[t] for t in stages[-1].streams if t in PRIMARY},
            "stages": [s.name for s in stages],
            "history": self.history, "steps": steps, "wall_time_s": round(wall, 1),
            "device": str(device), "threads": torch.get_num_threads(), "finished": finished,
        }
        if world_size is not None:
            summary["world_size"] = world_size
        return summary


def write_metrics(out: Path, summary: dict) -> None:
    atomic_write_json(out / "metrics.json", summary, indent=2, default=json_default)


def publish_checkpoint(model: MultitaskBert, out: Path, record: dict, frames: dict, summary: dict) -> None:
    """One atomic publication: weights, config.json, tokenizer, metrics.json and
    predictions/ appear together, with the COMPLETE marker (core/model/multitask.py)."""
    metrics = json.dumps(summary, indent=2, default=json_default)
    populate = (lambda d: write_predictions(frames, d / "predictions", "dev")) if frames else None
    model.save(out, extra={"trained": {"epoch": record["epoch"], "step": record["step"], "stage": record["stage"]}},
               extra_files={"metrics.json": metrics}, populate=populate)

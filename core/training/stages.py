"""Building a run's stages before the loop starts, and the model surgery a recipe asks for.

* :func:`load_data` - the training and dev sets of a recipe's tasks (stratified samples
  under ``data.limit`` / ``data.eval_limit``);
* :class:`StageBuilder` - each stage's task streams (tokenized once, shared by stages),
  or a sentence-embedding objective's set (core/training/contrastive.py) as one stream;
  its epoch plan's length and step budget (:class:`core.training.state.Stage`);
* :func:`cache_frozen_encodings` - a frozen encoder's pooled vectors, computed once;
* :func:`set_encoder_dropout`, :func:`encoder_checksum`;
* :func:`describe_run` - the ``start`` event's description of the run.
"""
from __future__ import annotations

import torch

from core.config.schema import Config, TrainConfig
from core.data.datasets import TaskData, encode_texts, load_subset
from core.model.batching import TaskTokens
from core.model.multitask import MultitaskBert
from core.tasks import TASKS
from core.training.contrastive import build_set
from core.training.schedules import steps_in_epoch
from core.training.state import OBJECTIVE_STREAM, Stage, TaskStream


def load_data(cfg: Config) -> tuple[dict[str, TaskData], dict[str, TaskData]]:
    """(training sets, dev sets) of the tasks any stage trains; STS dev too when a stage
    trains a sentence-embedding objective (it is scored on STS dev)."""
    plan = cfg.stage_plan()
    train_tasks = [t for t in TASKS if any(t in train.tasks for _, train in plan)]
    dev_tasks = list(train_tasks)
    if any(train.objective != "supervised" for _, train in plan) and "sts" not in dev_tasks:
        dev_tasks.append("sts")   # sentence-embedding stages are scored on STS dev
    train = {t: load_subset(t, "train", cfg.data.dir, cfg.data.limit) for t in train_tasks}   # stratified
    for t in cfg.data.symmetric_pairs:
        if t in train:
            train[t] = train[t].with_swapped_pairs()
    dev = {t: load_subset(t, "dev", cfg.data.dir, cfg.data.eval_limit) for t in dev_tasks}
    return train, dev


class StageBuilder:
    """The stages of a recipe (``Config.stage_plan``), built on one model and its data."""

    def __init__(self, config: Config, model: MultitaskBert, train_data: dict[str, TaskData], world_size: int = 1):
        self.config, self.model, self.train_data, self.world_size = config, model, train_data, world_size
        self._feature_cache: dict[str, TaskTokens] = {}

    def build_all(self) -> list[Stage]:
        return [self.build(i, name, train) for i, (name, train) in enumerate(self.config.stage_plan())]

    def features(self, task: str) -> TaskTokens:
        """A task's training inputs tokenized once, in its head's layout (shared by stages)."""
        if task not in self._feature_cache:
            data = self.train_data[task]
            self._feature_cache[task] = self.model.featurize(task, data.texts_a, data.texts_b)
        return self._feature_cache[task]

    def build(self, index: int, name: str, train: TrainConfig) -> Stage:
        streams: dict[str, TaskStream] = {}
        objective_set = None
        base_seed = train.seed + 104729 * index
        if train.objective == "supervised":
            for i, task in enumerate(train.tasks):
                labels = torch.as_tensor(self.train_data[task].labels)
                streams[task] = TaskStream(task, self.features(task), labels, train.batch_size_of(task),
                                           base_seed + 7919 * i, balanced=task in train.class_balanced,
                                           min_batch=self.world_size)
        else:
            objective_set = build_set(train.objective, {t: self.train_data[t] for t in train.tasks},
                                      train.contrastive, seed=base_seed)
            max_len, tok = self.config.model.max_len, self.model.tokenizer
            parts = {k: encode_texts(tok, v, max_len) for k, v in objective_set.parts.items()}
            feats = TaskTokens(parts, pad_id=tok.pad_token_id or 0)
            streams[OBJECTIVE_STREAM] = TaskStream(OBJECTIVE_STREAM, feats, torch.zeros(len(feats)),
                                                   train.batch_size, base_seed, min_batch=self.world_size)
        n_batches = {t: s.n_batches for t, s in streams.items()}
        schedule = train.schedule if train.objective == "supervised" else "round_robin"
        spe = steps_in_epoch(schedule, n_batches, train.steps_per_epoch, train.task_sampling, train.task_ratio)
        spe = max(1, round(spe * train.epoch_fraction))   # a declared budget (1.0: the whole epoch)
        total = spe * train.epochs
        if train.max_steps:
            total = min(total, train.max_steps)
        return Stage(index, name, train, streams, spe, total, objective_set)


def cache_frozen_encodings(model: MultitaskBert, stage: Stage, device: torch.device) -> None:
    """Frozen encoder, heads that read pooled vectors only, no SMART: encode every training
    input of a stream once (heads then train on vectors) when the stage reads at least as
    many inputs; otherwise the frozen encoder runs per batch (forward only)."""
    cfg = stage.train
    if not (stage.supervised and cfg.freeze_encoder and model.heads_use_pooled_only() and not cfg.smart.enabled):
        return
    for stream in stage.streams.values():
        if stage.total_steps * stream.batch_size < len(stream.features):
            continue
        cache = {}
        for part, enc in stream.features.parts.items():
            feats = TaskTokens({"a": enc}, stream.features.pad_id)
            vecs = model.map_batches(feats, lambda batch: model.encode(batch["a"], task=stream.task).pooled, 128)
            cache[part] = torch.from_numpy(vecs).to(device)
        stream.cache = cache


def set_encoder_dropout(encoder: torch.nn.Module, p: float) -> None:
    """Every dropout of the encoder (embeddings, attention probabilities, hidden states)
    at rate ``p`` for training (``model.encoder_dropout``; report 003: 0.3)."""
    for module in encoder.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p


def encoder_checksum(model: MultitaskBert) -> float:
    """A fingerprint of the encoder weights (logged at stage boundaries)."""
    with torch.no_grad():
        return float(sum(p.double().sum() for p in model.bert.parameters()))


def describe_run(config: Config, stages: list[Stage], train_data: dict[str, TaskData],
                 dev_data: dict[str, TaskData], *, device: torch.device, world_size: int, resumed_at_step: int) -> dict:
    """The ``start`` event's fields: the recipe, where it runs, its stages and data sizes."""
    first = stages[0]
    return dict(
        name=config.name, config=config.to_dict(), device=str(device), threads=torch.get_num_threads(),
        world_size=world_size, total_steps=sum(s.total_steps for s in stages),
        steps_per_epoch=first.steps_per_epoch, epochs=first.train.epochs, resumed_at_step=resumed_at_step,
        stages=[{"name": s.name, "objective": s.train.objective, "schedule": s.train.schedule,
                 "tasks": list(s.train.tasks), "epochs": s.train.epochs,
                 "steps_per_epoch": s.steps_per_epoch, "total_steps": s.total_steps,
                 "train_size": len(s.objective_set) if s.objective_set is not None else None}
                for s in stages],
        train_sizes={t: len(d) for t, d in train_data.items()},
        dev_sizes={t: len(d) for t, d in dev_data.items()},
        skipped_rows={f"{t}/{s}": d.n_skipped for s, dd in (("train", train_data), ("dev", dev_data))
                      for t, d in dd.items()})

"""The training loop: :class:`Trainer` runs a recipe stage -> epoch -> step.

Owns the loop and its counters, nothing else; each job is a piece it calls:

* core/training/stages.py - data, task streams and stages (built once, before the loop);
* core/training/objective.py - one task batch's forward pass and weighted loss;
* core/training/param_groups.py - the optimizer's parameter groups of a stage;
* core/training/evaluation.py - dev evaluation, the best-checkpoint rule, metrics.json;
* core/training/checkpointing.py - output-directory rules and the resume state;
* core/training/cli.py - the command line (``python -m core.train``; running this module
  as ``python -m core.training.trainer`` is the same command).

One step (:meth:`Trainer.train_step`) reads: each task's global batch -> this process's
share -> forward and loss (the objective) -> backward -> optimizer step (gradients
averaged over processes, clipped). See core/training/cli.py for what a recipe combines.
"""
from __future__ import annotations

import logging
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from core.config.schema import Config
from core.errors import ConfigError, MinbertError
from core.model.multitask import MultitaskBert
from core.train_log import EventLog, StepLog
from core.training.checkpointing import ResumeKeeper, prepare_out_dir
from core.training.distributed import DistContext
from core.training.evaluation import (CheckpointSelection, evaluate_stage, publish_checkpoint, stage_score,
                                      write_metrics)
from core.training.objective import Objective
from core.training.optim import make_optimizer, warmup_linear
from core.training.param_groups import param_groups
from core.training.stages import (StageBuilder, cache_frozen_encodings, describe_run, encoder_checksum,
                                  load_data, set_encoder_dropout)
from core.training.state import Stage

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA GPU is visible; use --device cpu or auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Runs a recipe: its stages in order (one stage when the recipe has no ``stages``),
    each starting from the weights the previous one left. Per stage: streams of global
    batch indices, the epoch plan of the schedule, an optimizer and warm-up schedule,
    per-epoch dev evaluation. The best epoch of the *last* stage is the checkpoint."""

    def __init__(self, config: Config, out_dir: str | Path, resume: bool = False, progress: bool = True,
                 overwrite: bool = False, dist: DistContext | None = None):
        self.config, self.out, self.resume = config, Path(out_dir), resume
        self.dist = dist or DistContext()   # data parallelism (core/training/distributed.py); rank 0 of 1 alone
        self.progress = progress and self.dist.is_main
        error = None
        if self.dist.is_main:   # rank 0 checks and prepares the output directory for all ranks
            try:
                prepare_out_dir(self.out, resume, overwrite)
            except MinbertError as e:
                error = str(e)
        error = self.dist.broadcast_object(error)
        if error:
            raise MinbertError(error)
        self.device = self.dist.device_for(resolve_device(config.train.device))

    def setup(self) -> None:
        """Data, model, stages and counters (and the resume state's position)."""
        cfg = self.config
        seed_everything(cfg.train.seed)
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.events = EventLog(self.out / "train_log.jsonl", enabled=self.dist.is_main)
        self.train_data, self.dev_data = load_data(cfg)
        self.model = MultitaskBert.from_config(cfg).to(self.device)   # heads: config.head_tasks()
        if cfg.model.encoder_dropout is not None:   # report 003: 0.3
            set_encoder_dropout(self.model.bert, cfg.model.encoder_dropout)
        if self.dist.enabled:   # same start on every rank; then per-rank dropout noise
            self.dist.broadcast_parameters(self.model)
            torch.manual_seed(cfg.train.seed + 1_000_003 * self.dist.rank)
        if cfg.train.compile:   # in place: parameter names and checkpoints stay the same
            self.model.bert.compile(dynamic=True)
        self.stages = StageBuilder(cfg, self.model, self.train_data, self.dist.world_size).build_all()
        self.total_steps = sum(s.total_steps for s in self.stages)
        self.step, self.selection = 0, CheckpointSelection()
        self.stage_index, self.stage_step, self.start_epoch, self.start_epoch_step = 0, 0, 0, 0
        self.elapsed_before = 0.0
        self.resumer = ResumeKeeper(self.out)
        if self.resume:
            self.resumer.load(self)

    def start_stage(self, stage: Stage) -> None:
        """Objective, optimizer and schedule of a stage; the model keeps the weights it has
        (pretrained, or the previous stage's)."""
        cfg = stage.train
        self.stage, self.streams = stage, stage.streams
        self.model.bert.requires_grad_(not cfg.freeze_encoder)
        self.objective = Objective(self.model, stage, self.device, self.dist, self.config.train.precision)
        cache_frozen_encodings(self.model, stage, self.device)
        # torch_adamw: the fused kernel, on CUDA and CPU alike (one pass over the weights;
        # on 2 CPU cores 33 ms a step for MiniLM vs 336 ms for torch's default foreach)
        self.optimizer = make_optimizer(cfg.optimizer, param_groups(self.model, stage, self.objective, self.device),
                                        cfg.lr, cfg.weight_decay, fused=self.device.type in ("cuda", "cpu"))
        self.scheduler = warmup_linear(self.optimizer, stage.total_steps, cfg.warmup_ratio, cfg.lr_schedule)

    # the stage objective's parts, read by tests and tools
    uncertainty = property(lambda self: self.objective.uncertainty)
    regularizers = property(lambda self: self.objective.regularizers)
    teacher = property(lambda self: self.objective.teacher)

    # ------------------------------------------------------------------- run
    def run(self) -> dict:
        """Every stage (from the resumed one), every epoch, every step; the summary."""
        self.setup()
        t0 = time.time()
        self.events.write("start", **describe_run(self.config, self.stages, self.train_data, self.dev_data,
                                                  device=self.device, world_size=self.dist.world_size,
                                                  resumed_at_step=self.step))
        self.epoch = self.start_epoch   # the epoch running (0-based), for the end events
        try:
            for stage in self.stages[self.stage_index:]:
                self._run_stage(stage, t0)
        except KeyboardInterrupt:
            self.events.write("cancelled", step=self.step, epoch=self.epoch)
            raise
        except Exception as e:
            self.events.write("error", step=self.step, epoch=self.epoch, message=f"{type(e).__name__}: {e}")
            raise
        wall = self.elapsed_before + time.time() - t0
        summary = self._write_metrics(wall, finished=True)
        if self.dist.is_main:
            shutil.rmtree(self.out / "resume", ignore_errors=True)
        extra = {}
        if self.dist.enabled:   # a check of the data-parallel run: identical weights on every rank
            extra = {"world_size": self.dist.world_size, "ranks_in_sync": self.dist.params_in_sync(self.model)}
        self.events.write("done", step=self.step, wall_time_s=round(wall, 1), best=summary["dev"],
                          mean_score=summary["mean_score"], **extra)
        return summary

    def _run_stage(self, stage: Stage, t0: float) -> None:
        """One stage's epochs (a resumed stage from where it was saved)."""
        resuming = self.resumer.pending and stage.index == self.stage_index
        if not resuming:
            self.stage_step, self.start_epoch, self.start_epoch_step = 0, 0, 0
        self.start_stage(stage)
        if resuming:
            self.resumer.restore_stage(self)
        self.events.write("stage", stage=stage.name, index=stage.index, objective=stage.train.objective,
                          tasks=list(stage.train.tasks), total_steps=stage.total_steps, step=self.step,
                          resumed=resuming, encoder_checksum=encoder_checksum(self.model),
                          frozen_cache=any(s.cache is not None for s in stage.streams.values()))
        for epoch in range(self.start_epoch, stage.train.epochs):
            self.epoch = epoch
            if self.stage_step >= stage.total_steps:
                break
            start, self.start_epoch_step = self.start_epoch_step, 0
            self._train_epoch(epoch, t0, start)
            self._end_epoch(epoch, t0)
        self.events.write("stage_done", stage=stage.name, index=stage.index, step=self.step,
                          encoder_checksum=encoder_checksum(self.model))

    def _train_epoch(self, epoch: int, t0: float, start: int = 0) -> None:
        """Steps ``start``.. of ``epoch`` (``start`` > 0: resumed mid-epoch); resume state
        every ``train.resume_every`` optimizer steps (the epoch's last step excepted: its
        state is saved after the dev evaluation, by :meth:`_end_epoch`)."""
        stage, cfg = self.stage, self.stage.train
        plan = stage.plan(epoch)[start: start + stage.total_steps - self.stage_step]
        adaptive = cfg.loss_weighting == "dev" and stage.supervised
        if adaptive:
            self.objective.adapt_weights(epoch, self.selection.history)
        label = f"{stage.name} " if len(self.stages) > 1 else ""
        bar = tqdm(total=start + len(plan), initial=start, desc=f"{label}epoch {epoch + 1}/{cfg.epochs}",
                   disable=not self.progress, dynamic_ncols=True, leave=True)
        steps = StepLog(self.events, cfg.log_every)
        self._epoch_losses: dict[str, list[float]] = {}
        for i, tasks in enumerate(plan):
            out = self.train_step(tasks)
            for name, value in out["losses"].items():
                self._epoch_losses.setdefault(name, []).append(value)
            bar.update(1)
            bar.set_postfix({t: f"{v:.3f}" for t, v in out["losses"].items()})
            extra = {"aux": out["aux"]} if out["aux"] else {}
            if adaptive:
                extra["loss_weights"] = {t: round(w, 4) for t, w in self.objective.task_weights.items()}
            steps.record(self.step, i == len(plan) - 1, out["examples"], t0 - self.elapsed_before,
                         total_steps=self.total_steps, epoch=epoch + 1, stage=stage.name, loss=out["losses"],
                         lr=self.scheduler.get_last_lr()[0], **extra)
            if self.step % cfg.resume_every == 0 and i < len(plan) - 1:
                self.resumer.save(self, epoch, start + i + 1, self.elapsed_before + time.time() - t0)
        bar.close()

    # -------------------------------------------------------------- one step
    def local_indices(self, idx: list[int]) -> list[int]:
        """This process's share of a global batch: ``idx[rank::world_size]`` under data
        parallelism (core/training/distributed.py), all of it otherwise."""
        return self.dist.shard(idx)

    def train_step(self, tasks: tuple[str, ...] | None = None) -> dict:
        """One optimizer step over a batch of each of ``tasks`` (default: every task of
        the stage, i.e. a round-robin step); the step's loss is sum_t w_t L_t.
        ``train.backward: cyclic``: one backward and optimizer update per task instead,
        in the order of ``tasks`` (the learning-rate schedule still moves once a step)."""
        tasks = tuple(self.streams) if tasks is None else tasks
        self.objective.train_mode()
        losses, aux, n_examples, shares = {}, {}, 0, {}
        # The global batch of every task in this step, then this process's share of it.
        batches = []
        for task in tasks:
            global_idx = self.streams[task].next_indices()
            batches.append((task, self.local_indices(global_idx), len(global_idx)))
        groups = [[b] for b in batches] if self.stage.train.backward == "cyclic" else [batches]
        for group in groups:
            self.optimizer.zero_grad(set_to_none=True)
            for task, idx, n_global in group:
                name = task if self.stage.supervised else self.stage.train.objective
                n_examples += n_global
                shares[name] = len(idx) / n_global
                if not idx:   # a global batch smaller than the number of processes
                    losses[name] = 0.0
                    continue
                loss, total = self.objective(task, idx, n_global, aux)   # forward, loss modules, weighting
                # data parallel: this share's weight in the global batch mean (1 alone)
                (total * self.dist.loss_scale(len(idx), n_global)).backward()
                losses[name] = loss.item()
            self._update()
        losses = self.dist.global_mean(losses, shares, self.device)   # the global batch's losses
        self.scheduler.step()
        self.step += 1
        self.stage_step += 1
        if self.objective.uncertainty is not None:
            aux.update({f"{t}_weight": round(w, 4) for t, w in self.objective.uncertainty.weights().items()})
        return {"losses": losses, "aux": aux, "examples": n_examples}

    def _update(self) -> None:
        """Average the gradients over processes, clip, step the optimizer, move the teacher."""
        cfg = self.stage.train
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.dist.all_reduce_gradients(params)
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        self.optimizer.step()
        self.objective.after_step()

    # ------------------------------------------------------------ evaluation
    def _epoch_loss_mean(self) -> dict[str, float]:
        """Each loss's mean over the steps of the epoch just trained (since the resume, for
        an epoch resumed mid-way): the per-epoch training loss report 001 §6.1 follows."""
        return {name: round(float(np.mean(v)), 6) for name, v in getattr(self, "_epoch_losses", {}).items() if v}

    def _end_epoch(self, epoch: int, t0: float) -> None:
        """The epoch's dev evaluation (``train.dev_eval``), the checkpoint when it improves
        (last stage, ``train.select``), and the resume state of the epoch boundary."""
        stage = self.stage
        stage_over = epoch + 1 >= stage.train.epochs or self.stage_step >= stage.total_steps
        last_stage = stage.index == len(self.stages) - 1
        if stage.train.dev_eval == "none" or (stage.train.dev_eval == "stage_end" and not stage_over):
            # no dev evaluation this epoch: its mean training loss, resume state
            self.events.write("epoch_done", epoch=epoch + 1, step=self.step, stage=stage.name,
                              train_loss=self._epoch_loss_mean())
            self.resumer.save(self, epoch + 1, 0, self.elapsed_before + time.time() - t0)
            return
        # rank 0 evaluates; every rank gets its metrics, so all take the same decisions
        metrics, frames = (evaluate_stage(self.model, self.stages, stage, self.dev_data) if self.dist.is_main
                           else (None, {}))
        metrics = self.dist.broadcast_object(metrics)
        score = stage_score(stage, metrics)
        record = {"epoch": epoch + 1, "step": self.step, "score": score, "stage": stage.name, **metrics}
        self.selection.history.append(record)
        # the checkpoint: the last stage's best epoch (train.select 'mean'), or its last ('last')
        improved = last_stage and self.selection.improves(stage.train.select, score, metrics, self.streams)
        self.events.write("eval", **record, best=improved, train_loss=self._epoch_loss_mean())
        wall = self.elapsed_before + time.time() - t0
        if improved:
            self.selection.keep(record)
            if self.dist.is_main:
                publish_checkpoint(self.model, self.out, record, frames, self._summary(wall, finished=False))
            self.events.write("checkpoint", step=self.step, epoch=epoch + 1, path=str(self.out), score=score)
        else:
            self._write_metrics(wall, finished=False)
        if not (last_stage and stage_over):   # after the very last epoch there is nothing to resume
            self.resumer.save(self, epoch + 1, 0, wall)

    def _summary(self, wall: float, finished: bool) -> dict:
        return self.selection.summary(self.config, self.stages, steps=self.step, wall=wall, device=self.device,
                                      finished=finished,
                                      world_size=self.dist.world_size if self.dist.enabled else None)

    def _write_metrics(self, wall: float, finished: bool) -> dict:
        summary = self._summary(wall, finished)
        if self.dist.is_main:
            write_metrics(self.out, summary)
        return summary

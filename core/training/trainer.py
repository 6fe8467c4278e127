"""Train a MultitaskBert from a YAML recipe.

    python -m core.train --config configs/NAME.yaml --out checkpoints/NAME
            [--set key=value ...] [--resume] [--limit N] [--max-steps N]
            [--seed S] [--device auto|cpu|cuda]

The recipe is parsed and validated once (``core.config.schema.Config``); every flag above is
applied to that object as an override, so the checkpoint's ``config.json`` holds exactly
what ran. The output directory receives, after each epoch's dev evaluation, the best
checkpoint so far (``model.safetensors``, ``config.json``, tokenizer files,
``metrics.json``, ``predictions/``, published together in one atomic swap with a
``COMPLETE`` marker), a ``train_log.jsonl`` event log, and ``resume/`` (the state of the
last ``train.resume_every`` optimizer steps or epoch end, whichever came last, used by
``--resume``, removed when the run finishes). A run killed at any moment and resumed
ends with the same weights as an uninterrupted one (bitwise on CPU).

What a recipe can combine (each method lives in its own module, named by report):

* stages (``stages:`` in the recipe; reports 000 "MT+X", 003 Quora pre-finetuning): a
  list of train-field changes run in order, each stage starting from the weights the
  previous one left; ``--max-steps`` caps every stage; the checkpoint is the best
  epoch of the last stage and its ``config.json`` holds the whole recipe;
* schedules (core/training/schedules.py): round_robin, sequential, mtdnn, with task_sampling;
* loss weighting (core/losses/weighting.py): fixed, dev-adapted, learned uncertainty;
* objectives (core/training/contrastive.py, core/losses/functions.py): supervised task losses, MNRL,
  SimCSE (unsupervised / supervised), triplets; ``mnrl_weight`` adds MNRL to the
  supervised pair-task batches;
* SMART (core/losses/smart.py) adversarial smoothness + Bregman proximal point;
* class-balanced sampling of a task's batches (core/training/schedules.py);
* heads and Q&ABERT prompts are model options (core/model/heads.py, core/model/prompts.py).

Where things are (a newcomer reads them in this order):

* core/training/trainer.py (this file): :class:`Trainer` - setup, the stepping loop
  (:meth:`Trainer.train_step`: batches -> loss modules -> backward -> update), dev
  evaluation and checkpoint choice, and the command line;
* core/training/state.py: task streams, stages, and the resume state;
* core/train_log.py: the ``train_log.jsonl`` event log;
* core/losses/functions.py, core/losses/smart.py: the loss modules chosen by name per task
  (``train.losses``) and the regularizers (SMART, Bregman) with their own weights.

``train.backward: cyclic`` gives every task of a round-robin step its own backward and
optimizer update, in order (report 003's "joint loss x"); ``joint`` (default) sums them.

Each step, every task that trains in it draws the *global* indices of its next batch
from its stream; :meth:`Trainer.local_indices` is the one place that cuts a global
batch into a process's share under data parallelism:

    torchrun --standalone --nproc_per_node N -m core.train --config ... --out ...

runs N processes (NCCL on GPUs, gloo on CPU) that average their gradients each step,
with rank 0 alone logging, evaluating and checkpointing (see core/training/distributed.py).
Speed options: ``train.precision: bf16`` (autocast), ``train.compile: true``.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from core.atomic import atomic_write_json, check_free_space, recover_swap, save_errors
from core.config.schema import Config, TrainConfig, format_option_help
from core.training.contrastive import build_set, objective_loss
from core.data.datasets import TaskData, encode_texts, load_subset
from core.training.distributed import DistContext, init_distributed, shutdown
from core.errors import ConfigError, MinbertError, run_command
from core.evaluation.evaluator import embedding_sts_metrics, evaluate_model, write_predictions
from core.training.footprint import check_fits
from core.losses.functions import LossBatch, TaskLoss, build_task_losses
from core.model.multitask import Encoding, MultitaskBert, TaskTokens
from core.training.optim import make_optimizer, warmup_linear
from core.training.schedules import steps_in_epoch
from core.losses.smart import BregmanProximal, build_regularizers
from core.tasks import PRIMARY, TASKS, mean_score
from core.train_log import EventLog, StepLog, json_default
from core.training.state import (OBJECTIVE_STREAM, Stage, TaskStream, load_teacher_state,  # noqa: F401
                                np_rng_from_json, py_rng_from_json, read_resume_state, rng_state,
                                save_resume_state, select_rank_rng, set_rng_state)
from core.losses.weighting import UncertaintyWeighting, dev_weights

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


def encoder_depth(name: str, n_layers: int) -> int:
    """Depth of an encoder parameter for layer-wise learning rates: 0 = embeddings,
    i + 1 = ``encoder.layer.i``, n_layers = the top layer and the pooler above it."""
    if name.startswith("embeddings."):
        return 0
    if name.startswith("encoder.layer."):
        return int(name.split(".")[2]) + 1
    return n_layers


def check_model_support(config: Config) -> None:
    """Refuse recipe options the model code does not build yet, rather than train a model
    that silently ignores them: per-task pooling, the shared projection and report 002's
    pooled heads are built by ``MultitaskBert`` once it lists them in ``SUPPORTS``."""
    supports = getattr(MultitaskBert, "SUPPORTS", frozenset())
    m = config.model
    wanted = {
        "task_pooling": any(getattr(m, t).pooling not in (None, m.pooling) for t in TASKS),
        "shared_projection": m.shared_projection is not None,
        "pooled_heads": any(getattr(m, t).arch.startswith("pooled_") for t in TASKS),
    }
    missing = [name for name, used in wanted.items() if used and name not in supports]
    if missing:
        raise ConfigError(f"this recipe uses {', '.join(missing)}, which this version's model does not "
                          f"build yet (core/model/multitask.py); remove those settings")


def set_encoder_dropout(encoder: torch.nn.Module, p: float) -> None:
    """Every dropout of the encoder (embeddings, attention probabilities, hidden states)
    at rate ``p`` for training (``model.encoder_dropout``; report 003: 0.3)."""
    for module in encoder.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p


def graph_leaves(output: torch.Tensor) -> set[int]:
    """``id`` of every leaf tensor (parameter) the autograd graph of ``output`` reaches:
    the parameters ``output.backward()`` would give a gradient."""
    leaves: set[int] = set()
    seen: set = set()
    stack = [output.grad_fn] if output.grad_fn is not None else []
    while stack:
        fn = stack.pop()
        if fn in seen:
            continue
        seen.add(fn)
        variable = getattr(fn, "variable", None)   # AccumulateGrad: the leaf it accumulates into
        if variable is not None:
            leaves.add(id(variable))
        stack.extend(nxt for nxt, _ in fn.next_functions if nxt is not None)
    return leaves


def encoder_checksum(model: MultitaskBert) -> float:
    """A fingerprint of the encoder weights (logged at stage boundaries)."""
    with torch.no_grad():
        return float(sum(p.double().sum() for p in model.bert.parameters()))


class Trainer:
    """Runs a recipe: its stages in order (one stage when the recipe has no ``stages``),
    each starting from the weights the previous one left. Per stage: streams of global
    batch indices, the epoch plan of the schedule, an optimizer and warm-up schedule,
    per-epoch dev evaluation. The best epoch of the *last* stage is the checkpoint."""

    def __init__(self, config: Config, out_dir: str | Path, resume: bool = False, progress: bool = True,
                 overwrite: bool = False, dist: DistContext | None = None):
        self.config = config
        self.out = Path(out_dir)
        self.dist = dist or DistContext()   # data parallelism (core/training/distributed.py); rank 0 of 1 alone
        self.progress = progress and self.dist.is_main
        self.resume = resume
        error = None
        if self.dist.is_main:   # rank 0 checks and prepares the output directory for all ranks
            try:
                self._prepare_out_dir(resume, overwrite)
            except MinbertError as e:
                error = str(e)
        error = self.dist.broadcast_object(error)
        if error:
            raise MinbertError(error)
        self.device = self.dist.device_for(resolve_device(config.train.device))

    def _prepare_out_dir(self, resume: bool, overwrite: bool) -> None:
        recover_swap(self.out)                 # a publication cut between its two renames
        if self.out.is_dir():
            recover_swap(self.out / "resume")
        if self.out.exists() and (self.out / "train_log.jsonl").exists() and not resume and not overwrite:
            raise MinbertError(f"{self.out} already holds a run; pass --resume to continue it, "
                               f"--overwrite to replace it, or choose another --out")
        if resume and not (self.out / "resume" / "state.json").is_file():
            raise MinbertError(f"nothing to resume in {self.out}: no resume state was saved yet "
                               f"(resume/state.json is missing; it is written every train.resume_every "
                               f"steps and at each epoch end): start the run again without --resume")
        if overwrite and self.out.exists() and not resume:
            for name in ("train_log.jsonl", "metrics.json", "resume", "predictions"):
                p = self.out / name
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)

    # ------------------------------------------------------------------ setup
    def _load_data(self) -> tuple[dict[str, TaskData], dict[str, TaskData]]:
        cfg = self.config
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

    def _features(self, task: str) -> TaskTokens:
        """A task's training inputs tokenized once, in its head's layout (shared by stages)."""
        if task not in self._feature_cache:
            data = self.train_data[task]
            self._feature_cache[task] = self.model.featurize(task, data.texts_a, data.texts_b)
        return self._feature_cache[task]

    def _build_stage(self, index: int, name: str, train: TrainConfig) -> Stage:
        streams: dict[str, TaskStream] = {}
        objective_set = None
        base_seed = train.seed + 104729 * index
        if train.objective == "supervised":
            for i, task in enumerate(train.tasks):
                labels = torch.as_tensor(self.train_data[task].labels)
                streams[task] = TaskStream(task, self._features(task), labels, train.batch_size_of(task),
                                           base_seed + 7919 * i, balanced=task in train.class_balanced,
                                           min_batch=self.dist.world_size)
        else:
            objective_set = build_set(train.objective, {t: self.train_data[t] for t in train.tasks},
                                      train.contrastive, seed=base_seed)
            max_len, tok = self.config.model.max_len, self.model.tokenizer
            parts = {k: encode_texts(tok, v, max_len) for k, v in objective_set.parts.items()}
            feats = TaskTokens(parts, pad_id=tok.pad_token_id or 0)
            streams[OBJECTIVE_STREAM] = TaskStream(OBJECTIVE_STREAM, feats, torch.zeros(len(feats)),
                                                   train.batch_size, base_seed, min_batch=self.dist.world_size)
        n_batches = {t: s.n_batches for t, s in streams.items()}
        schedule = train.schedule if train.objective == "supervised" else "round_robin"
        spe = steps_in_epoch(schedule, n_batches, train.steps_per_epoch, train.task_sampling, train.task_ratio)
        spe = max(1, round(spe * train.epoch_fraction))   # a declared budget (1.0: the whole epoch)
        total = spe * train.epochs
        if train.max_steps:
            total = min(total, train.max_steps)
        return Stage(index, name, train, streams, spe, total, objective_set)

    def setup(self) -> None:
        cfg = self.config
        check_model_support(cfg)
        seed_everything(cfg.train.seed)
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.events = EventLog(self.out / "train_log.jsonl", enabled=self.dist.is_main)
        self.train_data, self.dev_data = self._load_data()
        self.model = MultitaskBert.from_config(cfg).to(self.device)   # heads: config.head_tasks()
        if cfg.model.encoder_dropout is not None:   # report 003: 0.3
            set_encoder_dropout(self.model.bert, cfg.model.encoder_dropout)
        if self.dist.enabled:   # same start on every rank; then per-rank dropout noise
            self.dist.broadcast_parameters(self.model)
            torch.manual_seed(cfg.train.seed + 1_000_003 * self.dist.rank)
        if cfg.train.compile:   # in place: parameter names and checkpoints stay the same
            self.model.bert.compile(dynamic=True)
        self._feature_cache: dict[str, TaskTokens] = {}
        self.stages = [self._build_stage(i, name, train) for i, (name, train) in enumerate(cfg.stage_plan())]
        self.total_steps = sum(s.total_steps for s in self.stages)
        self.step, self.best_score, self.history = 0, -math.inf, []
        self.stage_index, self.stage_step, self.start_epoch, self.start_epoch_step = 0, 0, 0, 0
        self.elapsed_before = 0.0
        self._resume_state: dict | None = None
        if self.resume:
            self._load_resume_state()

    def _param_groups(self, stage: Stage) -> list[dict]:
        """The optimizer's groups: exactly the parameters the stage's objective depends on
        (:meth:`_trained_parameters`), by learning rate (encoder: ``lr``, one rate per layer
        with ``layer_decay`` < 1; everything else, heads, report 002's shared projection and
        learned task weights included: ``head_lr``) and weight decay (none on biases,
        LayerNorm and the learned task weights)."""
        cfg, groups = stage.train, []
        no_decay = lambda n: n.endswith("bias") or "LayerNorm" in n or n.startswith("uncertainty.")
        n_layers = self.model.bert.config.num_hidden_layers
        encoder = {id(p) for p in self.model.bert.parameters()}
        by_lr: dict[float, list] = {}
        for name, p in self._trained_parameters(stage):
            if id(p) in encoder:
                depth = encoder_depth(name.removeprefix("bert."), n_layers)
                lr = cfg.lr * cfg.layer_decay ** (n_layers - depth)
            else:
                lr = cfg.head_lr or cfg.lr
            by_lr.setdefault(lr, []).append((name, p))
        for lr, params in by_lr.items():
            decay = [p for n, p in params if not no_decay(n)]
            plain = [p for n, p in params if no_decay(n)]
            groups += [{"params": decay, "lr": lr, "weight_decay": cfg.weight_decay},
                       {"params": plain, "lr": lr, "weight_decay": 0.0}]
        return [g for g in groups if g["params"]]

    def _trained_parameters(self, stage: Stage) -> list[tuple[str, torch.nn.Parameter]]:
        """``(name, parameter)`` of every parameter the stage's objective depends on, in
        model order: the leaves of the autograd graph of the objective on a probe batch of
        each of the stage's streams (its first examples), through the same code path as a
        training step (task losses, regularizers, task weighting). Nothing is stepped or
        back-propagated; the random generators and the model's buffers (batch-norm
        statistics) are restored, so the run continues exactly as without the probe.
        A frozen encoder (``requires_grad`` off) is not in the graph, hence in no group."""
        named = list(self.model.named_parameters())
        if self.uncertainty is not None:
            named += [(f"uncertainty.{n}", p) for n, p in self.uncertainty.named_parameters()]
        buffers = {n: b.detach().clone() for n, b in self.model.named_buffers()}
        used: set[int] = set()
        devices = [self.device] if self.device.type == "cuda" else []
        self._train_mode(stage.train)
        with torch.random.fork_rng(devices=devices):
            for task, stream in stage.streams.items():
                idx = list(range(min(len(stream.features), stream.batch_size)))
                _, total = self._task_objective(task, idx, len(idx), {})
                used |= graph_leaves(total)
        with torch.no_grad():
            for n, b in self.model.named_buffers():
                b.copy_(buffers[n])
        params = [(n, p) for n, p in named if id(p) in used]
        if not params:
            raise MinbertError(f"stage {stage.name!r} trains nothing: its loss depends on no parameter "
                               f"(frozen encoder and no head with weights?)")
        return params

    def _train_mode(self, cfg: TrainConfig) -> None:
        self.model.train()
        if cfg.freeze_encoder:
            self.model.bert.eval()  # frozen: no dropout noise in the features either

    def _cache_encodings(self, stream: TaskStream) -> None:
        """Frozen encoder: encode every training input once; heads then train on vectors."""
        cache = {}
        for part, enc in stream.features.parts.items():
            feats = TaskTokens({"a": enc}, stream.features.pad_id)
            vecs = self.model.map_batches(feats, lambda batch: self.model.encode(batch["a"], task=stream.task).pooled,
                                          128)
            cache[part] = torch.from_numpy(vecs).to(self.device)
        stream.cache = cache

    def start_stage(self, stage: Stage) -> None:
        """Optimizer, schedule, loss weighting and SMART teacher of a stage; the model
        keeps the weights it has (pretrained, or the previous stage's)."""
        cfg = stage.train
        self.stage, self.streams = stage, stage.streams
        self.model.bert.requires_grad_(not cfg.freeze_encoder)
        self.uncertainty = (UncertaintyWeighting(list(stage.streams)).to(self.device)
                            if stage.supervised and cfg.loss_weighting == "uncertainty" else None)
        self.task_weights = {t: cfg.loss_weights.get(t, 1.0) for t in stage.streams}
        # each task's loss modules (core/losses/functions.py) and the stage's regularizers (core/losses/smart.py)
        self.task_losses: dict[str, TaskLoss] = (
            {t: build_task_losses(t, cfg).to(self.device) for t in stage.streams} if stage.supervised else {})
        self.regularizers = build_regularizers(cfg.smart, self.model) if stage.supervised else []
        if (stage.supervised and cfg.freeze_encoder and self.model.heads_use_pooled_only()
                and not cfg.smart.enabled):
            for stream in stage.streams.values():
                # encoding the whole set once pays only if the stage reads at least as many
                # inputs; otherwise the frozen encoder runs per batch (forward only)
                if stage.total_steps * stream.batch_size >= len(stream.features):
                    self._cache_encodings(stream)
        # torch_adamw: the fused kernel, on CUDA and CPU alike (one pass over the weights;
        # on 2 CPU cores 33 ms a step for MiniLM vs 336 ms for torch's default foreach)
        self.optimizer = make_optimizer(cfg.optimizer, self._param_groups(stage), cfg.lr,
                                        cfg.weight_decay, fused=self.device.type in ("cuda", "cpu"))
        self.scheduler = warmup_linear(self.optimizer, stage.total_steps, cfg.warmup_ratio, cfg.lr_schedule)

    # -------------------------------------------------------------- training
    def local_indices(self, idx: list[int]) -> list[int]:
        """This process's share of a global batch: ``idx[rank::world_size]`` under data
        parallelism (core/training/distributed.py), all of it otherwise."""
        return self.dist.shard(idx)

    @property
    def teacher(self):
        """The Bregman proximal term's momentum teacher of this stage, or None."""
        for reg in getattr(self, "regularizers", []):
            if isinstance(reg, BregmanProximal):
                return reg.teacher
        return None

    def _supervised_loss(self, stream: TaskStream, idx: list[int], n_global: int | None = None) \
            -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(the task's own loss, the loss to optimize before task weighting, auxiliary
        terms) of one batch: the task's loss modules, each hybrid branch's own loss, then
        the regularizers (SMART, Bregman), each with its weight."""
        task = stream.task
        labels = stream.labels[idx].to(self.device)
        losses = self.task_losses[task]
        if stream.cache is not None:   # frozen encoder, cached pooled vectors
            a, b = self._cached_inputs(stream, idx)
            output = self.model.head_forward(task, a, b)
            return self._module_losses(losses, task, {"output": output}, a, b, labels, n_global)
        batch = stream.features.batch(idx, self.device)
        embeds = None
        if any(r.needs_embeddings for r in self.regularizers):   # SMART perturbs the input embeddings
            lookup = self.model.bert.embeddings.word_embeddings
            embeds = {part: lookup(x["input_ids"]) for part, x in batch.items()}
        a, b = self.model.encode_task(task, batch, embeds)
        branches = self.model.head_branches(task, a, b)
        loss, total, aux = self._module_losses(losses, task, branches, a, b, labels, n_global)
        for reg in self.regularizers:
            value = reg(self.model, task, batch, embeds, branches["output"])
            total = total + reg.weight * value
            aux[f"{task}_{reg.name}"] = value.item()
        return loss, total, aux

    def _cached_inputs(self, stream: TaskStream, idx: list[int]) -> tuple[Encoding, Encoding | None]:
        enc = {p: Encoding(None, None, v[idx]) for p, v in stream.cache.items()}
        return self.model.head_inputs(stream.task, enc)

    def _module_losses(self, losses: TaskLoss, task: str, branches: dict[str, torch.Tensor],
                       a: Encoding, b: Encoding | None, labels: torch.Tensor, n_global: int | None) \
            -> tuple[torch.Tensor, torch.Tensor, dict]:
        """The task's loss modules on the head output; a hybrid head's branches are also
        trained on their own with the task's own loss (``hybrid_aux_weight``)."""
        cfg = self.stage.train
        u = v = None
        if losses.needs_vectors and b is not None:
            u, v = a.pooled, b.pooled
        batch = LossBatch(task, branches["output"], labels, u, v,
                          self.dist if self.dist.enabled else None, n_global)
        total, parts = losses(batch)
        loss = parts[losses.primary]
        aux = {f"{task}_{name}": value.item() for name, value in parts.items() if name != losses.primary}
        own = losses.terms[0]
        for name in ("cross", "bi"):
            if name in branches and cfg.hybrid_aux_weight > 0:
                branch = own(LossBatch(task, branches[name], labels, u, v))
                total = total + cfg.hybrid_aux_weight * branch
                aux[f"{task}_{name}"] = branch.item()
        return loss, total, aux

    def train_step(self, tasks: tuple[str, ...] | None = None) -> dict:
        """One optimizer step over a batch of each of ``tasks`` (default: every task of
        the stage, i.e. a round-robin step); the step's loss is sum_t w_t L_t.
        ``train.backward: cyclic``: one backward and optimizer update per task instead,
        in the order of ``tasks`` (the learning-rate schedule still moves once a step)."""
        cfg = self.stage.train
        tasks = tuple(self.streams) if tasks is None else tasks
        self._train_mode(cfg)
        losses, aux, n_examples, shares = {}, {}, 0, {}
        # The global batch of every task in this step, then this process's share of it.
        batches = []
        for task in tasks:
            global_idx = self.streams[task].next_indices()
            batches.append((task, self.local_indices(global_idx), len(global_idx)))
        groups = [[b] for b in batches] if cfg.backward == "cyclic" else [batches]
        for group in groups:
            self.optimizer.zero_grad(set_to_none=True)
            for task, idx, n_global in group:
                name = task if self.stage.supervised else cfg.objective
                n_examples += n_global
                shares[name] = len(idx) / n_global
                if not idx:   # a global batch smaller than the number of processes
                    losses[name] = 0.0
                    continue
                loss = self._backward(task, idx, n_global, aux)
                losses[name] = loss.item()
            self._update()
        losses = self.dist.global_mean(losses, shares, self.device)   # the global batch's losses
        self.scheduler.step()
        self.step += 1
        self.stage_step += 1
        if self.uncertainty is not None:
            aux.update({f"{t}_weight": round(w, 4) for t, w in self.uncertainty.weights().items()})
        return {"losses": losses, "aux": aux, "examples": n_examples}

    def _backward(self, task: str, idx: list[int], n_global: int, aux: dict) -> torch.Tensor:
        """Forward and backward of one task batch (this process's share ``idx``); returns
        the task's own loss (for logging)."""
        loss, total = self._task_objective(task, idx, n_global, aux)
        # data parallel: this share's weight in the global batch mean (1 alone)
        (total * self.dist.loss_scale(len(idx), n_global)).backward()
        return loss

    def _task_objective(self, task: str, idx: list[int], n_global: int, aux: dict) \
            -> tuple[torch.Tensor, torch.Tensor]:
        """(the task's own loss, what the batch adds to the step's objective: its loss
        modules and regularizers, task-weighted) of one task batch."""
        cfg = self.stage.train
        stream = self.streams[task]
        bf16 = self.config.train.precision == "bf16"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            if self.stage.supervised:
                loss, total, extra = self._supervised_loss(stream, idx, n_global)
                aux.update(extra)
                if self.uncertainty is not None:
                    total = self.uncertainty(task, total)
                else:
                    total = self.task_weights.get(task, 1.0) * total
            else:
                batch = stream.features.batch(idx, self.device)
                loss = total = objective_loss(self.model, cfg.objective, batch, cfg.contrastive,
                                              gather=self.dist.gather_rows if self.dist.enabled else None,
                                              n_global=n_global if self.dist.enabled else None)
        return loss, total

    def _update(self) -> None:
        """Average the gradients over processes, clip, step the optimizer, move the teacher."""
        cfg = self.stage.train
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.dist.all_reduce_gradients(params)
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        self.optimizer.step()
        for reg in self.regularizers:
            if hasattr(reg, "after_step"):
                reg.after_step(self.model)

    # ------------------------------------------------------------ evaluation
    def _eval_tasks(self) -> list[str]:
        """Tasks with a head trained so far (this stage included)."""
        trained = {t for s in self.stages[:self.stage.index + 1] if s.supervised for t in s.streams}
        return [t for t in TASKS if t in trained]

    def evaluate(self) -> tuple[dict, dict]:
        """Dev metrics and prediction frames: the trained tasks' heads after a supervised
        stage; the embeddings' zero-shot STS correlation after an objective stage."""
        if not self.stage.supervised:
            return embedding_sts_metrics(self.model, self.dev_data["sts"], self.stage.train.eval_batch_size), {}
        return evaluate_model(self.model, tasks=self._eval_tasks(), datasets=self.dev_data,
                              batch_size=self.stage.train.eval_batch_size)

    def _score(self, metrics: dict) -> float:
        if not self.stage.supervised:
            return float(metrics["embedding_sts_pearson"])
        return mean_score(metrics, list(self.streams))

    # ------------------------------------------------------------------- run
    def run(self) -> dict:
        self.setup()
        cfg = self.config
        t0 = time.time()
        first = self.stages[0]
        self.events.write(
            "start", name=cfg.name, config=cfg.to_dict(), device=str(self.device),
            threads=torch.get_num_threads(), world_size=self.dist.world_size, total_steps=self.total_steps,
            steps_per_epoch=first.steps_per_epoch, epochs=first.train.epochs, resumed_at_step=self.step,
            stages=[{"name": s.name, "objective": s.train.objective, "schedule": s.train.schedule,
                     "tasks": list(s.train.tasks), "epochs": s.train.epochs,
                     "steps_per_epoch": s.steps_per_epoch, "total_steps": s.total_steps,
                     "train_size": len(s.objective_set) if s.objective_set is not None else None}
                    for s in self.stages],
            train_sizes={t: len(d) for t, d in self.train_data.items()},
            dev_sizes={t: len(d) for t, d in self.dev_data.items()},
            skipped_rows={f"{t}/{s}": d.n_skipped for s, dd in (("train", self.train_data), ("dev", self.dev_data))
                          for t, d in dd.items()})
        epoch = self.start_epoch
        try:
            for stage in self.stages[self.stage_index:]:
                resuming = self._resume_state is not None and stage.index == self.stage_index
                if not resuming:
                    self.stage_step, self.start_epoch, self.start_epoch_step = 0, 0, 0
                self.start_stage(stage)
                if resuming:
                    self._restore_stage_state()
                self.events.write("stage", stage=stage.name, index=stage.index, objective=stage.train.objective,
                                  tasks=list(stage.train.tasks), total_steps=stage.total_steps, step=self.step,
                                  resumed=resuming, encoder_checksum=encoder_checksum(self.model),
                                  frozen_cache=any(s.cache is not None for s in stage.streams.values()))
                for epoch in range(self.start_epoch, stage.train.epochs):
                    if self.stage_step >= stage.total_steps:
                        break
                    start, self.start_epoch_step = self.start_epoch_step, 0
                    self._train_epoch(epoch, t0, start)
                    self._end_epoch(epoch, t0)
                self.events.write("stage_done", stage=stage.name, index=stage.index, step=self.step,
                                  encoder_checksum=encoder_checksum(self.model))
        except KeyboardInterrupt:
            self.events.write("cancelled", step=self.step, epoch=epoch)
            raise
        except Exception as e:
            self.events.write("error", step=self.step, epoch=epoch, message=f"{type(e).__name__}: {e}")
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

    def _train_epoch(self, epoch: int, t0: float, start: int = 0) -> None:
        """Steps ``start``.. of ``epoch`` (``start`` > 0: resumed mid-epoch); resume state
        every ``train.resume_every`` optimizer steps (the epoch's last step excepted: its
        state is saved after the dev evaluation, by :meth:`_end_epoch`)."""
        stage, cfg = self.stage, self.stage.train
        plan = stage.plan(epoch)[start: start + stage.total_steps - self.stage_step]
        adaptive = cfg.loss_weighting == "dev" and stage.supervised
        if adaptive:
            self.task_weights = self._dev_weights(epoch)
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
                extra["loss_weights"] = {t: round(w, 4) for t, w in self.task_weights.items()}
            steps.record(self.step, i == len(plan) - 1, out["examples"], t0 - self.elapsed_before,
                         total_steps=self.total_steps, epoch=epoch + 1, stage=stage.name, loss=out["losses"],
                         lr=self.scheduler.get_last_lr()[0], **extra)
            if self.step % cfg.resume_every == 0 and i < len(plan) - 1:
                self._checkpoint_resume(epoch, start + i + 1, self.elapsed_before + time.time() - t0)
        bar.close()

    def _epoch_loss_mean(self) -> dict[str, float]:
        """Each loss's mean over the steps of the epoch just trained (since the resume, for
        an epoch resumed mid-way): the per-epoch training loss report 001 §6.1 follows."""
        return {name: round(float(np.mean(v)), 6) for name, v in getattr(self, "_epoch_losses", {}).items() if v}

    def _dev_weights(self, epoch: int) -> dict[str, float]:
        """loss_weighting 'dev': weights from this stage's last dev evaluation."""
        last = [r for r in self.history if r.get("stage") == self.stage.name]
        if epoch == 0 or not last:
            return {t: self.stage.train.loss_weights.get(t, 1.0) for t in self.streams}
        return dev_weights({t: last[-1][PRIMARY[t]] for t in self.streams}, list(self.streams))

    def _end_epoch(self, epoch: int, t0: float) -> None:
        stage = self.stage
        stage_over = epoch + 1 >= stage.train.epochs or self.stage_step >= stage.total_steps
        last_stage = stage.index == len(self.stages) - 1
        skip = stage.train.dev_eval == "none" or (stage.train.dev_eval == "stage_end" and not stage_over)
        if skip:
            # no dev evaluation this epoch (train.dev_eval): its mean training loss, resume state
            self.events.write("epoch_done", epoch=epoch + 1, step=self.step, stage=stage.name,
                              train_loss=self._epoch_loss_mean())
            self._checkpoint_resume(epoch + 1, 0, self.elapsed_before + time.time() - t0)
            return
        # rank 0 evaluates; every rank gets its metrics, so all take the same decisions
        metrics, frames = self.evaluate() if self.dist.is_main else (None, {})
        metrics = self.dist.broadcast_object(metrics)
        score = self._score(metrics)
        record = {"epoch": epoch + 1, "step": self.step, "score": score, "stage": stage.name, **metrics}
        self.history.append(record)
        # the checkpoint: the last stage's best epoch (train.select 'mean'), or its last ('last')
        improved = last_stage and self._improves(stage.train.select, score, metrics)
        self.events.write("eval", **record, best=improved, train_loss=self._epoch_loss_mean())
        wall = self.elapsed_before + time.time() - t0
        if improved:
            self.best_score = score
            self.best = record
            if self.dist.is_main:
                # one atomic publication: weights, config.json, tokenizer, metrics.json and
                # predictions/ appear together, with the COMPLETE marker (core/model/multitask.py)
                metrics = json.dumps(self._metrics_summary(wall, finished=False), indent=2, default=json_default)
                populate = (lambda d: write_predictions(frames, d / "predictions", "dev")) if frames else None
                self.model.save(self.out, extra={"trained": {"epoch": epoch + 1, "step": self.step,
                                                             "stage": stage.name}},
                                extra_files={"metrics.json": metrics}, populate=populate)
            self.events.write("checkpoint", step=self.step, epoch=epoch + 1, path=str(self.out), score=score)
        else:
            self._write_metrics(wall, finished=False)
        run_over = last_stage and stage_over
        if not run_over:   # after the very last epoch there is nothing to resume
            self._checkpoint_resume(epoch + 1, 0, wall)

    def _improves(self, select: str, score: float, metrics: dict) -> bool:
        """Whether this epoch's dev metrics replace the checkpoint (``train.select``): 'last'
        always; 'mean' on a higher mean score; 'majority' when more than half of the trained
        tasks' primary metrics beat the checkpoint's (report 000 §5.2: two of three). The
        first evaluated epoch of the last stage always does."""
        best = getattr(self, "best", None)
        if select == "last":
            return True
        if select == "mean":
            return score > self.best_score
        if best is None:
            return True
        tasks = [t for t in self.streams if PRIMARY.get(t) in metrics]
        better = sum(metrics[PRIMARY[t]] > best.get(PRIMARY[t], -math.inf) for t in tasks)
        return better * 2 > len(tasks)

    def _checkpoint_resume(self, epoch: int, epoch_step: int, wall: float) -> None:
        """Resume state: continue at step ``epoch_step`` of ``epoch`` (0-based)."""
        rng_states = self.dist.all_gather_object(rng_state(self.device))   # every rank's own
        if self.dist.is_main:
            self._save_resume_state(epoch, epoch_step, wall, rng_states)

    def _write_metrics(self, wall: float, finished: bool) -> dict:
        summary = self._metrics_summary(wall, finished)
        if self.dist.is_main:
            atomic_write_json(self.out / "metrics.json", summary, indent=2, default=json_default)
        return summary

    def _metrics_summary(self, wall: float, finished: bool) -> dict:
        best = getattr(self, "best", None) or {}
        summary = {
            "name": self.config.name,
            "dev": {k: v for k, v in best.items() if k not in ("epoch", "step", "score", "stage")},
            "mean_score": best.get("score"), "best_epoch": best.get("epoch"), "best_step": best.get("step"),
            "primary_metrics": {t: PRIMARY[t] for t in self.stages[-1].streams if t in PRIMARY},
            "stages": [s.name for s in self.stages],
            "history": self.history, "steps": self.step, "wall_time_s": round(wall, 1),
            "device": str(self.device), "threads": torch.get_num_threads(), "finished": finished,
        }
        if self.dist.enabled:
            summary["world_size"] = self.dist.world_size
        return summary

    # ---------------------------------------------------------------- resume
    def _save_resume_state(self, epoch: int, epoch_step: int, wall: float,
                           rng_states: list[dict] | None = None) -> None:
        """Everything an uninterrupted run carries from one step to the next
        (core/training/state.py), to continue at step ``epoch_step`` of ``epoch``."""
        counters = {"stage": self.stage.index, "stage_name": self.stage.name,
                    "epoch": epoch, "epoch_step": epoch_step,
                    "epoch_done": epoch,   # read by code before mid-epoch resume state existed
                    "step": self.step, "stage_step": self.stage_step, "best_score": self.best_score,
                    "best": getattr(self, "best", None), "history": self.history, "elapsed_s": wall}
        target = self.out / "resume"
        check_free_space(target, 4 * sum(p.numel() * p.element_size() for p in self.model.parameters()),
                         "the resume state")
        with save_errors(target, "the resume state"):   # disk full, permission, read-only: one message
            save_resume_state(target, model=self.model, teacher=self.teacher, optimizer=self.optimizer,
                              scheduler=self.scheduler, uncertainty=self.uncertainty, counters=counters,
                              streams=self.streams, rng_states=rng_states or [rng_state(self.device)])
        self.events.write("resume_state", step=self.step, epoch=epoch + 1, epoch_step=epoch_step)

    def _load_resume_state(self) -> None:
        """Weights and counters of the last finished epoch; the stage's optimizer state is
        restored by :meth:`_restore_stage_state` once the stage is set up again."""
        directory = self.out / "resume"
        state, weights, self._resume_opt = read_resume_state(directory, self.device)
        try:
            self.model.load_state_dict(weights)
        except RuntimeError as e:
            raise MinbertError(f"{directory} is corrupt and cannot be resumed from: {e}") from None
        # The random state of the epoch boundary: dropout and the next stage's draws
        # continue exactly as in an uninterrupted run.
        self._resume_rng = (select_rank_rng(self._resume_opt, self.dist.rank, self.dist.world_size),
                            py_rng_from_json(state["python_rng"]),
                            np_rng_from_json(state["numpy_rng"]) if state.get("numpy_rng") else None)
        self._set_resumed_rng()
        stage_index = state.get("stage", 0)
        if stage_index >= len(self.stages) or state.get("stage_name", self.stages[stage_index].name) \
                != self.stages[stage_index].name:
            raise MinbertError(f"{directory} was saved by a recipe with other stages; resume with the "
                               f"same recipe, or start again with --overwrite")
        self.step, self.elapsed_before = state["step"], state["elapsed_s"]
        self.best_score = state["best_score"] if state["best_score"] is not None else -math.inf
        if state.get("best"):
            self.best = state["best"]
        self.history = state["history"]
        stage = self.stages[stage_index]
        self.stage_step = state.get("stage_step", state["step"])
        self.start_epoch = state.get("epoch", state["epoch_done"])
        self.start_epoch_step = state.get("epoch_step", 0)
        if self.start_epoch_step == 0 and (self.start_epoch >= stage.train.epochs
                                           or self.stage_step >= stage.total_steps):
            # that stage is done: the next one starts afresh from these weights
            self.stage_index, self._resume_state = stage_index + 1, None
        else:
            self.stage_index, self._resume_state = stage_index, state
        self.events.write("resume", stage=stage.name, step=self.step, epoch=self.start_epoch + 1,
                          epoch_step=self.start_epoch_step, epoch_done=self.start_epoch)

    def _set_resumed_rng(self) -> None:
        torch_state, py_state, np_state = self._resume_rng
        set_rng_state(torch_state, self.device)
        random.setstate(py_state)
        if np_state is not None:
            np.random.set_state(np_state)

    def _restore_stage_state(self) -> None:
        directory, state, opt = self.out / "resume", self._resume_state, self._resume_opt
        if self.teacher is not None:
            load_teacher_state(directory, self.teacher)
        self.optimizer.load_state_dict(opt["optimizer"])
        self.scheduler.load_state_dict(opt["scheduler"])
        if self.uncertainty is not None and opt.get("uncertainty") is not None:
            self.uncertainty.load_state_dict(opt["uncertainty"])
        # Streams continue from where the epoch boundary left them: the same batches as
        # an uninterrupted run, mid-pass included.
        remaining = state.get("stream_remaining", {})
        for task, passes in state["stream_passes"].items():
            if task in self.streams:
                self.streams[task].restart(passes, remaining.get(task))
        # generators again, after the stage's set-up: the run continues drawing exactly
        # where the saved step left off
        self._set_resumed_rng()
        self._resume_state = None


def build_config(args) -> Config:
    overrides = list(args.set or [])
    if args.limit is not None:
        overrides.append(f"data.limit={args.limit}")
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.device is not None:
        overrides.append(f"train.device={args.device}")
    return Config.from_yaml(args.config, overrides)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core.train", description=__doc__, epilog=format_option_help(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="recipe YAML, e.g. configs/quick.yaml")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set train.lr=3e-5 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from the last resume state (saved every train.resume_every steps and at epoch ends)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous run in --out")
    p.add_argument("--limit", type=int, help="train on a seeded, label-stratified sample of N examples of every "
                   "training set (the same rows for every seed)")
    p.add_argument("--max-steps", type=int, help="stop after N optimizer steps")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars (logs still written)")
    return p


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_command(lambda: _train(args), interrupted="cancelled")


def _train(args) -> int:
    dist = DistContext()
    try:
        config = build_config(args)
        check_fits(config)   # core/training/footprint.py: a recipe too big for this machine stops here, not in an OOM
        # under torchrun (WORLD_SIZE > 1): join the process group, NCCL on CUDA, gloo on CPU
        dist = init_distributed(config.train.device)
        trainer = Trainer(config, args.out, resume=args.resume, progress=not args.no_progress,
                          overwrite=args.overwrite, dist=dist)
        summary = trainer.run()
    finally:
        shutdown(dist)
    if dist.is_main:
        print(json.dumps({"checkpoint": str(args.out), "mean_score": summary["mean_score"], **summary["dev"],
                          "wall_time_s": summary["wall_time_s"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

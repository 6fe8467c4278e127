"""Train a MultitaskBert from a YAML recipe.

    python -m core.train --config configs/NAME.yaml --out checkpoints/NAME
            [--set key=value ...] [--resume] [--limit N] [--max-steps N]
            [--seed S] [--device auto|cpu|cuda]

The recipe is parsed and validated once (``core.config.Config``); every flag above is
applied to that object as an override, so the checkpoint's ``config.json`` holds exactly
what ran. The output directory receives, after each epoch's dev evaluation, the best
checkpoint so far (``model.safetensors``, ``config.json``, ``metrics.json``), a
``train_log.jsonl`` event log, and ``resume/`` (state of the last finished epoch, used
by ``--resume``, removed when the run finishes).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from core.config import Config
from core.data import TaskData, bucket_batches, load_task
from core.errors import ConfigError, MinbertError
from core.evaluate import PRIMARY, evaluate_model, mean_score, write_predictions
from core.losses import task_loss
from core.model import Encoding, MultitaskBert, TaskFeatures
from core.optim import make_optimizer, warmup_linear

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


class EventLog:
    """``train_log.jsonl``: one JSON event per line, flushed at once (the app tails it)."""

    def __init__(self, path: Path):
        self.path = path
        self.start = time.time()

    def write(self, event: str, **fields) -> dict:
        record = {"event": event, "time": round(time.time(), 3), **fields}
        with self.path.open("a") as f:
            f.write(json.dumps(record, default=_json_default) + "\n")
        return record


def _json_default(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


@dataclass
class TaskStream:
    """One task's training examples, tokenized once, served as length-bucketed batches
    that are reshuffled (deterministically, from seed and pass number) when used up."""
    task: str
    features: TaskFeatures
    labels: torch.Tensor
    batch_size: int
    seed: int
    cache: dict[str, torch.Tensor] | None = None   # frozen encoder: pooled vectors per part
    passes: int = 0

    def __post_init__(self):
        self._batches: list[list[int]] = []

    @property
    def n_batches(self) -> int:
        return math.ceil(len(self.features) / self.batch_size)

    def next_indices(self) -> list[int]:
        if not self._batches:
            self._batches = bucket_batches(self.features.lengths, self.batch_size, shuffle=True,
                                           seed=self.seed * 1000 + self.passes)
            self.passes += 1
        return self._batches.pop()

    def restart(self, passes: int) -> None:
        """Position the stream at the start of pass ``passes`` (used by --resume)."""
        self.passes, self._batches = passes, []


class Trainer:
    def __init__(self, config: Config, out_dir: str | Path, resume: bool = False, progress: bool = True,
                 overwrite: bool = False):
        self.config = config
        self.out = Path(out_dir)
        self.progress = progress
        self.resume = resume
        if self.out.exists() and (self.out / "train_log.jsonl").exists() and not resume and not overwrite:
            raise MinbertError(f"{self.out} already holds a run; pass --resume to continue it, "
                               f"--overwrite to replace it, or choose another --out")
        if resume and not (self.out / "resume" / "state.json").is_file():
            raise MinbertError(f"nothing to resume in {self.out}: no finished epoch was saved "
                               f"(resume/state.json is missing)")
        if overwrite and self.out.exists() and not resume:
            for name in ("train_log.jsonl", "metrics.json", "resume", "predictions"):
                p = self.out / name
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        self.device = resolve_device(config.train.device)

    # ------------------------------------------------------------------ setup
    def _load_data(self) -> tuple[dict[str, TaskData], dict[str, TaskData]]:
        cfg = self.config
        train = {t: load_task(t, "train", cfg.data.dir, limit=cfg.data.limit) for t in cfg.train.tasks}
        dev = {t: load_task(t, "dev", cfg.data.dir, limit=cfg.data.eval_limit) for t in cfg.train.tasks}
        return train, dev

    def _param_groups(self) -> list[dict]:
        cfg, groups = self.config.train, []
        no_decay = lambda n: n.endswith("bias") or "LayerNorm" in n
        encoder = [] if cfg.freeze_encoder else list(self.model.bert.named_parameters())
        heads = list(self.model.heads.named_parameters())
        for params, lr in ((encoder, cfg.lr), (heads, cfg.head_lr or cfg.lr)):
            decay = [p for n, p in params if not no_decay(n)]
            plain = [p for n, p in params if no_decay(n)]
            groups += [{"params": decay, "lr": lr, "weight_decay": cfg.weight_decay},
                       {"params": plain, "lr": lr, "weight_decay": 0.0}]
        return [g for g in groups if g["params"]]

    def _cache_encodings(self, stream: TaskStream) -> None:
        """Frozen encoder: encode every training input once; heads then train on vectors."""
        cache = {}
        for part, enc in stream.features.parts.items():
            feats = TaskFeatures({"a": enc}, stream.features.pad_id)
            vecs = self.model._run(feats, lambda batch: self.model.encode(batch["a"]).pooled, 128)
            cache[part] = torch.from_numpy(vecs).to(self.device)
        stream.cache = cache

    def setup(self) -> None:
        cfg = self.config
        seed_everything(cfg.train.seed)
        self.out.mkdir(parents=True, exist_ok=True)
        self.events = EventLog(self.out / "train_log.jsonl")
        self.train_data, self.dev_data = self._load_data()
        self.model = MultitaskBert.from_config(cfg).to(self.device)
        if cfg.train.freeze_encoder:
            self.model.bert.requires_grad_(False)
        self.streams: dict[str, TaskStream] = {}
        for i, (task, data) in enumerate(self.train_data.items()):
            feats = self.model.featurize(task, data.texts_a, data.texts_b)
            labels = torch.as_tensor(data.labels)
            self.streams[task] = TaskStream(task, feats, labels, cfg.train.batch_size, cfg.train.seed + 7919 * i)
        if cfg.train.freeze_encoder and self.model.heads_use_pooled_only():
            for stream in self.streams.values():
                self._cache_encodings(stream)
        spe = cfg.train.steps_per_epoch
        counts = [s.n_batches for s in self.streams.values()]
        self.steps_per_epoch = spe if isinstance(spe, int) else (min(counts) if spe == "min" else max(counts))
        self.total_steps = self.steps_per_epoch * cfg.train.epochs
        if cfg.train.max_steps:
            self.total_steps = min(self.total_steps, cfg.train.max_steps)
        self.optimizer = make_optimizer(cfg.train.optimizer, self._param_groups(), cfg.train.lr,
                                        cfg.train.weight_decay, fused=self.device.type == "cuda")
        self.scheduler = warmup_linear(self.optimizer, self.total_steps, cfg.train.warmup_ratio)
        self.step, self.start_epoch, self.best_score, self.history = 0, 0, -math.inf, []
        self.elapsed_before = 0.0
        if self.resume:
            self._load_resume_state()

    # -------------------------------------------------------------- training
    def _task_output(self, stream: TaskStream, idx: list[int]) -> torch.Tensor:
        if stream.cache is not None:
            enc = {p: Encoding(None, None, v[idx]) for p, v in stream.cache.items()}
            return self.model.head_forward(stream.task, enc.get("a", enc.get("ab")), enc.get("b"))
        return self.model(stream.task, stream.features.batch(idx, self.device))

    def train_step(self) -> dict[str, float]:
        """One optimizer step: a batch of every task, loss = sum of w_t * L_t."""
        cfg = self.config.train
        self.model.train()
        if cfg.freeze_encoder:
            self.model.bert.eval()  # frozen: no dropout noise in the features either
        self.optimizer.zero_grad(set_to_none=True)
        losses, n_examples = {}, 0
        for task, stream in self.streams.items():
            idx = stream.next_indices()
            output = self._task_output(stream, idx)
            loss = task_loss(task, output, stream.labels[idx].to(self.device))
            (cfg.loss_weights.get(task, 1.0) * loss).backward()
            losses[task] = loss.item()
            n_examples += len(idx)
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]],
                                           cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return {"losses": losses, "examples": n_examples}

    def evaluate(self) -> dict:
        metrics, frames = evaluate_model(self.model, tasks=list(self.streams), datasets=self.dev_data,
                                         batch_size=self.config.train.eval_batch_size)
        return metrics, frames

    def run(self) -> dict:
        self.setup()
        cfg = self.config
        t0 = time.time()
        self.events.write(
            "start", name=cfg.name, config=cfg.to_dict(), device=str(self.device),
            threads=torch.get_num_threads(), total_steps=self.total_steps,
            steps_per_epoch=self.steps_per_epoch, epochs=cfg.train.epochs, resumed_at_step=self.step,
            train_sizes={t: len(d) for t, d in self.train_data.items()},
            dev_sizes={t: len(d) for t, d in self.dev_data.items()},
            skipped_rows={f"{t}/{s}": d.n_skipped for s, dd in (("train", self.train_data), ("dev", self.dev_data))
                          for t, d in dd.items()},
            frozen_cache=any(s.cache is not None for s in self.streams.values()))
        for data in [*self.train_data.values(), *self.dev_data.values()]:
            if data.n_skipped:
                log.warning(data.summary())
        epoch = self.start_epoch
        try:
            for epoch in range(self.start_epoch, cfg.train.epochs):
                if self.step >= self.total_steps:
                    break
                self._train_epoch(epoch, t0)
                self._end_epoch(epoch, t0)
        except KeyboardInterrupt:
            self.events.write("cancelled", step=self.step, epoch=epoch)
            raise
        except Exception as e:
            self.events.write("error", step=self.step, epoch=epoch, message=f"{type(e).__name__}: {e}")
            raise
        wall = self.elapsed_before + time.time() - t0
        summary = self._write_metrics(wall, finished=True)
        shutil.rmtree(self.out / "resume", ignore_errors=True)
        self.events.write("done", step=self.step, wall_time_s=round(wall, 1), best=summary["dev"],
                          mean_score=summary["mean_score"])
        return summary

    def _train_epoch(self, epoch: int, t0: float) -> None:
        cfg = self.config.train
        steps = min(self.steps_per_epoch, self.total_steps - self.step)
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not self.progress,
                   dynamic_ncols=True, leave=True)
        window_t, window_n = time.time(), 0
        for i in range(steps):
            out = self.train_step()
            window_n += out["examples"]
            bar.update(1)
            bar.set_postfix({t: f"{v:.3f}" for t, v in out["losses"].items()})
            if self.step % cfg.log_every == 0 or i == steps - 1:
                now = time.time()
                self.events.write("step", step=self.step, total_steps=self.total_steps, epoch=epoch + 1,
                                  loss=out["losses"], lr=self.scheduler.get_last_lr()[0],
                                  examples_per_s=round(window_n / max(now - window_t, 1e-9), 2),
                                  elapsed_s=round(self.elapsed_before + now - t0, 2))
                window_t, window_n = now, 0
        bar.close()

    def _end_epoch(self, epoch: int, t0: float) -> None:
        metrics, frames = self.evaluate()
        score = mean_score(metrics, list(self.streams))
        improved = score > self.best_score
        record = {"epoch": epoch + 1, "step": self.step, "score": score, **metrics}
        self.history.append(record)
        self.events.write("eval", **record, best=improved)
        if improved:
            self.best_score = score
            self.best = record
            self.model.save(self.out, extra={"trained": {"epoch": epoch + 1, "step": self.step}})
            write_predictions(frames, self.out / "predictions", "dev")
            self.events.write("checkpoint", step=self.step, epoch=epoch + 1, path=str(self.out), score=score)
        wall = self.elapsed_before + time.time() - t0
        self._write_metrics(wall, finished=False)
        self._save_resume_state(epoch, wall)

    def _write_metrics(self, wall: float, finished: bool) -> dict:
        best = getattr(self, "best", None) or {}
        summary = {
            "name": self.config.name,
            "dev": {k: v for k, v in best.items() if k not in ("epoch", "step", "score")},
            "mean_score": best.get("score"), "best_epoch": best.get("epoch"), "best_step": best.get("step"),
            "primary_metrics": {t: PRIMARY[t] for t in self.streams},
            "history": self.history, "steps": self.step, "wall_time_s": round(wall, 1),
            "device": str(self.device), "threads": torch.get_num_threads(), "finished": finished,
        }
        (self.out / "metrics.json").write_text(json.dumps(summary, indent=2, default=_json_default))
        return summary

    # ---------------------------------------------------------------- resume
    def _save_resume_state(self, epoch: int, wall: float) -> None:
        """State after a finished epoch: weights, optimizer, schedule, RNG, counters."""
        tmp = self.out / "resume.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        from safetensors.torch import save_file
        save_file({k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()},
                  str(tmp / "model.safetensors"))
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state()[1]},
                   tmp / "optimizer.pt")
        state = {"epoch_done": epoch + 1, "step": self.step, "best_score": self.best_score,
                 "best": getattr(self, "best", None), "history": self.history, "elapsed_s": wall,
                 "stream_passes": {t: s.passes for t, s in self.streams.items()},
                 "python_rng": _py_rng_to_json(random.getstate())}
        (tmp / "state.json").write_text(json.dumps(state, default=_json_default))
        shutil.rmtree(self.out / "resume", ignore_errors=True)
        os.replace(tmp, self.out / "resume")

    def _load_resume_state(self) -> None:
        from core.model import read_checkpoint_weights
        directory = self.out / "resume"
        try:
            state = json.loads((directory / "state.json").read_text())
            self.model.load_state_dict(read_checkpoint_weights(directory))
            opt = torch.load(directory / "optimizer.pt", map_location=self.device, weights_only=True)
        except (json.JSONDecodeError, OSError, RuntimeError, KeyError) as e:
            raise MinbertError(f"{directory} is corrupt and cannot be resumed from: {e}") from None
        self.optimizer.load_state_dict(opt["optimizer"])
        self.scheduler.load_state_dict(opt["scheduler"])
        torch.set_rng_state(opt["torch_rng"])
        random.setstate(_py_rng_from_json(state["python_rng"]))
        self.start_epoch, self.step = state["epoch_done"], state["step"]
        self.best_score = state["best_score"] if state["best_score"] is not None else -math.inf
        if state.get("best"):
            self.best = state["best"]
        self.history, self.elapsed_before = state["history"], state["elapsed_s"]
        # Streams continue from where the epoch boundary left them: the same batches as
        # an uninterrupted run (the partial pass in progress restarts its batch order).
        for task, passes in state["stream_passes"].items():
            if task in self.streams:
                self.streams[task].restart(passes)
        self.events.write("resume", epoch_done=self.start_epoch, step=self.step)


def _py_rng_to_json(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _py_rng_from_json(obj):
    version, internal, gauss = obj
    return (version, tuple(internal), gauss)


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
    p = argparse.ArgumentParser(prog="python -m core.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="recipe YAML, e.g. configs/quick.yaml")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set train.lr=3e-5 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from the last finished epoch")
    p.add_argument("--overwrite", action="store_true", help="replace a previous run in --out")
    p.add_argument("--limit", type=int, help="keep the first N examples of every training set")
    p.add_argument("--max-steps", type=int, help="stop after N optimizer steps")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars (logs still written)")
    return p


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = build_config(args)
        trainer = Trainer(config, args.out, resume=args.resume, progress=not args.no_progress,
                          overwrite=args.overwrite)
        summary = trainer.run()
    except MinbertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
    print(json.dumps({"checkpoint": str(args.out), "mean_score": summary["mean_score"], **summary["dev"],
                      "wall_time_s": summary["wall_time_s"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

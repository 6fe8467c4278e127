"""What a training run carries from one step to the next, and how it is saved.

* :class:`TaskStream` - one task's training examples, tokenized once, served as
  length-bucketed batches of global example indices, reshuffled from (seed, pass).
* :class:`Stage` - one stage of a recipe: its train settings, streams and step budget.
* Resume state (``resume/`` of the output directory, used by ``--resume``): weights,
  SMART teacher, optimizer, schedule, uncertainty weights, every generator (torch per
  rank, Python, NumPy), stream positions, counters and dev history, written by
  :func:`save_resume_state` in one atomic swap and read back by :func:`read_resume_state`.
  A run killed at any moment and resumed ends with the same weights as an
  uninterrupted one (bitwise on CPU).

The stepping loop that uses these is in core/training/trainer.py (saving and restoring the
resume state: core/training/checkpointing.py); the event log in core/train_log.py.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import pickle
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.atomic import publish_dir, staging_dir
from core.config.schema import TrainConfig
from core.training.contrastive import ContrastiveSet
from core.data.datasets import bucket_batches
from core.errors import MinbertError
from core.model.batching import TaskTokens
from core.training.schedules import balanced_batches, epoch_plan
from core.train_log import json_default

log = logging.getLogger(__name__)

OBJECTIVE_STREAM = "objective"   # the stream name of a sentence-embedding objective's set


@dataclass
class TaskStream:
    """One task's training examples, tokenized once, served as length-bucketed batches
    of *global* example indices, reshuffled (deterministically, from seed and pass
    number) when used up. ``balanced``: each pass is drawn class-balanced with
    replacement (inverse label frequency, report 001) instead of a permutation."""
    task: str
    features: TaskTokens
    labels: torch.Tensor
    batch_size: int
    seed: int
    cache: dict[str, torch.Tensor] | None = None   # frozen encoder: pooled vectors per part
    passes: int = 0
    balanced: bool = False
    min_batch: int = 1   # data parallel: world size, so that no rank gets an empty share

    def __post_init__(self):
        self._batches: list[list[int]] = []

    @property
    def n_batches(self) -> int:
        return math.ceil(len(self.features) / self.batch_size)

    def next_indices(self) -> list[int]:
        if not self._batches:
            seed = self.seed * 1000 + self.passes
            if self.balanced:
                self._batches = balanced_batches(self.labels.numpy(), self.features.lengths,
                                                 self.batch_size, seed=seed)
            else:
                self._batches = bucket_batches(self.features.lengths, self.batch_size, shuffle=True, seed=seed)
            # a final batch smaller than the number of processes would leave a rank without
            # examples (and out of the in-batch losses' collectives): it is skipped
            self._batches = [b for b in self._batches if len(b) >= self.min_batch] or self._batches
            self.passes += 1
        return self._batches.pop()

    def restart(self, passes: int, remaining: list[list[int]] | None = None) -> None:
        """Position the stream where a saved run left it (used by --resume): ``passes``
        batch orders drawn so far, ``remaining`` batches of the current one."""
        self.passes, self._batches = passes, [list(b) for b in (remaining or [])]

    @property
    def remaining(self) -> list[list[int]]:
        return [list(b) for b in self._batches]


@dataclass
class Stage:
    """One stage of a recipe: its train settings, streams and step budget."""
    index: int
    name: str
    train: TrainConfig
    streams: dict[str, TaskStream]
    steps_per_epoch: int
    total_steps: int
    objective_set: ContrastiveSet | None = None

    @property
    def supervised(self) -> bool:
        return self.train.objective == "supervised"

    def n_batches(self) -> dict[str, int]:
        return {t: s.n_batches for t, s in self.streams.items()}

    def plan(self, epoch: int) -> list[tuple[str, ...]]:
        """The tasks of each step of ``epoch`` (core/training/schedules.py)."""
        cfg = self.train
        if not self.supervised:
            return [(OBJECTIVE_STREAM,)] * self.steps_per_epoch
        # a fraction of the epoch (train.epoch_fraction): its steps, in the tasks' proportions
        spe = cfg.steps_per_epoch if cfg.epoch_fraction == 1 else self.steps_per_epoch
        return epoch_plan(cfg.schedule, list(self.streams), self.n_batches(), spe,
                          cfg.task_sampling, cfg.task_ratio, seed=cfg.seed * 10007 + 101 * self.index + epoch)


# ------------------------------------------------------------------ resume state
def save_resume_state(directory: Path, *, model, teacher, optimizer, scheduler, uncertainty,
                      counters: dict, streams: dict[str, TaskStream], rng_states: list[dict]) -> None:
    """Build the resume state in a staging directory and swap it in at once
    (core/atomic.py): ``directory`` always holds one complete state, the previous one
    until the new one is in place. ``counters``: the trainer's position (stage, epoch,
    step, best score, history, elapsed time) as JSON-able values."""
    from safetensors.torch import save_file
    tmp = staging_dir(directory)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
                  str(tmp / "model.safetensors"))
        if teacher is not None:
            save_file({k: v.detach().contiguous().cpu() for k, v in teacher.model.state_dict().items()},
                      str(tmp / "teacher.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(), "rng_per_rank": rng_states,
                    "uncertainty": None if uncertainty is None else uncertainty.state_dict()},
                   tmp / "optimizer.pt")
        state = {**counters,
                 "stream_passes": {t: s.passes for t, s in streams.items()},
                 "stream_remaining": {t: s.remaining for t, s in streams.items()},
                 "python_rng": py_rng_to_json(random.getstate()),
                 "numpy_rng": np_rng_to_json(np.random.get_state())}
        (tmp / "state.json").write_text(json.dumps(state, default=json_default))
        publish_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_resume_state(directory: Path, device: torch.device) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """``(state.json, model weights, optimizer.pt)`` of a resume directory; a corrupt
    one raises :class:`MinbertError`."""
    from core.model.checkpoint import read_checkpoint_weights
    try:
        state = json.loads((directory / "state.json").read_text())
        weights = read_checkpoint_weights(directory)
        opt = torch.load(directory / "optimizer.pt", map_location=device, weights_only=True)
    except (json.JSONDecodeError, OSError, RuntimeError, KeyError, ValueError, pickle.UnpicklingError,
            MinbertError) as e:
        raise MinbertError(f"{directory} is corrupt and cannot be resumed from: {e}") from None
    return state, weights, opt


def load_teacher_state(directory: Path, teacher) -> None:
    from safetensors.torch import load_file

    from core.model.checkpoint import current_key
    try:
        stored = load_file(str(directory / "teacher.safetensors"))
        # through the checkpoint key map, as every weights file (a state saved before a rename)
        teacher.model.load_state_dict({current_key(k): v for k, v in stored.items()})
    except (OSError, RuntimeError, KeyError) as e:
        raise MinbertError(f"{directory} is corrupt and cannot be resumed from: {e}") from None


# ------------------------------------------------------------------ generators
def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """This process's torch generators: the CPU one, and the CUDA one on a GPU (dropout)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def select_rank_rng(saved: dict, rank: int, world_size: int) -> dict[str, torch.Tensor]:
    """The generator state a resumed rank continues from: its own when the run is resumed
    with the world size it was saved with. Otherwise (or from a resume state written
    before per-rank states were kept) rank 0's state, re-seeded on ranks > 0 so ranks
    do not draw identical dropout masks; such a resume is not bit-identical to an
    uninterrupted run."""
    per_rank = saved.get("rng_per_rank")
    if per_rank and len(per_rank) == world_size:
        return per_rank[rank]
    base = per_rank[0] if per_rank else {"cpu": saved["torch_rng"]}
    if rank == 0:
        return base
    log.warning("resume state was saved with %s rank(s), resuming with %d: rank %d's dropout noise is "
                "re-seeded", len(per_rank) if per_rank else "an unknown number of", world_size, rank)
    digest = hashlib.sha256(base["cpu"].cpu().numpy().tobytes() + rank.to_bytes(4, "little")).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
    # the CUDA generator keeps this rank's own seeding from the start of the run
    return {"cpu": gen.get_state()}


def py_rng_to_json(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]


def py_rng_from_json(obj):
    version, internal, gauss = obj
    return (version, tuple(internal), gauss)


def np_rng_to_json(state):
    name, keys, pos, has_gauss, cached = state
    return [name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]


def np_rng_from_json(obj):
    name, keys, pos, has_gauss, cached = obj
    return (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached)

"""The output directory of a run: its rules, and the resume state the loop saves in it.

* :func:`prepare_out_dir` - the resume-or-overwrite rule (a directory holding a run is
  continued with ``--resume``, replaced with ``--overwrite``, never silently reused) and
  the recovery of a publication cut between its two renames;
* :class:`ResumeKeeper` - saves the loop's position (every ``train.resume_every`` steps
  and at epoch ends) and restores it: weights, counters and generators when the run is
  set up (:meth:`ResumeKeeper.load`), the stage's optimizer, schedule, teacher,
  uncertainty weights and stream positions once that stage is set up again
  (:meth:`ResumeKeeper.restore_stage`). The files themselves are written and read by
  core/training/state.py.

The keeper reads and sets the loop's counters on the :class:`core.training.trainer.Trainer`
it is given (``step``, ``stage_step``, ``stage_index``, ``start_epoch``,
``start_epoch_step``, ``elapsed_before``), its selection, model and stage objects.
"""
from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np

from core.atomic import check_free_space, recover_swap, save_errors
from core.errors import MinbertError
from core.training.state import (load_teacher_state, np_rng_from_json, py_rng_from_json, read_resume_state,
                                 rng_state, save_resume_state, select_rank_rng, set_rng_state)


def prepare_out_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Check and prepare ``out`` for a run (rank 0 alone calls this)."""
    recover_swap(out)                 # a publication cut between its two renames
    if out.is_dir():
        recover_swap(out / "resume")
    if out.exists() and (out / "train_log.jsonl").exists() and not resume and not overwrite:
        raise MinbertError(f"{out} already holds a run; pass --resume to continue it, "
                           f"--overwrite to replace it, or choose another --out")
    if resume and not (out / "resume" / "state.json").is_file():
        raise MinbertError(f"nothing to resume in {out}: no resume state was saved yet "
                           f"(resume/state.json is missing; it is written every train.resume_every "
                           f"steps and at each epoch end): start the run again without --resume")
    if overwrite and out.exists() and not resume:
        for name in ("train_log.jsonl", "metrics.json", "resume", "predictions"):
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)


class ResumeKeeper:
    """The resume state of one run (``<out>/resume``)."""

    def __init__(self, out: Path):
        self.directory = out / "resume"
        self.state: dict | None = None    # read by load, until the stage it was saved in is set up again
        self.opt: dict | None = None
        self.rng = None

    @property
    def pending(self) -> bool:
        """A stage must be restored mid-way (set by :meth:`load`, cleared by :meth:`restore_stage`)."""
        return self.state is not None

    def save(self, trainer, epoch: int, epoch_step: int, wall: float) -> None:
        """Everything an uninterrupted run carries from one step to the next, to continue
        at step ``epoch_step`` of ``epoch`` (0-based); every rank's generators."""
        rng_states = trainer.dist.all_gather_object(rng_state(trainer.device))   # every rank's own
        if not trainer.dist.is_main:
            return
        sel = trainer.selection
        counters = {"stage": trainer.stage.index, "stage_name": trainer.stage.name,
                    "epoch": epoch, "epoch_step": epoch_step,
                    "epoch_done": epoch,   # read by code before mid-epoch resume state existed
                    "step": trainer.step, "stage_step": trainer.stage_step, "best_score": sel.best_score,
                    "best": sel.best, "history": sel.history, "elapsed_s": wall}
        model = trainer.model
        check_free_space(self.directory, 4 * sum(p.numel() * p.element_size() for p in model.parameters()),
                         "the resume state")
        with save_errors(self.directory, "the resume state"):   # disk full, permission, read-only: one message
            save_resume_state(self.directory, model=model, teacher=trainer.objective.teacher,
                              optimizer=trainer.optimizer, scheduler=trainer.scheduler,
                              uncertainty=trainer.objective.uncertainty, counters=counters,
                              streams=trainer.streams, rng_states=rng_states or [rng_state(trainer.device)])
        trainer.events.write("resume_state", step=trainer.step, epoch=epoch + 1, epoch_step=epoch_step)

    def load(self, trainer) -> None:
        """Weights, counters and generators of the saved position; the stage's optimizer
        state is restored by :meth:`restore_stage` once the stage is set up again."""
        state, weights, self.opt = read_resume_state(self.directory, trainer.device)
        try:
            trainer.model.load_state_dict(weights)
        except RuntimeError as e:
            raise MinbertError(f"{self.directory} is corrupt and cannot be resumed from: {e}") from None
        # The random state of the epoch boundary: dropout and the next stage's draws
        # continue exactly as in an uninterrupted run.
        dist = trainer.dist
        self.rng = (select_rank_rng(self.opt, dist.rank, dist.world_size), py_rng_from_json(state["python_rng"]),
                    np_rng_from_json(state["numpy_rng"]) if state.get("numpy_rng") else None)
        self.set_rng(trainer.device)
        stages = trainer.stages
        stage_index = state.get("stage", 0)
        if stage_index >= len(stages) or state.get("stage_name", stages[stage_index].name) \
                != stages[stage_index].name:
            raise MinbertError(f"{self.directory} was saved by a recipe with other stages; resume with the "
                               f"same recipe, or start again with --overwrite")
        trainer.step, trainer.elapsed_before = state["step"], state["elapsed_s"]
        trainer.selection.restore(state)
        stage = stages[stage_index]
        trainer.stage_step = state.get("stage_step", state["step"])
        trainer.start_epoch = state.get("epoch", state["epoch_done"])
        trainer.start_epoch_step = state.get("epoch_step", 0)
        if trainer.start_epoch_step == 0 and (trainer.start_epoch >= stage.train.epochs
                                              or trainer.stage_step >= stage.total_steps):
            # that stage is done: the next one starts afresh from these weights
            trainer.stage_index, self.state = stage_index + 1, None
        else:
            trainer.stage_index, self.state = stage_index, state
        trainer.events.write("resume", stage=stage.name, step=trainer.step, epoch=trainer.start_epoch + 1,
                             epoch_step=trainer.start_epoch_step, epoch_done=trainer.start_epoch)

    def set_rng(self, device) -> None:
        torch_state, py_state, np_state = self.rng
        set_rng_state(torch_state, device)
        random.setstate(py_state)
        if np_state is not None:
            np.random.set_state(np_state)

    def restore_stage(self, trainer) -> None:
        """The saved stage's optimizer, schedule, teacher, uncertainty weights and stream
        positions, after :meth:`Trainer.start_stage` set that stage up again."""
        state, opt, objective = self.state, self.opt, trainer.objective
        if objective.teacher is not None:
            load_teacher_state(self.directory, objective.teacher)
        trainer.optimizer.load_state_dict(opt["optimizer"])
        trainer.scheduler.load_state_dict(opt["scheduler"])
        if objective.uncertainty is not None and opt.get("uncertainty") is not None:
            objective.uncertainty.load_state_dict(opt["uncertainty"])
        # Streams continue from where the epoch boundary left them: the same batches as
        # an uninterrupted run, mid-pass included.
        remaining = state.get("stream_remaining", {})
        for task, passes in state["stream_passes"].items():
            if task in trainer.streams:
                trainer.streams[task].restart(passes, remaining.get(task))
        # generators again, after the stage's set-up: the run continues drawing exactly
        # where the saved step left off
        self.set_rng(trainer.device)
        self.state = None

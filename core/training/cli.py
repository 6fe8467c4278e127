"""Train a MultitaskBert from a YAML recipe (the command line: ``python -m core.train``).

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
* objectives (core/training/contrastive.py builds and encodes the sets; core/losses/objectives.py,
  core/losses/functions.py the formulas): supervised task losses, MNRL, SimCSE (unsupervised /
  supervised), triplets; ``mnrl_weight`` adds MNRL to the supervised pair-task batches;
* SMART (core/losses/smart.py) adversarial smoothness + Bregman proximal point;
* class-balanced sampling of a task's batches (core/training/schedules.py);
* heads and Q&ABERT prompts are model options (core/model/heads.py, core/model/prompts.py).

Where things are (a newcomer reads them in this order):

* core/training/cli.py (this file): the command line;
* core/training/trainer.py: :class:`Trainer`, the loop stage -> epoch -> step
  (:meth:`Trainer.train_step`: forward and loss -> backward -> optimizer step), calling
  its pieces: core/training/stages.py (data, streams, stages, the frozen encoder's
  cache), core/training/objective.py (the forward pass and each task's weighted loss),
  core/training/param_groups.py (the optimizer's groups), core/training/evaluation.py
  (dev evaluation, the best-checkpoint rule, metrics.json), core/training/checkpointing.py
  (output-directory rules, the resume state);
* core/training/state.py: task streams, stages, and the resume state's files;
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
import sys

from core.config.schema import Config, format_option_help
from core.errors import run_command
from core.training.distributed import DistContext, init_distributed, shutdown
from core.config.footprint import check_fits
from core.training.trainer import Trainer


def build_config(args) -> Config:
    """The recipe with every flag applied to it as an override."""
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
        check_fits(config)   # core/config/footprint.py: a recipe too big for this machine stops here, not in an OOM
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

"""The trainer's command line and the resume-or-overwrite rule: one owner for both.

Every (re)start of a training run - a local job's worker, a Slurm batch script, a study
run - builds its ``python -m core.train`` arguments with :func:`trainer_args` and picks
``--resume`` / ``--overwrite`` with :func:`resume_mode`:

* ``--resume`` when the checkpoint holds resume state (``resume/state.json``),
* ``--overwrite`` when an earlier attempt left a run without any (``train_log.jsonl``:
  what the trainer refuses to replace without a flag, ``core.training.trainer``),
* nothing otherwise.

The Slurm batch script decides on the compute node, so its shell test is generated from
the same table (:func:`resume_mode_shell`). Imports nothing beyond the standard library.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

# (trainer flag, the file in the checkpoint that calls for it), first match wins
RESUME_RULES = (("--resume", "resume/state.json"), ("--overwrite", "train_log.jsonl"))
RESUME_NOTES = {"--resume": "from its last resume state", "--overwrite": "from the start (no resume state)"}


def resume_mode(checkpoint: str | Path) -> list[str]:
    """The trainer flag for a (re)start in ``checkpoint`` (see the module docstring)."""
    ckpt = Path(checkpoint)
    for flag, marker in RESUME_RULES:
        if (ckpt / marker).is_file():
            return [flag]
    return []


def resume_mode_shell(var: str = "CKPT", array: str = "MODE") -> list[str]:
    """Bash lines that set the array ``$array`` to :func:`resume_mode` of the directory
    in ``$var``, evaluated where the job runs."""
    tests = [f'[ -f "${var}/{marker}" ]; then {array}=({flag});' for flag, marker in RESUME_RULES]
    return [f"{array}=()", f"if {tests[0]}", *(f"elif {t}" for t in tests[1:-1]),
            f"elif {tests[-1]} fi" if len(tests) > 1 else "fi"]


def trainer_args(config: str, out: str, *, seed: int | None = None, overrides: Sequence[str] = (),
                 mode: Sequence[str] = ()) -> list[str]:
    """``-m core.train`` and its arguments (after the interpreter or launcher): the recipe,
    the output directory, the seed, ``--no-progress``, every ``--set`` override, then the
    resume mode. Values are used as given (the Slurm script passes shell-quoted ones)."""
    args = ["-m", "core.train", "--config", config, "--out", out]
    if seed is not None:
        args += ["--seed", str(seed)]
    args.append("--no-progress")
    for o in overrides:
        args += ["--set", o]
    return args + list(mode)


def launcher(python: str, procs: int, before: Sequence[str] = (), after: Sequence[str] = ()) -> list[str]:
    """What runs :func:`trainer_args`: ``python`` alone for one process without options,
    else torchrun (``python -m torch.distributed.run BEFORE --nproc_per_node=N AFTER``,
    named without importing torch here)."""
    if procs <= 1 and not before and not after:
        return [python]
    return [python, "-m", "torch.distributed.run", *before, f"--nproc_per_node={int(procs)}", *after]

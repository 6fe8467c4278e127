"""Task scheduling: how the mini-batches of several tasks share an epoch's steps.

An *epoch plan* is a list with one entry per optimizer step; each entry names the
tasks that contribute a batch to that step. The trainer asks each task's stream for
the next batch of (global) example indices, so the plan alone fixes the order.

``round_robin`` (reports 003, 004)
    Every step takes one batch of every task and the step's loss is the weighted sum
    ``w1 L_sst + w2 L_sts + w3 L_qqp``. ``steps_per_epoch`` is ``"min"`` / ``"max"``
    (the smallest / largest task's number of batches) or a number.
``sequential`` (report 001)
    Each epoch trains the batches of the first task, then the second, ... in the order
    of ``train.tasks`` (e.g. SST, then STS, then Quora).
``mtdnn`` (report 000; Liu et al. 2019, MT-DNN)
    All tasks' mini-batches are merged and shuffled each epoch; each step trains one
    task.

For ``sequential`` and ``mtdnn``, ``task_sampling`` says how many batches each task
contributes to one epoch (report 000's imbalance study):

* ``proportional`` - every batch of every task once: tasks are sampled in proportion
  to their size;
* ``truncate`` / ``resample`` - every task gives as many batches as the smallest /
  largest one (larger tasks are cut, smaller ones are re-drawn: streams reshuffle and
  continue when they run out);
* ``ratio`` - batches in the ratio ``task_ratio`` (e.g. 1:2:1), as many as fit without
  re-drawing the task that is smallest relative to its share.

An integer ``steps_per_epoch`` rescales those counts to that many steps, keeping the
proportions (largest-remainder rounding); ``"min"`` / ``"max"`` keep the natural size.

Class-balanced sampling (report 001): :func:`balanced_batches` draws a pass of
examples with replacement, each with probability proportional to the inverse
frequency of its label (like ``torch.utils.data.WeightedRandomSampler``), so every
class is drawn equally often in expectation.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

SCHEDULES = ("round_robin", "sequential", "mtdnn")
SAMPLINGS = ("proportional", "truncate", "resample", "ratio")

Plan = list[tuple[str, ...]]


def task_counts(n_batches: Mapping[str, int], sampling: str = "proportional",
                ratio: Mapping[str, float] | None = None) -> dict[str, int]:
    """Batches each task contributes to one (natural-size) epoch."""
    if not n_batches:
        return {}
    if sampling == "proportional":
        return dict(n_batches)
    if sampling == "truncate":
        smallest = min(n_batches.values())
        return {t: smallest for t in n_batches}
    if sampling == "resample":
        largest = max(n_batches.values())
        return {t: largest for t in n_batches}
    if sampling == "ratio":
        if ratio is None or any(t not in ratio for t in n_batches):
            raise ValueError(f"sampling 'ratio' needs a ratio for every task {list(n_batches)}")
        unit = min(n / ratio[t] for t, n in n_batches.items())
        return {t: max(1, round(unit * ratio[t])) for t in n_batches}
    raise ValueError(f"unknown task sampling {sampling!r}; choose one of {SAMPLINGS}")


def rescale_counts(counts: Mapping[str, int], total: int) -> dict[str, int]:
    """Scale ``counts`` to sum to ``total`` keeping the proportions (largest remainder)."""
    tasks = list(counts)
    size = sum(counts.values())
    if size == 0 or total <= 0:
        return {t: 0 for t in tasks}
    exact = [counts[t] * total / size for t in tasks]
    out = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(tasks)), key=lambda i: (exact[i] - out[i], -i), reverse=True)
    for i in by_remainder[: total - sum(out)]:
        out[i] += 1
    return dict(zip(tasks, out))


def steps_in_epoch(schedule: str, n_batches: Mapping[str, int], steps_per_epoch: int | str,
                   sampling: str = "proportional", ratio: Mapping[str, float] | None = None) -> int:
    """Number of optimizer steps in one epoch."""
    if isinstance(steps_per_epoch, int):
        return steps_per_epoch
    if schedule == "round_robin":
        return (min if steps_per_epoch == "min" else max)(n_batches.values())
    return sum(task_counts(n_batches, sampling, ratio).values())


def epoch_plan(schedule: str, tasks: Sequence[str], n_batches: Mapping[str, int],
               steps_per_epoch: int | str = "min", sampling: str = "proportional",
               ratio: Mapping[str, float] | None = None, seed: int = 0) -> Plan:
    """The tasks of every step of one epoch (deterministic in ``seed``)."""
    tasks = list(tasks)
    steps = steps_in_epoch(schedule, {t: n_batches[t] for t in tasks}, steps_per_epoch, sampling, ratio)
    if schedule == "round_robin":
        return [tuple(tasks)] * steps
    counts = task_counts({t: n_batches[t] for t in tasks}, sampling, ratio)
    if isinstance(steps_per_epoch, int):
        counts = rescale_counts(counts, steps_per_epoch)
    if schedule == "sequential":
        return [(t,) for t in tasks for _ in range(counts[t])]
    if schedule == "mtdnn":
        plan = np.array([t for t in tasks for _ in range(counts[t])], dtype=object)
        np.random.default_rng(seed).shuffle(plan)
        return [(str(t),) for t in plan]
    raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")


# ------------------------------------------------------------ class balance
def inverse_frequency_weights(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    """Per-example sampling probability proportional to 1 / count(label); sums to 1."""
    labels = np.asarray(labels).astype(np.int64)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse]
    return weights / weights.sum()


def balanced_batches(labels: Sequence[int] | np.ndarray, lengths: Sequence[int], batch_size: int,
                     seed: int = 0, bucket_mult: int = 50) -> list[list[int]]:
    """One pass of ``len(labels)`` examples drawn with replacement, class-balanced,
    cut into length-homogeneous batches (sorted within chunks, batch order shuffled)."""
    n = len(labels)
    rng = np.random.default_rng(seed)
    drawn = rng.choice(n, size=n, replace=True, p=inverse_frequency_weights(labels))
    lens = np.asarray(lengths)
    chunk = batch_size * bucket_mult
    batches: list[list[int]] = []
    for start in range(0, n, chunk):
        part = drawn[start:start + chunk]
        part = part[np.argsort(lens[part], kind="stable")]
        batches.extend(part[i:i + batch_size].tolist() for i in range(0, len(part), batch_size))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]

"""Sentence-embedding objectives (``train.objective``): their training sets, built from the
task data, and their batches encoded by the model (:func:`objective_loss`). The loss math
on the embeddings is core/losses/objectives.py's (formulas in core/losses/functions.py).

``mnrl`` (reports 003, 004)
    Positive pairs: Quora duplicates and STS pairs scoring ``>= contrastive.sts_positive``
    (default 4). Loss: multiple negatives ranking, in-batch negatives, ``scale`` 20.
``simcse_unsup`` (report 003; Gao et al. 2021)
    Every distinct training sentence of the stage's tasks (SST sentences, both sides of
    Quora and STS pairs). Two forward passes with different dropout masks give the
    positive pair; temperature 0.05.
``simcse_sup`` (report 003)
    (anchor, positive, hard negative) triples. SimCSE used NLI (entailment as positive,
    contradiction as hard negative); NLI is not available offline, so we substitute the
    task data: positives are Quora duplicates and STS pairs ``>= sts_positive`` (4),
    hard negatives are the other sides of Quora non-duplicates and STS pairs
    ``<= sts_negative`` (1) - the negative partner of the same anchor when the data has
    one, otherwise one drawn from the pool of such near-miss sentences.
``triplet`` (report 001)
    "Homogenized" (anchor, positive, negatives) from all three datasets: SST - positive
    = another sentence with the same label, first negative = a sentence with a different
    label; STS - pairs ``>= sts_positive`` are (anchor, positive), the first negative is
    the other side of a pair ``<= sts_negative`` (the report splits 0-2 vs 3-5: set
    ``sts_positive: 3, sts_negative: 2``); Quora - duplicates are (anchor, positive), the
    first negative a non-duplicate partner. The remaining ``negatives - 1`` negatives
    come from the *other* datasets (``contrastive.triplet_layout: mixed``, our earlier
    layout). ``triplet_layout: report`` is report 001's own layout (§4.2.1): every SST
    and STS sentence once as anchor (STS sentences labelled by their pair's range, 0-2 or
    3-5), Quora anchors only from duplicate pairs, ``negatives`` (3) negatives from the
    anchor's dataset plus one from each other dataset (:func:`report_triplets`). The loss
    is Eq. 1, a sum over the batch's anchors (core/losses/functions.py). Only the encoder is trained.

Each set is shuffled with the run's seed and capped at ``contrastive.max_examples``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from core.config.schema import ContrastiveConfig
from core.data.datasets import TaskData
from core.errors import DataError
from core.losses.objectives import embedding_objective_loss, objective_parts


@dataclass
class ContrastiveSet:
    """Texts of an objective's training items, one list per part: ``a`` (anchor or
    sentence), ``p`` (positive), ``n`` (hard negative), ``n0 .. nK-1`` (triplet negatives)."""
    objective: str
    parts: dict[str, list[str]]
    sources: list[str] = field(default_factory=list)   # dataset each item came from

    def __len__(self) -> int:
        return len(self.parts["a"])

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.sources:
            out[s] = out.get(s, 0) + 1
        return out


# ------------------------------------------------------------------ pair pools
def _pairs(data: TaskData, keep) -> list[tuple[str, str]]:
    labels = data.labels
    return [(a, b) for a, b, y in zip(data.texts_a, data.texts_b, labels) if keep(float(y))]


def positive_pairs(train: Mapping[str, TaskData], cfg: ContrastiveConfig) -> list[tuple[str, str, str]]:
    """(a, b, source): Quora duplicates and STS pairs scoring >= cfg.sts_positive."""
    out = []
    if "qqp" in train:
        out += [(a, b, "qqp") for a, b in _pairs(train["qqp"], lambda y: y == 1)]
    if "sts" in train:
        out += [(a, b, "sts") for a, b in _pairs(train["sts"], lambda y: y >= cfg.sts_positive)]
    return out


def negative_pairs(train: Mapping[str, TaskData], cfg: ContrastiveConfig) -> list[tuple[str, str, str]]:
    """(a, b, source): Quora non-duplicates and STS pairs scoring <= cfg.sts_negative."""
    out = []
    if "qqp" in train:
        out += [(a, b, "qqp") for a, b in _pairs(train["qqp"], lambda y: y == 0)]
    if "sts" in train:
        out += [(a, b, "sts") for a, b in _pairs(train["sts"], lambda y: y <= cfg.sts_negative)]
    return out


def _partners(pairs: Sequence[tuple[str, str, str]]) -> dict[str, list[str]]:
    """sentence -> the sentences it is paired with (both directions)."""
    out: dict[str, list[str]] = {}
    for a, b, _ in pairs:
        out.setdefault(a, []).append(b)
        out.setdefault(b, []).append(a)
    return out


def task_sentences(data: TaskData) -> list[str]:
    return list(data.texts_a) + (list(data.texts_b) if data.texts_b is not None else [])


# ------------------------------------------------------------------ the sets
def unsup_sentences(train: Mapping[str, TaskData]) -> ContrastiveSet:
    seen, texts, sources = set(), [], []
    for task, data in train.items():
        for text in task_sentences(data):
            if text not in seen:
                seen.add(text)
                texts.append(text)
                sources.append(task)
    return ContrastiveSet("simcse_unsup", {"a": texts}, sources)


def mnrl_pairs(train: Mapping[str, TaskData], cfg: ContrastiveConfig) -> ContrastiveSet:
    pos = positive_pairs(train, cfg)
    return ContrastiveSet("mnrl", {"a": [a for a, _, _ in pos], "p": [b for _, b, _ in pos]},
                          [s for _, _, s in pos])


def simcse_sup_triples(train: Mapping[str, TaskData], cfg: ContrastiveConfig, rng: random.Random) -> ContrastiveSet:
    pos, neg = positive_pairs(train, cfg), negative_pairs(train, cfg)
    if not neg:
        raise DataError("supervised SimCSE found no hard-negative pairs (Quora non-duplicates or STS pairs "
                        f"<= {cfg.sts_negative}); include qqp or sts in the stage's tasks or raise data.limit")
    partners = _partners(neg)
    pool = [b for _, b, _ in neg] + [a for a, _, _ in neg]
    parts: dict[str, list[str]] = {"a": [], "p": [], "n": []}
    for a, p, _ in pos:
        parts["a"].append(a)
        parts["p"].append(p)
        parts["n"].append(rng.choice(partners[a]) if a in partners else rng.choice(pool))
    return ContrastiveSet("simcse_sup", parts, [s for _, _, s in pos])


def triplets(train: Mapping[str, TaskData], cfg: ContrastiveConfig, rng: random.Random) -> ContrastiveSet:
    sentences = {t: task_sentences(d) for t, d in train.items()}
    items: list[tuple[str, str, str, str]] = []    # anchor, positive, first negative, source
    if "sst" in train:
        data = train["sst"]
        by_label: dict[int, list[str]] = {}
        for text, y in zip(data.texts_a, data.labels):
            by_label.setdefault(int(y), []).append(text)
        for text, y in zip(data.texts_a, data.labels):
            same = by_label[int(y)]
            other = [lab for lab in by_label if lab != int(y)]
            if len(same) < 2 or not other:
                continue
            positive = text
            while positive == text and len(set(same)) > 1:
                positive = rng.choice(same)
            if positive == text:
                continue
            items.append((text, positive, rng.choice(by_label[rng.choice(other)]), "sst"))
    neg = negative_pairs(train, cfg)
    partners = _partners(neg)
    pools: dict[str, list[str]] = {}
    for _, y, source in neg:
        pools.setdefault(source, []).append(y)
    for a, b, source in positive_pairs(train, cfg):
        own = [x for x in partners.get(a, []) if x != b]
        pool = pools.get(source) or sentences[source]
        items.append((a, b, rng.choice(own) if own else rng.choice(pool), source))
    parts: dict[str, list[str]] = {"a": [], "p": []}
    for k in range(cfg.negatives):
        parts[f"n{k}"] = []
    for anchor, positive, first, source in items:
        parts["a"].append(anchor)
        parts["p"].append(positive)
        parts["n0"].append(first)
        others = [t for t in sentences if t != source] or [source]
        for k in range(1, cfg.negatives):
            parts[f"n{k}"].append(rng.choice(sentences[rng.choice(others)]))
    return ContrastiveSet("triplet", parts, [s for *_, s in items])


def report_triplets(train: Mapping[str, TaskData], cfg: ContrastiveConfig, rng: random.Random) -> ContrastiveSet:
    """Report 001's triplets (§4.2.1). Anchors: every SST and STS sentence exactly once;
    for Quora, the sentences of duplicate pairs only. Positive: SST - another sentence
    of the same label; STS - another sentence whose pair's score is in the same range
    (``<= sts_negative`` or ``>= sts_positive``: the report's 0-2 or 3-5; a sentence of a
    pair scoring in between is in neither range and is left out); Quora - its
    paraphrase. ``cfg.negatives`` (the report: 3) negatives from the anchor's own
    dataset: SST - other labels; STS - the opposite range; Quora - sentences of the
    non-duplicate pairs (the part of the data no anchor comes from). Then one sentence
    from each other dataset, in the order of ``train``. Parts: ``a``, ``p``,
    ``n0 .. n{K-1}``, K = negatives + (datasets - 1)."""
    sentences = {t: task_sentences(d) for t, d in train.items()}
    items: list[tuple[str, str, list[str], str]] = []   # anchor, positive, own negatives, source
    if "sst" in train:
        items += _labelled_triplets(_first_labels(train["sst"].texts_a, train["sst"].labels), cfg.negatives,
                                    "sst", rng)
    if "sts" in train:
        items += _labelled_triplets(_sts_ranges(train["sts"], cfg), cfg.negatives, "sts", rng)
    if "qqp" in train:
        items += _quora_triplets(train["qqp"], cfg.negatives, rng)
    order = list(train)
    k = cfg.negatives + len(order) - 1
    parts: dict[str, list[str]] = {"a": [], "p": [], **{f"n{i}": [] for i in range(k)}}
    for anchor, positive, own, source in items:
        negs = own + [rng.choice(sentences[t]) for t in order if t != source]
        parts["a"].append(anchor)
        parts["p"].append(positive)
        for i, n in enumerate(negs):
            parts[f"n{i}"].append(n)
    return ContrastiveSet("triplet", parts, [s for *_, s in items])


def _first_labels(texts: Sequence[str], labels: Sequence) -> dict[str, int]:
    """Each distinct sentence once, with the label of its first occurrence."""
    out: dict[str, int] = {}
    for text, y in zip(texts, labels):
        out.setdefault(text, int(y))
    return out


def _sts_ranges(data: TaskData, cfg: ContrastiveConfig) -> dict[str, int]:
    """STS sentence -> 0 (its pair scores <= sts_negative) or 1 (>= sts_positive), by its
    first pair; sentences of pairs scoring in between are in neither range."""
    out: dict[str, int] = {}
    for a, b, y in zip(data.texts_a, data.texts_b, data.labels):
        y = float(y)
        side = 0 if y <= cfg.sts_negative else 1 if y >= cfg.sts_positive else None
        for text in (a, b):
            if text not in out:
                out[text] = side
    return {t: s for t, s in out.items() if s is not None}


def _labelled_triplets(labels: dict[str, int], negatives: int, source: str, rng: random.Random) -> list:
    """(anchor, positive, own negatives, source): every sentence once as anchor, a positive of
    its own label, ``negatives`` sentences of other labels (drawn with replacement)."""
    by_label: dict[int, list[str]] = {}
    for text, y in labels.items():
        by_label.setdefault(y, []).append(text)
    other = {y: [s for lab, ss in by_label.items() if lab != y for s in ss] for y in by_label}
    items = []
    for text, y in labels.items():
        same = by_label[y]
        if len(same) < 2 or not other[y]:
            continue
        positive = text
        while positive == text:
            positive = rng.choice(same)
        items.append((text, positive, [rng.choice(other[y]) for _ in range(negatives)], source))
    return items


def _quora_triplets(data: TaskData, negatives: int, rng: random.Random) -> list:
    """Anchors: each sentence of a duplicate pair once, its paraphrase the positive;
    negatives: sentences of the non-duplicate pairs (not the anchor, not its paraphrases)."""
    positives: dict[str, list[str]] = {}
    pool: list[str] = []
    for a, b, y in zip(data.texts_a, data.texts_b, data.labels):
        if float(y) == 1:
            positives.setdefault(a, []).append(b)
            positives.setdefault(b, []).append(a)
        else:
            pool += [a, b]
    items = []
    for text, partners in positives.items():
        own: list[str] = []
        for _ in range(100 * negatives):   # bounded: a tiny set may have too few
            if len(own) == negatives or not pool:
                break
            candidate = rng.choice(pool)
            if candidate != text and candidate not in partners:
                own.append(candidate)
        if len(own) == negatives:
            items.append((text, rng.choice(partners), own, "qqp"))
    return items


def build_set(objective: str, train: Mapping[str, TaskData], cfg: ContrastiveConfig, seed: int = 0) -> ContrastiveSet:
    """The training set of a sentence-embedding objective, shuffled and capped."""
    rng = random.Random(seed)
    if objective == "simcse_unsup":
        out = unsup_sentences(train)
    elif objective == "mnrl":
        out = mnrl_pairs(train, cfg)
    elif objective == "simcse_sup":
        out = simcse_sup_triples(train, cfg, rng)
    elif objective == "triplet":
        out = report_triplets(train, cfg, rng) if cfg.triplet_layout == "report" else triplets(train, cfg, rng)
    else:
        raise ValueError(f"{objective!r} is not a sentence-embedding objective")
    if len(out) < 2:
        raise DataError(
            f"the {objective} objective found {len(out)} training item(s) in tasks {list(train)}; it needs "
            f"at least 2 (in-batch negatives). Raise data.limit, add tasks, or relax "
            f"train.contrastive.sts_positive / sts_negative")
    order = list(range(len(out)))
    rng.shuffle(order)
    if cfg.max_examples is not None:
        order = order[:cfg.max_examples]
    out.parts = {k: [v[i] for i in order] for k, v in out.parts.items()}
    out.sources = [out.sources[i] for i in order]
    return out


# ------------------------------------------------------------------ the loss
def encode_many(model, inputs: Sequence[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
    """Pooled embeddings of several padded batches, in one encoder call."""
    T = max(x["input_ids"].shape[1] for x in inputs)
    both = {k: torch.cat([F.pad(x[k], (0, T - x[k].shape[1])) for x in inputs]) for k in inputs[0]}
    pooled = model.encode(both).pooled
    return list(pooled.split([x["input_ids"].shape[0] for x in inputs]))


def objective_loss(model, objective: str, batch: dict[str, dict[str, torch.Tensor]],
                   cfg: ContrastiveConfig, gather=None, n_global: int | None = None) -> torch.Tensor:
    """The objective's loss on one batch of a :class:`ContrastiveSet` (parts padded): its
    parts encoded by ``model`` in one call, then the formula on the embeddings
    (core/losses/objectives.py; ``gather``, ``n_global``: data parallel, as there)."""
    embeddings = encode_many(model, [batch[k] for k in objective_parts(objective, batch)])
    return embedding_objective_loss(objective, embeddings, cfg, gather=gather, n_global=n_global)


# ------------------------------------------------------- triplet margin calibration
def triplet_gap_sample(model, cset: ContrastiveSet, items: int, max_len: int, batch_size: int = 50,
                       dropout: bool = False) -> tuple[list[float], list[str]]:
    """``logsumexp_z d(x, z) - d(x, y)`` (:func:`core.losses.functions.triplet_gaps`) of the first
    ``items`` triplets of ``cset`` under ``model``'s pooling, with the encoder in eval mode
    (``dropout=False``) or train mode; and each item's source dataset. An anchor's term of
    Eq. 1 (report 001) is non-zero at margin m iff its gap is below m."""
    from core.data.datasets import encode_texts
    from core.losses.functions import triplet_gaps
    from core.model.batching import TaskTokens
    tok, gaps = model.tokenizer, []
    was_training = model.training
    model.train(dropout)
    keys = ["a", "p"] + sorted((k for k in cset.parts if k[:1] == "n"), key=lambda k: int(k[1:]))
    try:
        with torch.no_grad():
            for start in range(0, min(items, len(cset)), batch_size):
                rows = range(start, min(items, len(cset), start + batch_size))
                parts = {k: encode_texts(tok, [cset.parts[k][i] for i in rows], max_len) for k in keys}
                batch = TaskTokens(parts, pad_id=tok.pad_token_id or 0).batch(list(range(len(rows))), model.device)
                a, p, *n = encode_many(model, [batch[k] for k in keys])
                gaps += triplet_gaps(a.float(), p.float(), torch.stack(n, dim=1).float()).tolist()
    finally:
        model.train(was_training)
    return gaps, cset.sources[:len(gaps)]


def margin_report(config_path: str, stage: str = "triplet", items: int = 600, fraction: float = 0.05,
                  dropout: bool = False) -> dict:
    """The measurement behind report 001's triplet margin (configs/report-001-triplet.yaml):
    the stage's TRAINING triplets (its layout, seed and data; ``max_examples`` ignored, so
    the sample is drawn from the whole set), the recipe's pretrained encoder, and the margin
    at which ``fraction`` of the anchors are active (the ``fraction``-quantile of the gaps;
    report 001 §6.1: about 5% of cases were exceptions)."""
    import dataclasses

    import numpy as np

    from core.config.schema import Config
    from core.data.datasets import load_task
    from core.model.multitask import MultitaskBert
    cfg = Config.from_yaml(config_path)
    plan = dict(cfg.stage_plan())
    if plan.get(stage) is None or plan[stage].objective != "triplet":
        raise DataError(f"{config_path} has no triplet stage named {stage!r}")
    train, index = plan[stage], list(plan).index(stage)
    data = {t: load_task(t, "train", cfg.data.dir, limit=cfg.data.limit) for t in train.tasks}
    seed = train.seed + 104729 * index      # the set the trainer builds for that stage (core/training/trainer.py)
    cset = build_set("triplet", data, dataclasses.replace(train.contrastive, max_examples=None), seed=seed)
    torch.manual_seed(train.seed)
    gaps, sources = triplet_gap_sample(MultitaskBert.from_config(cfg), cset, items, cfg.model.max_len,
                                       dropout=dropout)
    g = np.asarray(gaps)
    margin = train.contrastive.margin
    return {"config": str(config_path), "stage": stage, "items": len(g), "set_size": len(cset),
            "dropout": dropout, "gap_mean": round(float(g.mean()), 4),
            "active_at_margin_0": round(float((g < 0).mean()), 4),
            "recipe_margin": margin, "active_at_recipe_margin": round(float((g < margin).mean()), 4),
            "fraction": fraction, "margin_for_fraction": round(float(np.quantile(g, fraction)), 4),
            "by_source": {s: round(float((g[np.asarray(sources) == s] < margin).mean()), 4)
                          for s in sorted(set(sources))}}


def main(argv=None) -> int:
    """``python -m core.training.contrastive margin --config RECIPE [--items N] [--fraction F]``."""
    import argparse

    from core.errors import run_cli
    p = argparse.ArgumentParser(prog="python -m core.training.contrastive",
                                description="Measure report 001's triplet gaps on a recipe's training triplets.")
    p.add_argument("what", choices=["margin"])
    p.add_argument("--config", default="configs/report-001-triplet.yaml")
    p.add_argument("--stage", default="triplet")
    p.add_argument("--items", type=int, default=600)
    p.add_argument("--fraction", type=float, default=0.05)
    p.add_argument("--dropout", action="store_true", help="encoder in train mode (dropout on)")
    args = p.parse_args(argv)
    return run_cli(lambda: margin_report(args.config, args.stage, args.items, args.fraction, args.dropout))


if __name__ == "__main__":
    raise SystemExit(main())

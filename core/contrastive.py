"""Sentence-embedding objectives: their training sets, built from the task data, and
their loss on a batch (``train.objective``). The losses themselves are in core/losses.py.

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
    layout). ``triplet_layout: report`` is report 001's own layout: every sentence once
    as anchor, ``negatives`` (3) negatives from the anchor's dataset plus one from each
    other dataset (:func:`report_triplets`). Only the encoder is trained.

Each set is shuffled with the run's seed and capped at ``contrastive.max_examples``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from core.config import ContrastiveConfig
from core.data import TaskData
from core.errors import DataError
from core.losses import mnrl_loss, simcse_sup_loss, simcse_unsup_loss, symmetric_mnrl_loss, triplet_loss


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
    """Report 001's triplets: every sentence that has a positive is an anchor exactly
    once; its negatives are ``cfg.negatives`` sentences of its own dataset (SST: other
    labels; pairs: its labelled negative partners first, then other sentences of the
    dataset that are not its positives), then one sentence from each other dataset, in
    the order of ``train``. Parts: ``a``, ``p``, ``n0 .. n{K-1}``, K = negatives +
    (datasets - 1)."""
    sentences = {t: task_sentences(d) for t, d in train.items()}
    items: list[tuple[str, str, list[str], str]] = []   # anchor, positive, own negatives, source
    if "sst" in train:
        data = train["sst"]
        by_label: dict[int, list[str]] = {}
        for text, y in zip(data.texts_a, data.labels):
            by_label.setdefault(int(y), []).append(text)
        seen: set[str] = set()
        for text, y in zip(data.texts_a, data.labels):
            same = [s for s in by_label[int(y)] if s != text]
            other = [s for lab, ss in by_label.items() if lab != int(y) for s in ss]
            if text in seen or not same or not other:
                continue
            seen.add(text)
            items.append((text, rng.choice(same), [rng.choice(other) for _ in range(cfg.negatives)], "sst"))
    positives = _partners(positive_pairs(train, cfg))
    negatives = _partners(negative_pairs(train, cfg))
    for source in ("qqp", "sts"):
        if source not in train:
            continue
        seen = set()
        for text in sentences[source]:
            if text in seen or text not in positives:
                continue
            seen.add(text)
            own = [s for s in negatives.get(text, []) if s not in positives[text]]
            rng.shuffle(own)
            for _ in range(100 * cfg.negatives):   # bounded: a tiny set may have too few
                if len(own) >= cfg.negatives:
                    break
                candidate = rng.choice(sentences[source])
                if candidate != text and candidate not in positives[text]:
                    own.append(candidate)
            if len(own) < cfg.negatives:
                continue
            items.append((text, rng.choice(positives[text]), own[:cfg.negatives], source))
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
                   cfg: ContrastiveConfig, gather=None) -> torch.Tensor:
    """The objective's loss on one batch of a :class:`ContrastiveSet` (parts padded).
    ``gather``: data parallel, the in-batch candidates of every rank (see mnrl_loss)."""
    if objective == "simcse_unsup":   # same sentences twice: dropout makes the two views
        view1, view2 = encode_many(model, [batch["a"], batch["a"]])
        return simcse_unsup_loss(view1, view2, cfg.temperature, gather=gather)
    if objective == "mnrl":
        anchors, positives = encode_many(model, [batch["a"], batch["p"]])
        fn = symmetric_mnrl_loss if cfg.symmetric else mnrl_loss
        return fn(anchors, positives, cfg.scale, gather=gather)
    if objective == "simcse_sup":
        anchors, positives, negatives = encode_many(model, [batch["a"], batch["p"], batch["n"]])
        return simcse_sup_loss(anchors, positives, negatives, cfg.temperature, gather=gather)
    if objective == "triplet":
        keys = ["a", "p"] + [f"n{k}" for k in range(sum(1 for part in batch if part[:1] == "n"))]
        anchors, positives, *negatives = encode_many(model, [batch[k] for k in keys])
        return triplet_loss(anchors, positives, torch.stack(negatives, dim=1), cfg.margin)
    raise ValueError(f"{objective!r} is not a sentence-embedding objective")

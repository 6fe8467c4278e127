"""Training sets of the sentence-embedding objectives, built from (tiny, synthetic) task data."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from core.config.schema import ContrastiveConfig
from core.training.contrastive import (build_set, mnrl_pairs, negative_pairs, positive_pairs, simcse_sup_triples,
                              triplets, unsup_sentences)
from core.data.datasets import Example, TaskData
from core.errors import DataError


def _task(task, rows):
    data = TaskData(task, "train", Path(f"{task}.csv"))
    for i, row in enumerate(rows):
        a, b, y = row if len(row) == 3 else (row[0], None, row[1])
        data.examples.append(Example(f"{task}{i}", a, b, y))
    return data


SST = _task("sst", [("great fun", 4), ("a joy", 4), ("dull", 0), ("boring mess", 0), ("fine", 2)])
QQP = _task("qqp", [("how old are you", "what is your age", 1), ("how old are you", "where do you live", 0),
                    ("why is the sky blue", "what makes the sky blue", 1), ("best phone", "best laptop", 0)])
STS = _task("sts", [("a man sings", "a man is singing", 4.6), ("a dog runs", "a cat sleeps", 0.4),
                    ("kids play", "children are playing", 3.4), ("it rains", "the stock fell", 1.8)])
TRAIN = {"sst": SST, "qqp": QQP, "sts": STS}
CFG = ContrastiveConfig()          # positives: duplicates and STS >= 4; negatives: STS <= 1


def test_positive_and_negative_pairs():
    assert [(a, b) for a, b, _ in positive_pairs(TRAIN, CFG)] == [
        ("how old are you", "what is your age"), ("why is the sky blue", "what makes the sky blue"),
        ("a man sings", "a man is singing")]
    assert [(a, b) for a, b, _ in negative_pairs(TRAIN, CFG)] == [
        ("how old are you", "where do you live"), ("best phone", "best laptop"), ("a dog runs", "a cat sleeps")]
    loose = ContrastiveConfig(sts_positive=3.0, sts_negative=2.0)   # report 001's 3-5 vs 0-2
    assert len(positive_pairs(TRAIN, loose)) == 4 and len(negative_pairs(TRAIN, loose)) == 4


def test_mnrl_and_unsup_sets():
    pairs = mnrl_pairs(TRAIN, CFG)
    assert pairs.parts["a"][0] == "how old are you" and pairs.parts["p"][0] == "what is your age"
    assert pairs.counts() == {"qqp": 2, "sts": 1}
    sentences = unsup_sentences(TRAIN).parts["a"]
    assert len(sentences) == len(set(sentences))                      # each distinct sentence once
    assert "how old are you" in sentences and "great fun" in sentences and "children are playing" in sentences


def test_simcse_supervised_prefers_the_anchors_own_hard_negative():
    triples = simcse_sup_triples(TRAIN, CFG, random.Random(0))
    by_anchor = dict(zip(triples.parts["a"], triples.parts["n"]))
    assert by_anchor["how old are you"] == "where do you live"        # its own non-duplicate partner
    pool = {"where do you live", "how old are you", "best phone", "best laptop", "a dog runs", "a cat sleeps"}
    assert set(triples.parts["n"]) <= pool                           # always a near-miss sentence
    with pytest.raises(DataError, match="hard-negative"):
        simcse_sup_triples({"qqp": _task("qqp", [("a", "b", 1), ("c", "d", 1)])}, CFG, random.Random(0))


def test_triplets_are_homogenized_across_datasets():
    cfg = ContrastiveConfig(sts_positive=3.0, sts_negative=2.0, negatives=3)
    trip = triplets(TRAIN, cfg, random.Random(0))
    assert set(trip.parts) == {"a", "p", "n0", "n1", "n2"}
    label = {ex.text_a: ex.label for ex in SST.examples}
    origin = {s: t for t, d in TRAIN.items() for s in d.texts_a + (d.texts_b or [])}
    for i, source in enumerate(trip.sources):
        a, p = trip.parts["a"][i], trip.parts["p"][i]
        assert a != p
        if source == "sst":                   # same label positive, different label first negative
            assert label[p] == label[a] and label[trip.parts["n0"][i]] != label[a]
        for k in (1, 2):                      # the other negatives come from the other datasets
            assert origin[trip.parts[f"n{k}"][i]] != source
    assert trip.counts()["sst"] == 4          # "fine" (the only neutral review) has no positive
    assert trip.counts()["qqp"] == 2 and trip.counts()["sts"] == 2
    assert "where do you live" in [n for a, n in zip(trip.parts["a"], trip.parts["n0"]) if a == "how old are you"]


def test_build_set_shuffles_caps_and_refuses_tiny_sets():
    full = build_set("triplet", TRAIN, ContrastiveConfig(sts_positive=3.0, sts_negative=2.0), seed=1)
    capped = build_set("triplet", TRAIN, ContrastiveConfig(sts_positive=3.0, sts_negative=2.0, max_examples=3), seed=1)
    assert len(capped) == 3 and all(len(v) == 3 for v in capped.parts.values())
    assert build_set("triplet", TRAIN, ContrastiveConfig(sts_positive=3.0, sts_negative=2.0), seed=1).parts == full.parts
    with pytest.raises(DataError, match="at least 2"):
        build_set("mnrl", {"sts": STS}, CFG)      # one STS pair >= 4 is not enough
    with pytest.raises(ValueError):
        build_set("supervised", TRAIN, CFG)


def test_report_triplets_every_sentence_once_three_own_negatives_one_from_each_other_dataset():
    """Report 001 §4.2.1: SST and STS sentences each once as anchor, Quora anchors only from
    paraphrase pairs; positive = same SST label / same STS range (0-2 or 3-5) / the
    paraphrase; three negatives from the anchor's own set (other labels / the opposite
    range / non-paraphrase pairs) and one from each of the other two sets."""
    from core.training.contrastive import report_triplets
    cfg = ContrastiveConfig(sts_positive=3.0, sts_negative=2.0, negatives=3, triplet_layout="report")
    trip = report_triplets(TRAIN, cfg, random.Random(0))
    assert set(trip.parts) == {"a", "p", "n0", "n1", "n2", "n3", "n4"}     # 3 own + 2 other datasets
    origin = {}
    for t, d in TRAIN.items():
        for s in d.texts_a + (d.texts_b or []):
            origin.setdefault(s, set()).add(t)
    label = {ex.text_a: ex.label for ex in SST.examples}
    high = {"a man sings", "a man is singing", "kids play", "children are playing"}     # pairs 4.6, 3.4
    low = {"a dog runs", "a cat sleeps", "it rains", "the stock fell"}                 # pairs 0.4, 1.8
    non_paraphrase = {"how old are you", "where do you live", "best phone", "best laptop"}
    paraphrase_of = {"how old are you": "what is your age", "what is your age": "how old are you",
                     "why is the sky blue": "what makes the sky blue", "what makes the sky blue": "why is the sky blue"}
    assert len(set(trip.parts["a"])) == len(trip.parts["a"])              # each anchor once
    for i, source in enumerate(trip.sources):
        a, p = trip.parts["a"][i], trip.parts["p"][i]
        own = [trip.parts[f"n{k}"][i] for k in range(3)]
        other = [trip.parts[f"n{k}"][i] for k in (3, 4)]
        assert all(source in origin[n] for n in own) and a not in own and p != a
        assert sorted(t for n in other for t in origin[n] if t != source) == sorted(t for t in TRAIN if t != source)
        if source == "sst":
            assert label[p] == label[a] and all(label[n] != label[a] for n in own)
        if source == "sts":
            same, opposite = (high, low) if a in high else (low, high)
            assert p in same and all(n in opposite for n in own)
        if source == "qqp":
            assert p == paraphrase_of[a] and all(n in non_paraphrase and n != p for n in own)
    # anchors: SST all but "fine" (the only neutral review: no positive); every STS
    # sentence (all four pairs are in a range); the four sentences of Quora duplicates
    anchors = set(trip.parts["a"])
    assert {"great fun", "a joy", "dull", "boring mess"} <= anchors and "fine" not in anchors
    assert set(paraphrase_of) <= anchors and not {"where do you live", "best phone"} & anchors
    assert high | low <= anchors
    assert trip.counts() == {"sst": 4, "qqp": 4, "sts": 8}


def test_report_triplets_leave_out_sts_pairs_between_the_two_ranges():
    """0-2 and 3-5 (§4.2.1): a sentence of a pair scoring 2.5 is in neither range."""
    from core.training.contrastive import report_triplets
    cfg = ContrastiveConfig(sts_positive=3.0, sts_negative=2.0, negatives=3, triplet_layout="report")
    sts = _task("sts", [("a man sings", "a man is singing", 4.6), ("a dog runs", "a cat sleeps", 0.4),
                        ("it rains", "the sun shines", 2.5)])
    trip = report_triplets({"sts": sts}, cfg, random.Random(0))
    assert set(trip.parts["a"]) == {"a man sings", "a man is singing", "a dog runs", "a cat sleeps"}
    used = {x for k, v in trip.parts.items() for x in v}
    assert not {"it rains", "the sun shines"} & used

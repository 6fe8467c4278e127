"""Seeded, label-stratified subsets (issue #26): what ``data.limit`` / ``data.eval_limit``
select (core.data.datasets.load_subset) and the ``subset`` mark that travels with the figures
computed on them (core.evaluation.evaluator)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from conftest import REPO
from core.data.datasets import (STS_BIN_EDGES, load_subset, load_task, stratified_indices, subset_task)
from core.errors import DataError, MinbertError
from core.evaluation.evaluator import dev_subsets, metrics_and_frames, subset_note, with_subset_mark

DATA = REPO / "data"
# Class counts of the files, pinned in tests/test_data.py from the files themselves.
SST_TRAIN = {0: 1092, 1: 2218, 2: 1624, 3: 2322, 4: 1288}     # 8544 rows
QQP_TRAIN = {0: 10007, 1: 5990}                                # 15997 rows


def test_largest_remainder_allocation_by_hand():
    # strata sizes 6, 3, 1 and n = 5: quotas 3, 1.5, 0.5 -> floors 3, 1, 0 (4 rows); the
    # one left goes to a remainder of 0.5, a tie between strata 1 (3 rows) and 2 (1 row):
    # the larger stratum wins -> 3, 2, 0
    strata = np.array([0] * 6 + [1] * 3 + [2])
    idx = stratified_indices(strata, 5, seed=0)
    assert Counter(strata[idx].tolist()) == {0: 3, 1: 2}
    assert list(idx) == sorted(idx) and len(set(idx.tolist())) == 5


def test_sst_train_sample_has_the_files_class_shares():
    sample = load_subset("sst", "train", DATA, limit=1000)
    # 1000 * counts / 8544 = 127.81, 259.60, 190.07, 271.77, 150.75: floors sum to 997, and
    # the three largest remainders (.81, .77, .75: classes 0, 3, 4) get one more each
    assert Counter(sample.labels.tolist()) == {0: 128, 1: 259, 2: 190, 3: 272, 4: 151}
    # what data.limit kept before: the first 1000 rows, 5 % negatives (issue #26)
    first = load_task("sst", "train", DATA, limit=1000)
    assert Counter(first.labels.tolist()) == {0: 8, 1: 42, 2: 146, 3: 488, 4: 316}
    assert sample.subset.to_dict() == {"n": 1000, "of": 8544, "seed": 0, "sampling": "stratified",
                                       "strata": "label"}


@pytest.mark.parametrize("task,split,n", [("sst", "dev", 300), ("qqp", "dev", 300), ("sts", "dev", 300),
                                         ("qqp", "train", 64), ("sst", "train", 16), ("sts", "train", 7)])
def test_every_stratum_within_rounding_of_its_share(task, split, n):
    full = load_task(task, split, DATA)
    sample = load_subset(task, split, DATA, limit=n)
    assert len(sample) == n == sample.subset.n and sample.subset.of == len(full)
    if task == "sts":   # score bins [0,1) [1,2) [2,3) [3,4) [4,5], by hand, not by the code under test
        def bins(y):
            return Counter(min(int(v), 4) for v in y)
    else:
        def bins(y):
            return Counter(y.tolist())
    have, whole = bins(sample.labels), bins(full.labels)
    for stratum, count in whole.items():
        assert abs(have.get(stratum, 0) - n * count / len(full)) < 1, (stratum, have, whole)
    # rows of the file, in file order, none twice
    position = {ex.id: i for i, ex in enumerate(full.examples)}
    at = [position[i] for i in sample.ids]
    assert at == sorted(at) and len(set(at)) == n
    assert [full.examples[i] for i in at] == sample.examples


def test_quora_sample_by_label():
    sample = load_subset("qqp", "train", DATA, limit=1000)
    # 1000 * 10007 / 15997 = 625.55, 1000 * 5990 / 15997 = 374.45 -> 626 and 374
    assert Counter(sample.labels.tolist()) == {0: 626, 1: 374}
    assert sum(QQP_TRAIN.values()) == sample.subset.of


def test_sts_bins_put_whole_scores_in_the_bin_they_open():
    assert STS_BIN_EDGES == (1.0, 2.0, 3.0, 4.0)
    data = load_task("sts", "dev", DATA)
    from core.data.datasets import strata_of
    strata, kind = strata_of(data)
    assert kind == "score bins"
    expected = [4 if y >= 4 else int(y) for y in data.labels]     # 5.0 -> 4, 1.0 -> 1, 0.8 -> 0
    assert strata.tolist() == expected


def test_deterministic_for_a_seed_and_another_seed_draws_other_rows():
    a = load_subset("sst", "dev", DATA, limit=100, seed=0)
    b = load_subset("sst", "dev", DATA, limit=100, seed=0)
    c = load_subset("sst", "dev", DATA, limit=100, seed=1)
    assert a.ids == b.ids
    assert a.ids != c.ids and Counter(a.labels.tolist()) == Counter(c.labels.tolist())
    assert c.subset.seed == 1


def test_whole_file_unmarked_and_bad_sizes_refused():
    full = load_task("sts", "dev", DATA)
    assert load_subset("sts", "dev", DATA).subset is None
    same = load_subset("sts", "dev", DATA, limit=len(full) + 5)
    assert same.subset is None and same.examples == full.examples
    for bad in (0, -3, 2.5, True, "10"):
        with pytest.raises(DataError, match="limit must be a positive whole number"):
            load_subset("sts", "dev", DATA, limit=bad)
    assert issubclass(DataError, MinbertError)


def test_unlabelled_test_file_gets_a_plain_random_sample():
    sample = load_subset("sst", "test", DATA, limit=10)
    assert len(sample) == 10 and sample.subset.sampling == "random" and sample.subset.strata == "none"


def test_swapped_pairs_keep_the_mark():
    sample = load_subset("sts", "train", DATA, limit=20)
    both = sample.with_swapped_pairs()
    assert len(both) == 40 and both.subset == sample.subset


def test_metrics_of_a_subset_carry_the_mark_and_full_dev_none():
    data = {"sst": subset_task(load_task("sst", "dev", DATA), 50),
            "sts": load_task("sts", "dev", DATA)}
    outputs = {"sst": np.full((50, 5), 0.2), "sts": np.linspace(0, 5, len(data["sts"]))}
    metrics, _ = metrics_and_frames(data, outputs)
    assert metrics["sst_n"] == 50 and metrics["sts_n"] == 863
    assert metrics["subset"] == {"sst": {"n": 50, "of": 1101, "seed": 0, "sampling": "stratified",
                                         "strata": "label"}}
    assert dev_subsets(metrics) == metrics["subset"]
    assert with_subset_mark({"sts": data["sts"]}) == {}


def test_runs_before_the_mark_are_read_by_their_counts():
    # a metrics.json written before the mark: sst_n below the dev file's 1,101 rows was the
    # file's first rows (the old data.eval_limit); 2,000 and 863 are the whole files
    old = {"sst_acc": 0.48, "sst_n": 300, "qqp_acc": 0.8, "qqp_n": 2000, "sts_pearson": 0.8, "sts_n": 863}
    assert dev_subsets(old) == {"sst": {"n": 300, "of": 1101, "sampling": "first rows"}}
    assert subset_note(dev_subsets(old)) == "dev subset: Sentiment 300 of 1,101 (first rows)"
    assert dev_subsets({"sst_n": 1101, "qqp_n": 2000, "sts_n": 863}) == {}
    assert subset_note({}) == ""

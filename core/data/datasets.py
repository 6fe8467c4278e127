"""Loading, tokenizing and batching the three task datasets.

The project trains one encoder jointly on three tasks:

* ``sst`` - Stanford Sentiment Treebank, one sentence, 5-way label (0 = very negative
  .. 4 = very positive);
* ``qqp`` - Quora Question Pairs, two questions, label 1 when they are paraphrases;
* ``sts`` - SemEval STS benchmark, two sentences, similarity score in ``[0, 5]``.

The data files are tab separated in the CS224N default-project layout: an unnamed row
index column, then ``id``, then the text column(s), then the label (absent in the test
files). Columns are located **by header name**, never by position, because the SST test
file's header is shifted by one column.

Pipeline::

    data = load_task("sst", "train")                 # TaskData: examples + skipped rows
    enc = encode_texts(tokenizer, data.texts_a)      # tokenize once, unpadded id lists
    for idx in bucket_batches(enc.lengths, 32):      # length-homogeneous batches
        batch = enc.batch(idx)                       # padded LongTensors

Quick and limited runs (``data.limit`` / ``data.eval_limit``) read a **seeded,
label-stratified sample** of a file, not its first rows (:func:`load_subset`): SST by
class, Quora by label, STS by score bins (0-1, 1-2, 2-3, 3-4, 4-5), each stratum given its
share of the sample by the largest-remainder rule, so the sample's label distribution is
the file's within rounding. The sample is kept in file order and is the same for a seed on
every machine; :attr:`TaskData.subset` records it (n, of, seed), and every metric computed
on it carries that mark (``core.evaluation.evaluator``). ``load_task(limit=N)`` still reads exactly the
first N valid rows (a fixed prefix for tests and benchmarks).

Malformed rows (missing text, missing / unparseable / out-of-range label, wrong number
of fields) are skipped, recorded in :attr:`TaskData.skipped` with their 1-based line
number and a reason, and counted in a logged warning. Problems that leave nothing to
train on (missing file, header without the needed columns, no valid row at all) raise
:class:`~core.errors.DataError` naming the file and what to fix.

This module has no Streamlit imports; it is shared by training, evaluation and the app.
"""

from __future__ import annotations

import csv
import functools
import logging
import math
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from core.paths import DATA_DIR
from core.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

# Texts in the Quora file can be long; make sure the csv module never refuses a field.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

# --------------------------------------------------------------------------- constants

# The task table lives in core/tasks.py (names, labels, columns, files, metrics); these
# this module reads it (importers take the task names from core.tasks, their one home).
from core.tasks import (N_CLASSES, PAIR_TASKS, STS_RANGE, TASK_COLUMNS, TASK_FILES, TASKS,  # noqa: E402
                        canonical_task)

SPLITS: tuple[str, ...] = ("train", "dev", "test")


# How many skip reasons a summary / error message quotes.
_N_REASONS_SHOWN = 3

# ------------------------------------------------------------------------ data classes


@dataclass
class Example:
    """One row of a task file.

    ``text_b`` is ``None`` for single-sentence tasks (SST); ``label`` is ``None`` for the
    unlabelled test split, an ``int`` for SST / QQP and a ``float`` for STS.
    """

    id: str
    text_a: str
    text_b: str | None
    label: int | float | None


@dataclass
class SkippedRow:
    """A row that was not loaded: its 1-based line number in the file and why."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class TaskData:
    """The valid examples of one task file plus a record of every skipped row."""

    task: str
    split: str
    path: Path
    examples: list[Example] = field(default_factory=list)
    skipped: list[SkippedRow] = field(default_factory=list)
    subset: "Subset | None" = None   # set when these are a sample of the file (load_subset)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    @property
    def is_pair(self) -> bool:
        return self.task in PAIR_TASKS

    @property
    def has_labels(self) -> bool:
        return bool(self.examples) and self.examples[0].label is not None

    @property
    def ids(self) -> list[str]:
        return [ex.id for ex in self.examples]

    @property
    def texts_a(self) -> list[str]:
        return [ex.text_a for ex in self.examples]

    @property
    def texts_b(self) -> list[str] | None:
        """Second sentences of a pair task, ``None`` for SST."""
        if not self.is_pair:
            return None
        return [ex.text_b or "" for ex in self.examples]

    @property
    def labels(self) -> np.ndarray | None:
        """Labels as an array (int64 for SST/QQP, float64 for STS); ``None`` if unlabelled."""
        if not self.has_labels:
            return None
        dtype = np.float64 if self.task == "sts" else np.int64
        return np.asarray([ex.label for ex in self.examples], dtype=dtype)

    def with_swapped_pairs(self) -> "TaskData":
        """This pair data followed by every pair swapped, ``(b, a)`` with the same label
        (ids get a ``#swap`` suffix): for symmetric relations such as paraphrase and
        similarity. SST data is returned unchanged."""
        if not self.is_pair:
            return self
        swapped = [Example(f"{ex.id}#swap", ex.text_b or "", ex.text_a, ex.label) for ex in self.examples]
        return TaskData(self.task, self.split, self.path, self.examples + swapped, list(self.skipped), self.subset)

    def summary(self) -> str:
        """One line such as ``"sst/train: 8544 rows loaded, 0 skipped"``.

        When rows were skipped, the first few reasons are appended.
        """
        text = f"{self.task}/{self.split}: {len(self)} rows loaded, {self.n_skipped} skipped"
        if self.skipped:
            shown = "; ".join(str(s) for s in self.skipped[:_N_REASONS_SHOWN])
            more = self.n_skipped - _N_REASONS_SHOWN
            text += f" ({shown}{f'; and {more} more' if more > 0 else ''})"
        return text


# ------------------------------------------------------------------------------ files


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise DataError(f"Unknown split {split!r}. Valid splits: {', '.join(SPLITS)}.")
    return split


def task_file(task: str, split: str, data_dir: str | Path = "data") -> Path:
    """Path of the file holding ``task``'s ``split`` under ``data_dir``.

    The file is not required to exist. Quora has no test file: asking for it raises
    :class:`DataError`.
    """
    task = canonical_task(task)
    split = _check_split(split)
    name = TASK_FILES[task][split]
    if name is None:
        available = ", ".join(s for s, n in TASK_FILES[task].items() if n is not None)
        raise DataError(
            f"There is no {split} file for task {task!r} (the Quora test split is not "
            f"distributed). Use one of: {available}."
        )
    return Path(data_dir) / name


# The repository's data folder: where stored predictions and embedding samples that keep
# only example ids (the study's runs) find their sentences again, from any working directory.


def texts_by_id(task: str, split: str = "dev", data_dir: str | Path = DATA_DIR) -> dict[str, tuple[str, str | None]]:
    """``{id: (text_a, text_b)}`` of one split (``text_b`` None for SST), read once per
    file version. Files that store predictions by id only are joined back with it."""
    path = task_file(task, split, data_dir)
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        raise DataError(f"{path} is missing: the {canonical_task(task)} {split} sentences are looked up there "
                        f"by id") from None
    return _texts_by_id(canonical_task(task), split, str(Path(data_dir).resolve()), stamp)


def texts_for_ids(task: str, ids, split: str = "dev", where: str = "a stored file",
                  data_dir: str | Path = DATA_DIR) -> list[tuple[str, str | None]]:
    """The ``(text_a, text_b)`` of each id, in order; a ``DataError`` naming ``where`` when
    an id is not in the split (the file was written for other data)."""
    texts = texts_by_id(task, split, data_dir)
    ids = [str(i) for i in ids]
    unknown = [i for i in ids if i not in texts]
    if unknown:
        raise DataError(f"{where} names {len(unknown)} id(s) that are not in the {canonical_task(task)} {split} "
                        f"data (first: {unknown[0]}): it was written for other data")
    return [texts[i] for i in ids]


@functools.lru_cache(maxsize=16)
def _texts_by_id(task: str, split: str, data_dir: str, stamp: int) -> dict[str, tuple[str, str | None]]:
    return {ex.id: (ex.text_a, ex.text_b) for ex in load_task(task, split, data_dir).examples}


# ---------------------------------------------------------------------------- parsing


def _parse_label(task: str, raw: str) -> tuple[int | float | None, str | None]:
    """Parse a label cell. Returns ``(label, None)`` or ``(None, reason)``."""
    _, label_col = TASK_COLUMNS[task]
    raw = raw.strip()
    if not raw:
        return None, f"missing {label_col} label"
    try:
        value = float(raw)
    except ValueError:
        return None, f"{label_col} label {raw!r} is not a number"
    if not math.isfinite(value):
        return None, f"{label_col} label {raw!r} is not a finite number"
    if task == "sts":
        lo, hi = STS_RANGE
        if not lo <= value <= hi:
            return None, f"{label_col} label {raw!r} is outside [{lo:g}, {hi:g}]"
        return value, None
    n_classes = N_CLASSES[task]
    if value != int(value):
        return None, f"{label_col} label {raw!r} is not a whole number"
    if not 0 <= int(value) < n_classes:
        return None, f"{label_col} label {raw!r} is outside 0..{n_classes - 1}"
    return int(value), None


def _read_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, fields)`` for every row of a tab-separated file, header
    included. Quotes are literal text (``QUOTE_NONE``), so one row is one line."""
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        for fields in reader:
            yield reader.line_num, fields


def load_task(
    task: str,
    split: str = "train",
    data_dir: str | Path = "data",
    limit: int | None = None,
    path: str | Path | None = None,
) -> TaskData:
    """Load one split of one task.

    Args:
        task: ``"sst"``, ``"qqp"`` or ``"sts"`` (long names accepted too).
        split: ``"train"``, ``"dev"`` or ``"test"``. The test split needs no label
            column and yields ``label=None``.
        data_dir: folder holding the standard file names (see :func:`task_file`).
        limit: keep only the first ``limit`` valid rows (reading stops there, so
            ``skipped`` only covers the part of the file that was read).
        path: read this file instead of the standard one (same column layout).

    Returns:
        A :class:`TaskData` with the valid examples and the skipped rows.

    Raises:
        DataError: the file is missing or unreadable, its header lacks a needed
            column, or it has no valid row.
    """
    task = canonical_task(task)
    split = _check_split(split)
    file = _checked_file(task, split, data_dir, path, limit)
    text_cols, label_col = TASK_COLUMNS[task]
    labelled = split != "test"
    data = TaskData(task=task, split=split, path=file)

    rows = _read_rows(file)  # a generator: the file opens on the first next()
    try:
        col, n_fields = _header_columns(rows, file, task, split, labelled)
        for line, fields in rows:
            row = _parse_row(task, line, fields, col, n_fields, labelled)
            (data.skipped if isinstance(row, SkippedRow) else data.examples).append(row)
            if limit is not None and len(data.examples) >= limit:
                break
    except UnicodeDecodeError as exc:
        raise DataError(f"Data file {file} is not valid UTF-8 text ({exc}); re-save it as UTF-8.")
    except OSError as exc:
        raise DataError(f"Could not read data file {file}: {exc}.")
    finally:
        rows.close()  # closes the file now, also when `limit` stopped reading early
    _report_skipped(data, file, text_cols, label_col if labelled else None)
    return data


def _checked_file(task: str, split: str, data_dir, path, limit) -> Path:
    """The file :func:`load_task` reads, refused with a DataError when it is not there
    (or ``limit`` is not a positive whole number)."""
    file = Path(path) if path is not None else task_file(task, split, data_dir)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataError(f"limit must be a positive whole number or None, got {limit!r}.")
    if not file.exists():
        raise DataError(
            f"Data file not found: {file}. Put the tab-separated {task} {split} file "
            f"there, or pass the data_dir (or path) that holds it."
        )
    if not file.is_file():
        raise DataError(f"Data path {file} is not a file; point it at the {task} {split} CSV.")
    return file


def _header_columns(rows, file: Path, task: str, split: str, labelled: bool) -> tuple[dict[str, int], int]:
    """The header row's index of every needed column, and its number of fields."""
    text_cols, label_col = TASK_COLUMNS[task]
    try:
        _, header = next(rows)
    except StopIteration:
        raise DataError(f"Data file {file} is empty; it needs a header row and data rows.")
    header = [h.strip() for h in header]
    required = ("id", *text_cols, *((label_col,) if labelled else ()))
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(
            f"Data file {file} lacks the column(s) {', '.join(missing)} needed for "
            f"{task}/{split}. Expected a tab-separated header with "
            f"{', '.join(required)}; found {header}."
        )
    return {name: header.index(name) for name in required}, len(header)


def _parse_row(task: str, line: int, fields: list[str], col: dict[str, int], n_fields: int,
               labelled: bool) -> Example | SkippedRow:
    """One data row as an :class:`Example`, or the :class:`SkippedRow` that says why not."""
    if not fields:
        return SkippedRow(line, "blank line")
    if len(fields) != n_fields:
        return SkippedRow(line, f"has {len(fields)} fields, expected {n_fields}")
    text_cols, label_col = TASK_COLUMNS[task]
    texts = [fields[col[name]].strip() for name in text_cols]
    problems = [f"empty {name}" if not text else f"{name} has no visible characters"
                for name, text in zip(text_cols, texts) if not has_visible_text(text)]
    label: int | float | None = None
    if labelled:
        label, label_problem = _parse_label(task, fields[col[label_col]])
        if label_problem is not None:
            problems.append(label_problem)
    if problems:
        return SkippedRow(line, ", ".join(problems))
    ex_id = fields[col["id"]].strip() or fields[0].strip() or f"line{line}"
    return Example(id=ex_id, text_a=texts[0], text_b=texts[1] if len(texts) > 1 else None, label=label)


def _report_skipped(data: TaskData, file: Path, text_cols, label_col: str | None) -> None:
    """A DataError when no row was valid; a warning that counts the skipped rows otherwise."""
    if not data.examples:
        reasons = "; ".join(str(s) for s in data.skipped[:_N_REASONS_SHOWN]) or "no data rows"
        raise DataError(
            f"Data file {file} has no valid {data.task} rows ({data.n_skipped} skipped: {reasons}). "
            f"Check that it is tab separated with columns {', '.join(('id', *text_cols))}"
            f"{', ' + label_col if label_col else ''}."
        )
    if data.skipped:
        logger.warning(
            "%s: skipped %d malformed row(s) in %s (first: %s)",
            f"{data.task}/{data.split}",
            data.n_skipped,
            file,
            "; ".join(str(s) for s in data.skipped[:_N_REASONS_SHOWN]),
        )


def load_tasks(
    split: str = "train",
    data_dir: str | Path = "data",
    tasks: Sequence[str] = TASKS,
    limit: int | None = None,
) -> dict[str, TaskData]:
    """Load ``split`` of several tasks at once (Quora is left out of ``"test"``)."""
    out: dict[str, TaskData] = {}
    for task in tasks:
        task = canonical_task(task)
        if TASK_FILES[task][_check_split(split)] is None:
            continue
        out[task] = load_task(task, split, data_dir=data_dir, limit=limit)
    return out


# --------------------------------------------------------------------------- subsets

# The seed of every data.limit / data.eval_limit sample unless a caller passes another: a
# fixed one, so that runs of different training seeds train and are scored on the same rows.
SUBSET_SEED = 0
# STS strata: similarity scores cut at 1, 2, 3 and 4 (the top bin includes 5).
STS_BIN_EDGES: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0)


@dataclass(frozen=True)
class Subset:
    """How a :class:`TaskData` was sampled from its file: ``n`` of the file's ``of`` valid
    rows, drawn with ``seed``, stratified by ``strata`` ("label"; "score bins" for STS;
    "none", a plain random sample, for unlabelled test files)."""

    n: int
    of: int
    seed: int
    strata: str
    sampling: str = "stratified"

    def to_dict(self) -> dict:
        return {"n": self.n, "of": self.of, "seed": self.seed, "sampling": self.sampling, "strata": self.strata}


def strata_of(data: TaskData) -> tuple[np.ndarray, str]:
    """Stratum id of every row of ``data`` and the strata's name: the class for SST and
    Quora ("label"), the score bin of :data:`STS_BIN_EDGES` for STS ("score bins"), one
    stratum for an unlabelled test file ("none")."""
    labels = data.labels
    if labels is None:
        return np.zeros(len(data), dtype=np.int64), "none"
    if data.task == "sts":
        return np.searchsorted(np.asarray(STS_BIN_EDGES), labels, side="right"), "score bins"
    return labels.astype(np.int64), "label"


def stratified_indices(strata: np.ndarray, n: int, seed: int = SUBSET_SEED) -> np.ndarray:
    """Indices (ascending) of a seeded sample of ``n`` rows whose strata counts are the
    rows' proportions within rounding: stratum ``c`` of ``N_c`` rows gets
    ``floor(n N_c / N)`` rows, and the ``n - sum floor`` left over go one each to the
    strata with the largest remainders (ties: the larger stratum, then the smaller id;
    Hamilton's largest-remainder rule). Within a stratum the rows are the first in one
    seeded permutation of all rows, so a larger ``n`` keeps every row a smaller one took
    in each stratum that does not shrink."""
    strata = np.asarray(strata).reshape(-1)
    total = len(strata)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise DataError(f"a sample size must be a positive whole number, got {n!r}.")
    if n >= total:
        return np.arange(total)
    ids, counts = np.unique(strata, return_counts=True)
    quota = n * counts / total
    take = np.floor(quota).astype(np.int64)
    order = sorted(range(len(ids)), key=lambda i: (-(quota[i] - take[i]), -counts[i], i))
    for i in order[: n - int(take.sum())]:
        take[i] += 1
    perm = np.random.default_rng(seed).permutation(total)
    chosen = [perm[strata[perm] == sid][:k] for sid, k in zip(ids, take)]
    return np.sort(np.concatenate(chosen))


def subset_task(data: TaskData, n: int | None, seed: int = SUBSET_SEED) -> TaskData:
    """A seeded, stratified sample of ``n`` of ``data``'s rows (file order kept), marked
    in :attr:`TaskData.subset`; ``data`` itself when ``n`` is None or covers every row."""
    if n is None:
        return data
    strata, kind = strata_of(data)
    idx = stratified_indices(strata, n, seed)
    if len(idx) == len(data):
        return data
    examples = [data.examples[i] for i in idx]
    mark = Subset(len(idx), len(data), int(seed), kind, "stratified" if kind != "none" else "random")
    return TaskData(data.task, data.split, data.path, examples, list(data.skipped), mark)


def load_subset(task: str, split: str = "train", data_dir: str | Path = "data", limit: int | None = None,
                seed: int = SUBSET_SEED, path: str | Path | None = None) -> TaskData:
    """``split`` of ``task`` (:func:`load_task`, the whole file read), then, when ``limit``
    is set, the seeded stratified sample of ``limit`` rows of :func:`subset_task`: what
    ``data.limit`` (training) and ``data.eval_limit`` (dev) select."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataError(f"limit must be a positive whole number or None, got {limit!r}.")
    return subset_task(load_task(task, split, data_dir, path=path), limit, seed)


# ----------------------------------------------------------------------- tokenization


@dataclass
class Tokenized:
    """Token ids of a list of texts (or pairs), *unpadded*: one list of ids per example.
    (What the encoder returns for them is ``core.model.multitask.Encoding``.)

    Tokenizing once per dataset and padding per batch keeps batches as short as their
    longest member, which together with :func:`bucket_batches` saves most of the
    padding compute.
    """

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]

    def subset(self, indices: Sequence[int]) -> "Tokenized":
        return Tokenized(
            [self.input_ids[i] for i in indices], [self.token_type_ids[i] for i in indices]
        )

    def batch(self, indices: Sequence[int], pad_id: int = 0) -> dict[str, torch.Tensor]:
        """Padded tensors for the examples at ``indices`` (see :func:`pad_batch`)."""
        sub = self.subset(indices)
        return pad_batch(sub.input_ids, sub.token_type_ids, pad_id=pad_id)



def _check_max_len(max_len: int, minimum: int) -> None:
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < minimum:
        raise ConfigError(f"max_len must be a whole number >= {minimum}, got {max_len!r}.")


def has_visible_text(text: str) -> bool:
    """Whether ``text`` has a character other than whitespace, control and format
    (zero-width) characters: what the tokenizer keeps of it is not empty."""
    return any(unicodedata.category(ch)[0] not in "CZ" for ch in text)


def _check_texts(texts: Sequence[str], name: str) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a list of strings, not a single string")
    out = list(texts)
    bad = [i for i, t in enumerate(out) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"{name}[{bad[0]}] is {type(out[bad[0]]).__name__}, expected str")
    return out


def _as_lists(enc: Any, key: str) -> list[list[int]] | None:
    value = enc.get(key) if hasattr(enc, "get") else None
    return None if value is None else [list(map(int, row)) for row in value]


def encode_texts(tokenizer: Any, texts: Sequence[str], max_len: int = 128) -> Tokenized:
    """Tokenize single sentences as ``[CLS] text [SEP]`` (token type 0), truncated to
    ``max_len`` tokens, unpadded. The tokenizer is called once on the whole list."""
    _check_max_len(max_len, 2)
    texts = _check_texts(texts, "texts")
    if not texts:
        return Tokenized([], [])
    enc = tokenizer(
        texts, add_special_tokens=True, truncation=True, max_length=max_len, padding=False
    )
    input_ids = _as_lists(enc, "input_ids")
    assert input_ids is not None
    token_type_ids = _as_lists(enc, "token_type_ids") or [[0] * len(ids) for ids in input_ids]
    return Tokenized(input_ids, token_type_ids)


def encode_pairs(
    tokenizer: Any, texts_a: Sequence[str], texts_b: Sequence[str], max_len: int = 128
) -> Tokenized:
    """Tokenize sentence pairs jointly as ``[CLS] a [SEP] b [SEP]`` with token types
    0 for ``[CLS] a [SEP]`` and 1 for ``b [SEP]``; the longer side is truncated first
    until the pair fits ``max_len``. Unpadded, one tokenizer call for the whole list."""
    _check_max_len(max_len, 3)
    texts_a = _check_texts(texts_a, "texts_a")
    texts_b = _check_texts(texts_b, "texts_b")
    if len(texts_a) != len(texts_b):
        raise ValueError(f"texts_a has {len(texts_a)} items but texts_b has {len(texts_b)}")
    if not texts_a:
        return Tokenized([], [])
    enc = tokenizer(
        texts_a,
        texts_b,
        add_special_tokens=True,
        truncation="longest_first",
        max_length=max_len,
        padding=False,
    )
    input_ids = _as_lists(enc, "input_ids")
    assert input_ids is not None
    token_type_ids = _as_lists(enc, "token_type_ids")
    if token_type_ids is None:  # tokenizer without segment ids: derive them from [SEP]
        sep = tokenizer.sep_token_id
        token_type_ids = []
        for ids in input_ids:
            cut = ids.index(sep) + 1 if sep in ids else len(ids)
            token_type_ids.append([0] * cut + [1] * (len(ids) - cut))
    return Tokenized(input_ids, token_type_ids)


def pad_batch(
    input_ids: Sequence[Sequence[int]],
    token_type_ids: Sequence[Sequence[int]] | None = None,
    pad_id: int = 0,
) -> dict[str, torch.Tensor]:
    """Right-pad sequences to the batch's longest one.

    Returns LongTensors ``input_ids``, ``attention_mask`` (1 = real token, 0 = pad) and
    ``token_type_ids`` (zeros when not given; pads are 0), each ``[B, T]``.
    """
    n = len(input_ids)
    if n == 0:
        raise ValueError("pad_batch needs at least one sequence")
    if token_type_ids is not None and len(token_type_ids) != n:
        raise ValueError(f"{n} input_ids rows but {len(token_type_ids)} token_type_ids rows")
    width = max(len(ids) for ids in input_ids)
    ids_arr = np.full((n, width), pad_id, dtype=np.int64)
    mask_arr = np.zeros((n, width), dtype=np.int64)
    types_arr = np.zeros((n, width), dtype=np.int64)
    for i, ids in enumerate(input_ids):
        k = len(ids)
        ids_arr[i, :k] = ids
        mask_arr[i, :k] = 1
        if token_type_ids is not None:
            if len(token_type_ids[i]) != k:
                raise ValueError(
                    f"row {i}: {k} input ids but {len(token_type_ids[i])} token type ids"
                )
            types_arr[i, :k] = token_type_ids[i]
    return {
        "input_ids": torch.from_numpy(ids_arr),
        "attention_mask": torch.from_numpy(mask_arr),
        "token_type_ids": torch.from_numpy(types_arr),
    }


# --------------------------------------------------------------------------- batching


def bucket_batches(
    lengths: Sequence[int],
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    bucket_mult: int = 50,
    drop_last: bool = False,
) -> list[list[int]]:
    """Group example indices into length-homogeneous batches.

    With ``shuffle=True`` (training): shuffle all indices with a seeded generator, cut
    them into chunks of ``batch_size * bucket_mult``, sort each chunk by length, cut the
    chunks into batches and shuffle the batch order. Batches are random yet contain
    similar lengths, so little compute goes to padding.

    With ``shuffle=False`` (inference): sort every index by length, longest first, and
    cut into batches. Callers put outputs back in input order, e.g.
    ``out[np.concatenate(batches)] = np.concatenate(batch_outputs)``.

    Every index appears exactly once, except that ``drop_last`` drops the (single)
    batch shorter than ``batch_size``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a whole number >= 1, got {batch_size!r}.")
    if isinstance(bucket_mult, bool) or not isinstance(bucket_mult, int) or bucket_mult < 1:
        raise ConfigError(f"bucket_mult must be a whole number >= 1, got {bucket_mult!r}.")
    lens = np.asarray(lengths, dtype=np.int64).reshape(-1)
    n = len(lens)

    if not shuffle:
        order = np.argsort(-lens, kind="stable")
        batches = [order[i : i + batch_size].tolist() for i in range(0, n, batch_size)]
    else:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(n)
        chunk = batch_size * bucket_mult
        batches = []
        for start in range(0, n, chunk):
            part = perm[start : start + chunk]
            part = part[np.argsort(lens[part], kind="stable")]
            batches.extend(
                part[i : i + batch_size].tolist() for i in range(0, len(part), batch_size)
            )
        # Only the very last batch can be short (chunk is a multiple of batch_size);
        # drop it before shuffling so drop_last removes exactly that one.
        if drop_last and batches and len(batches[-1]) < batch_size:
            batches.pop()
        rng.shuffle(batches)  # type: ignore[arg-type]
        return batches

    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Inference batching: indices sorted by length (longest first), cut into batches.
    Same as ``bucket_batches(lengths, batch_size, shuffle=False)``."""
    return bucket_batches(lengths, batch_size, shuffle=False)


__all__ = [
    "SPLITS",
    "Example",
    "SkippedRow",
    "TaskData",
    "Tokenized",
    "task_file",
    "load_task",
    "load_tasks",
    "Subset",
    "SUBSET_SEED",
    "STS_BIN_EDGES",
    "strata_of",
    "stratified_indices",
    "subset_task",
    "load_subset",
    "encode_texts",
    "encode_pairs",
    "pad_batch",
    "bucket_batches",
    "sorted_batches",
]

"""The three tasks, in one table: the one place that lists tasks and their metrics.

    TASK_SPECS["sst"].metrics          ("sst_acc", "sst_macro_f1"): the primary metric first
    canonical_task("sentiment")        "sst" (short names, public aliases, "quora")
    served_tasks(["sst"])              ["sst", "qqp", "sts"]: what a model with these heads serves
    mean_score(metrics)                the one number that ranks checkpoints

==========  ============  ==========  ===========================  ==========================
name        alias         kind        head output                  metrics (primary first)
==========  ============  ==========  ===========================  ==========================
``sst``     sentiment     multiclass  5 logits -> probabilities    sst_acc, sst_macro_f1
``qqp``     paraphrase    binary      1 logit -> P(paraphrase)     qqp_acc, qqp_f1
``sts``     similarity    regression  1 score in [0, 5]            sts_pearson, sts_spearman
==========  ============  ==========  ===========================  ==========================

Every metrics dict also carries ``<task>_n``, the number of examples scored. The pair
tasks are "zero-shot": an encoder without a trained head still serves them from the
cosine of its sentence embeddings (see ``MultitaskBert.served_tasks``).

No project imports here (only core.errors): data loading, the model, evaluation, the
analysis tools and the app all read this table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from core.errors import DataError

STS_RANGE: tuple[float, float] = (0.0, 5.0)
"""Inclusive range of the STS similarity score."""
QUORA_NOTE = ("all-MiniLM-L6-v2 was contrastively pre-trained on data that includes Quora duplicates, so Quora "
              "figures overstate what it would do on unseen paraphrase data.")
"""Said next to every Quora figure (CLI, tables, app)."""


@dataclass(frozen=True)
class TaskSpec:
    """One task: its names, what its head outputs, how it is scored, where its data is."""
    name: str                       # short name used in files, configs and metric keys
    alias: str                      # public long name (the analysis API, page titles)
    title: str                      # display name
    dataset: str                    # where the examples come from
    kind: str                       # "multiclass" | "binary" | "regression"
    out_dim: int                    # width of the head's output
    metrics: tuple[str, ...]        # metric keys, the primary one first
    labels: tuple[str, ...] = ()    # class names by label id (classification tasks)
    pair: bool = False              # examples are sentence pairs
    zero_shot: bool = False         # served by a bare encoder (embedding cosine)
    columns: tuple[tuple[str, ...], str] = ((), "")   # (text columns, label column)
    files: Mapping[str, str | None] = field(default_factory=dict)   # split -> file name

    @property
    def primary(self) -> str:
        """The metric that ranks checkpoints on this task."""
        return self.metrics[0]

    @property
    def count_key(self) -> str:
        """The metrics-dict key holding how many examples were scored."""
        return f"{self.name}_n"


TASK_SPECS: dict[str, TaskSpec] = {spec.name: spec for spec in (
    TaskSpec("sst", "sentiment", "Sentiment", "Stanford Sentiment Treebank", "multiclass", 5,
             ("sst_acc", "sst_macro_f1"),
             labels=("very negative", "negative", "neutral", "positive", "very positive"),
             columns=(("sentence",), "sentiment"),
             files={"train": "ids-sst-train.csv", "dev": "ids-sst-dev.csv", "test": "ids-sst-test-student.csv"}),
    TaskSpec("qqp", "paraphrase", "Paraphrase", "Quora Question Pairs", "binary", 1,
             ("qqp_acc", "qqp_f1"), labels=("not paraphrase", "paraphrase"), pair=True, zero_shot=True,
             columns=(("sentence1", "sentence2"), "is_duplicate"),
             files={"train": "quora-train.csv", "dev": "quora-dev.csv", "test": None}),
    TaskSpec("sts", "similarity", "Similarity", "SemEval STS benchmark", "regression", 1,
             ("sts_pearson", "sts_spearman"), pair=True, zero_shot=True,
             columns=(("sentence1", "sentence2"), "similarity"),
             files={"train": "sts-train.csv", "dev": "sts-dev.csv", "test": "sts-test-student.csv"}),
)}

# Views of the table, under the names the rest of the code has always used.
TASKS: tuple[str, ...] = tuple(TASK_SPECS)
TASK_NAMES: dict[str, str] = {t: s.alias for t, s in TASK_SPECS.items()}
TASK_TITLES: dict[str, str] = {t: s.title for t, s in TASK_SPECS.items()}
TASK_ALIASES: dict[str, str] = {**{t: t for t in TASKS}, **{s.alias: t for t, s in TASK_SPECS.items()},
                                "quora": "qqp"}
TASK_LABELS: dict[str, list[str]] = {t: list(s.labels) for t, s in TASK_SPECS.items() if s.labels}
N_CLASSES: dict[str, int] = {t: len(names) for t, names in TASK_LABELS.items()}
PAIR_TASKS: frozenset[str] = frozenset(t for t, s in TASK_SPECS.items() if s.pair)
ZERO_SHOT_TASKS: tuple[str, ...] = tuple(t for t, s in TASK_SPECS.items() if s.zero_shot)
TASK_COLUMNS: dict[str, tuple[tuple[str, ...], str]] = {t: s.columns for t, s in TASK_SPECS.items()}
TASK_FILES: dict[str, dict[str, str | None]] = {t: dict(s.files) for t, s in TASK_SPECS.items()}
HEAD_OUT_DIMS: dict[str, int] = {t: s.out_dim for t, s in TASK_SPECS.items()}
PRIMARY: dict[str, str] = {t: s.primary for t, s in TASK_SPECS.items()}
METRIC_NAMES: tuple[str, ...] = tuple(m for s in TASK_SPECS.values() for m in s.metrics)
"""Every metric key, in task order (the ``core.evaluate --json`` keys besides ``*_n``)."""


def canonical_task(task: str) -> str:
    """The short name of a task given any accepted spelling ("sentiment", "SST", "quora");
    unknown names raise :class:`DataError` listing the valid ones."""
    key = str(task).strip().lower()
    if key not in TASK_ALIASES:
        raise DataError(f"Unknown task {task!r}. Valid tasks: {', '.join(TASKS)} "
                          f"(or {', '.join(TASK_NAMES.values())}).")
    return TASK_ALIASES[key]


def served_tasks(heads: Iterable[str]) -> list[str]:
    """The one rule for which tasks a model serves: those it has a trained head for,
    plus the zero-shot pair tasks (a bare encoder scores them from embedding cosine).
    In task order."""
    heads = set(heads)
    return [t for t in TASKS if t in heads or TASK_SPECS[t].zero_shot]


def mean_score(metrics: Mapping, tasks: Iterable[str] | None = None) -> float:
    """Mean of each task's primary metric over ``tasks`` (default: every task) that
    ``metrics`` has: the one number used to rank checkpoints; NaN when it has none."""
    keys = [PRIMARY[t] for t in (tasks or TASKS) if PRIMARY[t] in metrics]
    return sum(float(metrics[k]) for k in keys) / len(keys) if keys else float("nan")

"""core/tasks.py: the one table of tasks and metric names, and the rules it owns."""
from __future__ import annotations

import math

import numpy as np
import pytest

from core.errors import MinbertError
from core.evaluation.metrics import task_metrics
from core.tasks import METRIC_NAMES, PRIMARY, TASK_SPECS, canonical_task, mean_score, served_tasks

# ../shared/CONTRACT.md: the JSON keys of `python -m core.evaluate --json`
CONTRACT_KEYS = {"sst_acc", "sst_macro_f1", "qqp_acc", "qqp_f1", "sts_pearson", "sts_spearman",
                 "sst_n", "qqp_n", "sts_n"}


def test_metric_names_are_the_contract_keys():
    counts = {spec.count_key for spec in TASK_SPECS.values()}
    assert set(METRIC_NAMES) | counts == CONTRACT_KEYS
    # README "Results": checkpoints are ranked by SST accuracy, Quora accuracy, STS Pearson
    assert PRIMARY == {"sst": "sst_acc", "qqp": "qqp_acc", "sts": "sts_pearson"}


@pytest.mark.parametrize("task,labels,pred", [
    ("sst", [0, 4, 2], [0, 3, 2]),
    ("qqp", [1, 0, 1], [0.9, 0.2, 0.4]),
    ("sts", [0.0, 2.5, 5.0], [0.5, 2.0, 4.0]),
])
def test_task_metrics_report_exactly_the_table_names(task, labels, pred):
    spec = TASK_SPECS[task]
    assert set(task_metrics(task, np.array(labels), np.array(pred))) == {*spec.metrics, spec.count_key}


def test_served_tasks_rule():
    assert served_tasks([]) == ["qqp", "sts"]                 # a bare encoder: zero-shot pair tasks
    assert served_tasks(["sst"]) == ["sst", "qqp", "sts"]
    assert served_tasks({"sts", "sst"}) == ["sst", "qqp", "sts"]


def test_mean_score_by_hand():
    metrics = {"sst_acc": 0.5, "sst_macro_f1": 0.1, "qqp_acc": 0.75, "sts_pearson": 0.9}
    assert mean_score(metrics) == pytest.approx((0.5 + 0.75 + 0.9) / 3)
    assert mean_score(metrics, ["sst"]) == 0.5
    assert mean_score({"qqp_acc": 0.75}) == 0.75               # tasks it lacks are left out
    assert math.isnan(mean_score({}))


def test_names_and_aliases():
    assert [canonical_task(t) for t in ("Sentiment", "paraphrase", "quora", "STS")] == ["sst", "qqp", "qqp", "sts"]
    with pytest.raises(MinbertError, match="Valid tasks: sst, qqp, sts"):
        canonical_task("ner")



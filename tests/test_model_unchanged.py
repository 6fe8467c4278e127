"""Behaviour unchanged, against stored files (not against the code under test):

- the shipped checkpoint (checkpoints/minbert-multitask, format 1, head tensors under
  their earlier names ``heads.<task>.mlp.*``) still predicts what it stored in
  ``predictions/<task>-dev.csv`` when it was published, on the first dev rows of each task;
- every results-only study run (checkpoints/study/*/config.json) still parses with
  today's typed config (``Config.from_dict``).

How the stored predictions were written (core/evaluation/evaluator.py write_predictions):
one row per dev example, in dev order; the texts as read (``sentence`` or ``sentence1`` /
``sentence2``), the float32 outputs of ``predict_task(..., long_text="truncate")`` printed
with pandas' default float format: the shortest repr that round-trips a float32 (8
significant digits), so the stored rounding itself is below 1e-7 absolute for values in
[0, 5]. What remains is float32 summation order: the stored run batched the whole dev
set (other batch neighbours, other padding lengths) where this test batches 64 rows.
Measured on this checkout (2 shared CPU cores): max |difference| 4.1e-7 (sst), 8.9e-7
(qqp), 7.3e-7 (sts). Tolerance: 1e-4 absolute (probabilities) and 5e-4 (STS scores in
[0, 5]) - room for another CPU's kernels and summation order, still two orders below
any real change (a changed head, pooling, key map or input layout moves these values
by 1e-2 and more).
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import REPO

SHIPPED_DIR = REPO / "checkpoints" / "minbert-multitask"   # the stored files are the source
STUDY_DIR = REPO / "checkpoints" / "study"
N = 64   # first dev rows of each task

shipped = pytest.mark.skipif(not (SHIPPED_DIR / "model.safetensors").is_file(),
                             reason="checkpoints/minbert-multitask is not in this checkout")


def _stored(task: str) -> pd.DataFrame:
    # keep_default_na=False: a text such as "null" or "NA" stays text
    return pd.read_csv(SHIPPED_DIR / "predictions" / f"{task}-dev.csv", dtype=str,
                       keep_default_na=False).head(N)


@pytest.fixture(scope="module")
def shipped_model():
    from core.model import MultitaskBert
    return MultitaskBert.load("minbert-multitask")


@shipped
def test_shipped_checkpoint_still_predicts_its_stored_sentiment(shipped_model):
    rows = _stored("sst")
    probs = rows[[f"prob_{k}" for k in range(5)]].astype(np.float64).to_numpy()
    out = shipped_model.predict_task("sst", rows["sentence"].tolist(), long_text="truncate")
    np.testing.assert_allclose(out, probs, atol=1e-4, rtol=0)
    assert out.argmax(1).tolist() == rows["pred"].astype(int).tolist()


@shipped
@pytest.mark.parametrize("task,column,atol", [("qqp", "prob", 1e-4), ("sts", "pred", 5e-4)])
def test_shipped_checkpoint_still_predicts_its_stored_pairs(shipped_model, task, column, atol):
    rows = _stored(task)
    out = shipped_model.predict_task(task, rows["sentence1"].tolist(), rows["sentence2"].tolist(),
                                     long_text="truncate")
    np.testing.assert_allclose(out, rows[column].astype(np.float64).to_numpy(), atol=atol, rtol=0)
    if task == "qqp":   # and the same decisions
        assert (out > 0.5).astype(int).tolist() == rows["pred"].astype(int).tolist()


@shipped
def test_shipped_checkpoint_stores_the_earlier_head_names():
    """The test above is a legacy-key test too: the shipped weights use ``mlp``."""
    from core.model.bert import safetensors_shapes
    names = safetensors_shapes(SHIPPED_DIR / "model.safetensors")
    assert any(".mlp." in k for k in names) and not any(".ffn." in k for k in names)


STUDY_CONFIGS = sorted(STUDY_DIR.glob("*/config.json"))


@pytest.mark.skipif(not STUDY_CONFIGS, reason="no study runs in this checkout")
@pytest.mark.parametrize("path", STUDY_CONFIGS, ids=lambda p: p.parent.name)
def test_every_study_run_config_still_parses(path):
    from core.config.schema import Config
    meta = json.loads(path.read_text())
    config = Config.from_dict(meta["config"])
    assert config.to_dict()["name"] == meta["config"]["name"]
    assert set(meta.get("tasks") or []) <= {"sst", "qqp", "sts"}

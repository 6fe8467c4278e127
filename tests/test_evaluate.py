"""core.evaluate: the contract's JSON keys, prediction files, submission format."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from conftest import REPO
from core.data import load_task
from core.evaluate import main, prediction_frame

CONTRACT_KEYS = {"sst_acc", "sst_macro_f1", "qqp_acc", "qqp_f1", "sts_pearson", "sts_spearman",
                 "sst_n", "qqp_n", "sts_n"}


def test_cli_json_keys_and_predictions(tiny_checkpoint, capsys):
    rc = main([str(tiny_checkpoint), "--json", "--limit", "20", "--data-dir", str(REPO / "data")])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert CONTRACT_KEYS <= set(result)
    assert result["sst_n"] == result["qqp_n"] == result["sts_n"] == 20
    preds = pd.read_csv(tiny_checkpoint / "predictions" / "sst-dev.csv")
    assert len(preds) == 20 and {"id", "sentence", "label", "pred", "prob_4", "correct"} <= set(preds.columns)
    assert result["sst_acc"] == preds["correct"].mean()


def test_submission_format(tiny_checkpoint, tmp_path, capsys):
    data = tmp_path / "data"  # the real test files, cut to their first 40 rows
    data.mkdir()
    for name in ("ids-sst-test-student.csv", "sts-test-student.csv"):
        lines = (REPO / "data" / name).read_text().splitlines(keepends=True)
        (data / name).write_text("".join(lines[:41]))
    rc = main([str(tiny_checkpoint), "--split", "test", "--json", "--out", str(tmp_path),
               "--data-dir", str(data)])
    assert rc == 0
    lines = (tmp_path / "sst-test-output.csv").read_text().splitlines()
    assert lines[0] == "id \t Predicted_Sentiment "
    assert len(lines) == 1 + 40
    first_id, value = lines[1].split(" , ")
    assert len(first_id) == 25 and int(value) in range(5)
    sts = (tmp_path / "sts-test-output.csv").read_text().splitlines()
    assert sts[0] == "id \t Predicted_Similiarity " and len(sts) == 1 + 40


def test_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), "--json"]) == 2
    assert "checkpoint directory not found" in capsys.readouterr().err


def test_prediction_frame_columns():
    data = load_task("sts", "dev", REPO / "data", limit=3)
    df = prediction_frame(data, np.array([1.0, 2.0, 3.0]))
    assert list(df["residual"]) == list(np.array([1.0, 2.0, 3.0]) - data.labels)

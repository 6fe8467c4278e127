"""Study runs store dev predictions and embedding samples by example id only; readers get
the sentences back from data/. A slimmed file must read back as the full one did."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from analysis import geometry
from analysis.predictions import load_predictions
from core.data.datasets import load_task
from core.errors import DataError, MinbertError
from core.evaluation.evaluator import prediction_frame, slim_predictions, write_predictions


def _frames(repo, n=5):
    rng = np.random.default_rng(0)
    frames = {}
    for task in ("sst", "qqp", "sts"):
        data = load_task(task, "dev", repo / "data", limit=n)
        if task == "sst":
            out = rng.dirichlet(np.ones(5), size=n)
        elif task == "qqp":
            out = rng.uniform(0, 1, size=n)
        else:
            out = rng.uniform(0, 5, size=n)
        frames[task] = prediction_frame(data, out)
    return frames


def test_slim_files_read_back_as_the_full_ones(repo, tmp_path):
    frames = _frames(repo)
    full, slim = tmp_path / "full", tmp_path / "slim"
    write_predictions(frames, full / "predictions", "dev")
    shutil.copytree(full, slim)
    slim_predictions(slim / "predictions")
    for task, texts in (("sst", ["sentence"]), ("qqp", ["sentence1", "sentence2"]), ("sts", ["sentence1", "sentence2"])):
        with (slim / "predictions" / f"{task}-dev.csv").open() as f:
            header = next(csv.reader(f))
        assert not set(texts) & set(header), header          # no sentences stored
        a = load_predictions(full, task)
        b = load_predictions(slim, task)
        assert list(a.columns) == list(b.columns)
        for c in texts + ["id"] + (["label", "pred", "correct"] if task != "sts" else []):
            assert a[c].tolist() == b[c].tolist(), c
        floats = [c for c in a.columns if c.startswith("prob") or c in ("confidence", "residual")
                  or (task == "sts" and c in ("label", "pred"))]
        np.testing.assert_allclose(a[floats].to_numpy(float), b[floats].to_numpy(float), atol=5e-5)
    # 4 decimals written, as the hand-made check of one value shows
    raw = pd.read_csv(slim / "predictions" / "qqp-dev.csv", dtype={"id": str})
    assert raw["prob"].iloc[0] == round(float(frames["qqp"]["prob"].iloc[0]), 4)
    # slimming twice changes nothing
    before = (slim / "predictions" / "sst-dev.csv").read_text()
    slim_predictions(slim / "predictions")
    assert (slim / "predictions" / "sst-dev.csv").read_text() == before


def test_an_id_not_in_the_data_is_refused(repo, tmp_path):
    frames = _frames(repo, n=3)
    frames["sst"].loc[1, "id"] = "not-an-sst-dev-id"
    write_predictions({"sst": frames["sst"]}, tmp_path / "predictions", "dev")
    slim_predictions(tmp_path / "predictions")
    with pytest.raises(DataError, match="1 id\\(s\\) that are not in the sst dev data.*not-an-sst-dev-id"):
        load_predictions(tmp_path, "sst")


def test_a_sample_without_sentences_gets_them_by_id(repo, tmp_path):
    data = load_task("sts", "dev", repo / "data", limit=4)
    part = {"ids": data.ids[:3], "labels": [float(x) for x in data.labels[:3]], "predictions": [1.0, 2.0, 3.0],
            "projections": {"pca-2d": [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]]}, "metrics": {}}
    doc = {"format": geometry.SAMPLE_FORMAT, "version": 1, "split": "dev", "n": 3, "seed": 0, "report": {},
           "samples": {"sts": part}}
    path = tmp_path / "embeddings.json"
    path.write_text(json.dumps(doc))
    sample, xy, _ = geometry.stored_view(path, "sts", "pca", 2)
    assert sample.texts_a == data.texts_a[:3] and xy.shape == (3, 2)
    # files written before (sentences inside) are read as they are
    doc["samples"]["sts"]["texts_a"] = ["a", "b", "c"]
    path.write_text(json.dumps(doc))
    assert geometry.stored_view(path, "sts", "pca", 2)[0].texts_a == ["a", "b", "c"]
    doc["samples"]["sts"].pop("texts_a")
    doc["samples"]["sts"]["ids"] = ["nope"] + data.ids[1:3]
    path.write_text(json.dumps(doc))
    with pytest.raises(MinbertError, match="1 id\\(s\\) that are not in the sts dev data"):
        geometry.stored_view(path, "sts", "pca", 2)

"""The shipped model (checkpoints/minbert-multitask): found by name from any working
directory, small enough to ship, and still reproducing its own dev predictions with
today's code (checkpoints outlive code). The export path that made it is tested on the
session's tiny checkpoint."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from core.model.checkpoint import SHIPPED, SHIPPED_DIR
from core.model.multitask import MultitaskBert

shipped = pytest.mark.skipif(not (SHIPPED_DIR / "model.safetensors").is_file(),
                             reason="checkpoints/minbert-multitask is not in this checkout")
N = 48   # dev examples per task re-predicted here (the whole sets take a minute)


@shipped
def test_shipped_model_loads_by_name_from_any_directory(tmp_path):
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from core.model.multitask import MultitaskBert\n"
            "m = MultitaskBert.load('minbert-multitask')\n"
            "print(sorted(m.heads), m.predict_sentiment(['a fine film']).shape)") % str(REPO)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "['qqp', 'sst', 'sts'] (1, 5)"


@shipped
def test_shipped_model_is_small_and_complete():
    size_mb = (SHIPPED_DIR / "model.safetensors").stat().st_size / 2**20
    assert size_mb <= 50
    for name in ("config.json", "metrics.json", "train_log.jsonl", "tokenizer.json",
                 "predictions/sst-dev.csv", "predictions/qqp-dev.csv", "predictions/sts-dev.csv"):
        assert (SHIPPED_DIR / name).is_file(), name
    meta = json.loads((SHIPPED_DIR / "config.json").read_text())
    assert meta["config"]["name"] == "best" and meta["weights_dtype"] == "float16"
    # format 1, head tensors under their earlier names (heads.<task>.mlp.*): the dev
    # predictions test below is also the test that such checkpoints still load
    from core.model.bert import safetensors_shapes
    assert meta.get("format_version") == 1
    assert "heads.sst.mlp.net.1.weight" in safetensors_shapes(SHIPPED_DIR / "model.safetensors")


@shipped
@pytest.mark.parametrize("task", ["sst", "qqp", "sts"])
def test_shipped_model_reproduces_its_shipped_dev_predictions(task):
    from core.data.datasets import load_task
    model = MultitaskBert.load(SHIPPED)
    data = load_task(task, "dev", REPO / "data", limit=N)
    shipped_preds = pd.read_csv(SHIPPED_DIR / "predictions" / f"{task}-dev.csv", dtype={"id": str}).head(N)
    assert list(shipped_preds["id"]) == data.ids
    # the dev predictions were made as in training: inputs cut at max_len (no windows)
    out = model.predict_task(task, data.texts_a, data.texts_b, long_text="truncate")
    if task == "sst":
        expected = shipped_preds[[f"prob_{k}" for k in range(5)]].to_numpy()
    else:
        expected = shipped_preds["prob" if task == "qqp" else "pred"].to_numpy()
    np.testing.assert_allclose(out, expected, atol=2e-4)


def test_export_writes_half_precision_weights_that_predict_like_the_original(tiny_checkpoint, tmp_path):
    from core.tools.export import export
    dst = tmp_path / "exported"
    metrics = export(tiny_checkpoint, dst, "float16", data_dir=REPO / "data", eval_limit=16)
    full = (tiny_checkpoint / "model.safetensors").stat().st_size
    half = (dst / "model.safetensors").stat().st_size
    assert half < 0.55 * full
    a, b = MultitaskBert.load(tiny_checkpoint), MultitaskBert.load(dst)
    texts = ["A gorgeous, witty, seductive movie.", "Dull and far too long."]
    # fp16 keeps ~3 significant digits of each weight: outputs agree to about 1e-2
    np.testing.assert_allclose(a.predict_sentiment(texts), b.predict_sentiment(texts), atol=1e-2)
    summary = json.loads((dst / "metrics.json").read_text())
    assert summary["dev"] == metrics and summary["weights_dtype"] == "float16"
    assert (dst / "predictions" / "sst-dev.csv").is_file() and (dst / "train_log.jsonl").is_file()

"""Smoke run of ``python -m core.bench --json`` at minimal sizes (no timing assertions)."""
from __future__ import annotations

import json
import math

from core import bench


def test_bench_json_smoke(capsys, repo):
    code = bench.main(["--json", "--repeats", "1", "--encode-limit", "12", "--train-examples", "4",
                       "--train-batch-size", "4", "--latency-n", "1", "--device", "cpu",
                       "--data-dir", str(repo / "data"), "--set", "model.max_len=32"])
    assert code == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("encode_ratio_best", "encode_ratio_fp32", "encode_ratio_int8", "train_ratio"):
        assert math.isfinite(r[key]) and r[key] > 0, (key, r[key])
    assert r["encode_ratio_best"] == max(r["encode_ratio_fp32"], r["encode_ratio_int8"])
    enc, train, lat = r["encode"], r["train"], r["latency"]
    assert enc["n_sentences"] == 12 and set(enc["sentences_per_s"]) == {"reference", "ours_fp32", "ours_int8"}
    assert enc["fp32_max_abs_diff"] < 1e-4           # same answers as the reference
    assert enc["int8_mean_cosine"] > 0.95
    assert train["n_examples"] == 4 and train["steps_per_repeat"] == 1 and train["max_len"] == 32
    assert {"reference", "ours_fp32"} <= set(train["examples_per_s"])
    assert r["train_ratio"] == train["ratio_best"] >= r["train_ratio_fp32"] > 0
    assert lat["op"] == "embed" and lat["fp32_p95_ms"] >= lat["fp32_p50_ms"] > 0 and lat["n_calls"] == 1
    assert r["machine"]["threads"] >= 1 and r["peak_rss_mb"] > 0
    table = bench.format_table(r)
    assert "transformers.BertModel" in table and "ours train_step fp32" in table

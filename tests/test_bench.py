"""Smoke run of ``python -m core.bench --quick --json`` (every section at toy sizes; no
timing assertions: the figures of a toy run mean nothing, only keys and checks do)."""
from __future__ import annotations

import json
import math

from core.tools import bench
from core.model.precision import RELEVANT_CPU_FLAGS, bf16_is_fast


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_bench_json_smoke(capsys, repo, tmp_path, monkeypatch):
    monkeypatch.setenv("MINBERT_CACHE_DIR", str(tmp_path / "cache"))
    code = bench.main(["--json", "--quick", "--device", "cpu", "--data-dir", str(repo / "data"),
                       "--set", "model.max_len=32"])
    assert code == 0
    r = json.loads(capsys.readouterr().out)
    bf16 = bf16_is_fast("cpu")
    for key in ("encode_ratio_best", "encode_ratio_fp32", "encode_ratio_int8", "train_ratio",
                "encode_ratio_vs_st", "eval_seconds", "eval_seconds_cached"):
        assert _finite(r[key]), (key, r[key])
    enc, train, lat, ev = r["encode"], r["train"], r["latency"], r["eval"]
    ours = {"ours_fp32", "ours_int8"} | ({"ours_bf16"} if bf16 else set())
    assert r["encode_ratio_best"] == max(enc[f"ratio_{k.removeprefix('ours_')}"] for k in ours)
    assert enc["n_sentences"] == bench.QUICK["encode_limit"]
    assert ours | {"reference", "st_encode"} <= set(enc["sentences_per_s"])
    assert enc["fp32_max_abs_diff"] < 1e-4                                    # same answers as the reference
    assert enc["deviation"]["st_encode"]["max_abs_diff"] < 1e-4               # same weights in ST
    assert enc["int8_mean_cosine"] > 0.95
    assert enc["deviation"][r["encode_best_path"]]["min_cosine"] >= bench.BEST_MIN_COSINE
    # onnxruntime is pinned in requirements.txt: the ONNX Runtime rows are always measured on CPU
    assert "onnx_skipped" not in enc["checks"], enc["checks"].get("onnx_skipped")
    assert {"ort_fp32", "ort_int8", "ort_int8_equal"} <= set(enc["sentences_per_s"])
    assert _finite(r["encode_ratio_vs_ort_int8"])
    assert enc["checks"]["ort_fp32_verify"]["max_abs_diff"] <= 1e-4           # checked before timing
    assert enc["deviation"]["ort_fp32"]["max_abs_diff"] < 1e-4
    assert enc["checks"]["ort_int8_equal_quantization"]["kept_fp32_nodes"] == 6
    # the bf16 rows exist exactly when the one rule (core.model.precision.bf16_is_fast) says bf16 is fast
    assert ("ours_bf16" in enc["sentences_per_s"]) == bf16 == ("bf16_p50_ms" in lat)
    assert (r.get("train_ratio_bf16") is not None) == bf16
    if bf16:
        assert enc["deviation"]["ours_bf16"]["min_cosine"] > 0.999 and r["train_ratio_bf16"] > 0
    assert train["n_examples"] == 8 and train["steps_per_repeat"] == 2 and train["max_len"] == 32
    assert r["train_ratio"] == train["ratio_best"] >= r["train_ratio_fp32"] > 0
    assert lat["op"] == "embed" and lat["fp32_p95_ms"] >= lat["fp32_p50_ms"] > 0 and lat["n_calls"] == 2
    assert ev["n"] == {"sst": 12, "qqp": 12, "sts": 12}
    assert ev["fp32_cached_profile"].get("load_model_s") is None               # the cache hit loads nothing
    assert ev["fp32_cached_metrics"] == ev["fp32_metrics"]
    assert set(r["cpu_flags"]) <= set(RELEVANT_CPU_FLAGS) and r["machine"]["cpu_flags"] == r["cpu_flags"]
    assert r["machine"]["threads"] >= 1 and r["peak_rss_mb"] > 0
    table = bench.format_table(r)
    for label in ("transformers.BertModel", "sentence-transformers encode()", "ours train_step fp32",
                  "flags:", "eval:"):
        assert label in table, label

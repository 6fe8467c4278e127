"""python -m analysis.compare A B --out DIR: the comparison report, on a checkpoint with
weights and a results-only run (stored predictions only)."""
from __future__ import annotations

import shutil

import pandas as pd
import pytest

from analysis import compare
from analysis import significance as S


@pytest.fixture(scope="module")
def root(tiny_checkpoint, tmp_path_factory):
    """``tiny`` (weights) and ``kept<i>`` (its predictions and metrics only, SST
    predictions of 3 examples changed): the second is a results-only run whose name
    needs escaping in HTML."""
    root = tmp_path_factory.mktemp("report-root")
    shutil.copytree(tiny_checkpoint, root / "tiny")
    kept = root / "kept<i>"
    kept.mkdir()
    shutil.copytree(tiny_checkpoint / "predictions", kept / "predictions")
    shutil.copy(tiny_checkpoint / "metrics.json", kept / "metrics.json")
    sst = pd.read_csv(kept / "predictions" / "sst-dev.csv", dtype={"id": str})
    sst.loc[:2, "pred"] = (sst.loc[:2, "pred"] + 1) % 5
    sst["correct"] = sst["pred"] == sst["label"]
    sst.to_csv(kept / "predictions" / "sst-dev.csv", index=False)
    return root


def test_report_in_html_with_figures_tables_and_behaviour(root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINBERT_CHECKPOINTS", str(root))
    out = tmp_path / "report"
    assert compare.main(["tiny", "kept<i>", "--out", str(out), "--format", "html", "--resamples", "200"]) == 0
    assert capsys.readouterr().out.strip().endswith("report.html")
    page = (out / "report.html").read_text()
    assert "<i>" not in page.replace("<img", "").split("<body>")[1] and "kept&lt;i&gt;" in page
    for name in ("paired-overall", "reliability-sst", "reliability-qqp"):
        assert (out / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert b"<svg" in (out / "figures" / f"{name}.svg").read_bytes()[:400]
        assert f"figures/{name}.svg" in page
    # the report's numbers are the paired comparison's (same seed, same resamples)
    table, _ = S.compare_runs(root / "tiny", root / "kept<i>", names=("tiny", "kept<i>"), n_resamples=200)
    overall = pd.read_csv(out / "tables" / "paired-overall.csv")
    expected = table[table["slice"] == "all"]
    assert overall["A − B"].tolist() == pytest.approx(expected["diff"].tolist())
    assert overall["low"].tolist() == pytest.approx(expected["low"].tolist())
    assert overall["verdict"].tolist() == expected["verdict"].tolist()
    sst_acc = overall[(overall["task"] == "sst") & (overall["metric"] == "accuracy")].iloc[0]
    assert sst_acc["only tiny right"] + sst_acc["only kept<i> right"] <= 3      # only 3 predictions differ
    slices = pd.read_csv(out / "tables" / "paired-slices.csv")
    assert set(slices["slice"]) >= {"length", "negation", "label"} and (slices["n"] <= 16).all()
    rates = pd.read_csv(out / "tables" / "behaviour-pass-rates.csv")
    assert "tiny" in rates.columns and "kept<i>" not in rates.columns and len(rates) == 14
    assert "not run: weights not available locally" in page
    assert "ECE" in pd.read_csv(out / "tables" / "calibration.csv").columns


def test_report_in_markdown_without_behaviour(root, tmp_path, monkeypatch):
    monkeypatch.setenv("MINBERT_CHECKPOINTS", str(root))
    out = tmp_path / "md"
    assert compare.main(["tiny", str(root / "kept<i>"), "--out", str(out), "--no-behaviour",
                         "--resamples", "100"]) == 0
    text = (out / "report.md").read_text()
    assert "## Is the difference real?" in text and "### Per slice" in text and "Behaviour tests" not in text
    assert "| task | metric | n |" in text and "(tables/paired-overall.csv)" in text


@pytest.mark.parametrize("argv, message", [
    (["tiny", "tiny", "--out", "x"], "two different checkpoints"),
    (["tiny", "missing", "--out", "x"], "no checkpoint 'missing'"),
    (["tiny", "kept<i>", "--out", "x", "--resamples", "10"], "at least 100 resamples"),
])
def test_report_errors_are_clear(root, tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.setenv("MINBERT_CHECKPOINTS", str(root))
    monkeypatch.chdir(tmp_path)
    assert compare.main(argv) == 2
    assert message in capsys.readouterr().err

"""Downloads: every figure builder of analysis/plots.py as PNG and SVG (offline redraw,
analysis/figure_export.py) and tables as CSV with formula cells neutralised
(core.data.inputs.csv_export_bytes through analysis/csv_export.py and app/exports.py)."""
from __future__ import annotations

import io
import struct
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from analysis import plots
from core.data.inputs import csv_export_bytes as csv_bytes
from analysis.figure_export import render, to_png, to_svg


class _Attribution:      # the fields saliency_figure reads (analysis.saliency.Attribution)
    def __init__(self, tokens, scores):
        self.tokens, self.scores = tokens, np.asarray(scores, float)
        self.segments = [0] * len(tokens)
        self.output_name, self.prediction, self.delta = "P(positive)", 0.8, 0.001


def _figures() -> dict:
    rng = np.random.default_rng(0)
    tokens = ["[CLS]", "a", "fine", "film", "[SEP]"]
    slices = pd.DataFrame({"length": ["0-10", "10-20"], "accuracy": [0.5, 0.6], "n": [30, 40],
                           "accuracy_low": [0.4, 0.5], "accuracy_high": [0.6, 0.7]})
    diffs = pd.DataFrame({"task": ["sst", "qqp"], "metric": ["accuracy", "f1"], "slice": ["all", "all"],
                          "value": ["all", "all"], "diff": [0.05, -0.01], "low": [0.02, -0.03], "high": [0.08, 0.01],
                          "n": [1101, 2000]})
    bins = pd.DataFrame({"lo": np.arange(10) / 10, "hi": np.arange(1, 11) / 10, "n": np.arange(10),
                         "confidence": np.arange(10) / 10 + 0.05, "accuracy": np.arange(10) / 10})
    sts = pd.DataFrame({"label": [1.0, 4.0], "pred": [1.5, 3.0], "sentence1": ["a", "b"], "sentence2": ["c", "d"]})
    return {
        "confusion": (plots.confusion_figure(np.arange(25).reshape(5, 5), ["vneg", "neg", "neu", "pos", "vpos"],
                                             "Confusion"), ["vneg", "vpos", "Confusion", "24"]),
        "slices": (plots.slice_figure(slices, "length", "accuracy", "per slice"), ["0-10", "10-20", "per slice"]),
        "difference": (plots.difference_figure(diffs, ("A", "B"), "A minus B"), ["sst accuracy", "qqp f1"]),
        "reliability": (plots.reliability_figure({"shipped": {"bins": bins}}, "reliability"),
                        ["shipped", "perfect calibration", "observed frequency"]),
        "attention": (plots.attention_heatmap(tokens, rng.random((5, 5)), "one head"), ["fine", "one head"]),
        "heads": (plots.attention_grid(tokens, rng.random((4, 5, 5)), cols=2, title="layer 0"), ["head 3"]),
        "saliency": (plots.saliency_figure([_Attribution(tokens, [0, 0.2, 0.5, -0.3, 0])], ["tiny"]),
                     ["film", "P(positive)"]),
        "projection": (plots.projection_figure(rng.random((30, 2)), np.array(["pos", "neg"] * 15), ["t"] * 30,
                                               title="UMAP", categorical=True), ["pos", "neg", "UMAP"]),
        "projection-3d": (plots.projection_figure(rng.random((30, 3)), rng.random(30), ["t"] * 30, title="3-D"),
                          ["x-y view"]),
        "residuals": (plots.residual_figure(sts, "Predicted vs gold"), ["gold similarity"]),
        "dev-curve": (plots.dev_curve_figure([{"event": "start", "time": 0},
                                              {"event": "eval", "time": 60, "sst_acc": 0.4, "sts_pearson": 0.7},
                                              {"event": "eval", "time": 120, "sst_acc": 0.45, "sts_pearson": 0.8}],
                                             "curve"), ["SST accuracy", "STS Pearson"]),
    }


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("name", list(_figures()))
def test_every_figure_exports_as_png_and_svg_with_its_labels(name):
    fig, labels = _figures()[name]
    png = to_png(fig)
    width = fig.layout.width or 800
    height = fig.layout.height or 450
    assert _png_size(png) == (2 * width, 2 * height)          # the layout's pixel size at 2x
    svg = to_svg(fig).decode("utf-8")
    ET.fromstring(svg)                                        # well-formed XML
    texts = " ".join(t.text or "" for t in ET.fromstring(svg).iter() if t.tag.endswith("text"))
    for label in labels:
        assert label in texts, (label, texts[:400])
    assert "not drawn" not in texts                           # every trace type of ours is drawn


def test_the_redraw_follows_the_data():
    """The bars' heights and the heatmap's cells are the figure's numbers, not a picture of something else."""
    slices = pd.DataFrame({"length": ["a", "b", "c"], "accuracy": [0.2, 0.9, 0.5], "n": [1, 2, 3]})
    ax = render(plots.slice_figure(slices, "length", "accuracy")).axes[0]
    assert [round(p.get_height(), 6) for p in ax.patches] == [0.2, 0.9, 0.5]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    cm = np.array([[3, 1], [0, 5]])
    ax = render(plots.confusion_figure(cm, ["no", "yes"])).axes[0]
    image = ax.get_images()[0].get_array()
    assert np.array_equal(np.asarray(image), cm)
    assert ax.yaxis_inverted()                                # gold class 0 on top, as plotly draws it


def test_csv_neutralises_formula_cells_and_keeps_numbers():
    df = pd.DataFrame({"text": ["=HYPERLINK(\"http://x\")", "+1", "-2", "@SUM(A1)", "\tx", "\rx", "plain", "a=b"],
                       "score": [-1.5, 2, 3, 4, 5, 6, 7, 8]})
    out = pd.read_csv(io.BytesIO(csv_bytes(df)), keep_default_na=False)
    assert out["text"].tolist()[:4] == ["'=HYPERLINK(\"http://x\")", "'+1", "'-2", "'@SUM(A1)"]
    assert out["text"].tolist()[4:] == ["'\tx", "'\rx", "plain", "a=b"]      # a CR inside a cell stays in it
    assert out["score"].tolist()[0] == -1.5                      # a negative number is not text: unchanged
    assert pd.read_csv(io.BytesIO(csv_bytes(pd.DataFrame({"=x": [1]})))).columns[0] == "'=x"


def test_app_exports_and_the_report_use_the_one_csv_writer():
    """Every CSV that leaves the studio (a download, the comparison report) is written by
    core.data.inputs.csv_export_bytes (formula cells neutralised): nothing under app/ or
    analysis/ calls pandas' to_csv itself."""
    from conftest import REPO
    from app import exports
    writers = [f"{p.relative_to(REPO)}:{i}" for d in ("app", "analysis") for p in sorted((REPO / d).rglob("*.py"))
               for i, line in enumerate(p.read_text().splitlines(), 1) if ".to_csv(" in line]
    assert writers == []
    for module in ("app/exports.py", "analysis/report.py"):
        assert "from core.data.inputs import" in (REPO / module).read_text() and \
            "csv_export_bytes" in (REPO / module).read_text(), module
    assert exports.file_stem("study/000-mt-s0 vs <b>") == "study-000-mt-s0-vs-b"

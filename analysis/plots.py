"""Plotly figure builders for the analysis pages (plotly only; no Streamlit).

    attention_heatmap(tokens, maps[layer, head])      one head, [SEP] boundaries drawn
    attention_grid(tokens, maps[layer])               all heads of one layer
    saliency_figure([attr_a, attr_b], ["A", "B"])     token scores on one shared color scale
    confusion_figure(cm)                              SST confusion matrix
    projection_figure(xy, color, hover)               2-D / 3-D scatter of a projection
    residual_figure(df)                               STS gold vs predicted
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.attention import sep_positions

ATTENTION_SCALE = "Blues"
SALIENCY_SCALE = "RdBu"  # red = pushes the output down, blue = pushes it up


def _unique_labels(tokens: Sequence[str]) -> list[str]:
    """Plotly merges equal category labels; number the tokens so every position shows."""
    return [f"{i}:{t}" for i, t in enumerate(tokens)]


def _sep_lines(tokens: Sequence[str]) -> list[dict]:
    """Dotted lines after every inner [SEP] (the sentence boundary), on both axes."""
    style = dict(type="line", line=dict(color="crimson", width=1, dash="dot"))
    shapes = []
    for p in sep_positions(tokens):
        if p < len(tokens) - 1:
            shapes.append({**style, "xref": "x", "yref": "y domain", "x0": p + 0.5, "x1": p + 0.5, "y0": 0, "y1": 1})
            shapes.append({**style, "xref": "x domain", "yref": "y", "x0": 0, "x1": 1, "y0": p + 0.5, "y1": p + 0.5})
    return shapes


def attention_heatmap(tokens: Sequence[str], matrix: np.ndarray, title: str = "",
                      zmax: float | None = 1.0) -> go.Figure:
    """One attention matrix (rows: the attending token, columns: attended-to)."""
    labels = _unique_labels(tokens)
    fig = go.Figure(go.Heatmap(
        z=np.asarray(matrix), x=list(range(len(tokens))), y=list(range(len(tokens))),
        colorscale=ATTENTION_SCALE, zmin=0, zmax=zmax,
        customdata=np.array([[f"{labels[i]} → {labels[j]}" for j in range(len(tokens))]
                             for i in range(len(tokens))]),
        hovertemplate="%{customdata}<br>attention %{z:.3f}<extra></extra>"))
    ticks = dict(tickmode="array", tickvals=list(range(len(tokens))), ticktext=list(tokens))
    fig.update_xaxes(**ticks, tickangle=-60, side="top")
    fig.update_yaxes(**ticks, autorange="reversed")
    fig.update_layout(title=title, shapes=_sep_lines(tokens), height=max(350, 22 * len(tokens) + 120),
                      margin=dict(l=10, r=10, t=90, b=10))
    return fig


def attention_grid(tokens: Sequence[str], layer_maps: np.ndarray, cols: int = 4, title: str = "") -> go.Figure:
    """Every head of one layer (``layer_maps [heads, T, T]``) as a grid of small heatmaps."""
    layer_maps = np.asarray(layer_maps)
    n_heads = layer_maps.shape[0]
    rows = int(np.ceil(n_heads / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"head {h}" for h in range(n_heads)],
                        horizontal_spacing=0.03, vertical_spacing=0.06)
    labels = _unique_labels(tokens)
    hover = np.array([[f"{labels[i]} → {labels[j]}" for j in range(len(tokens))] for i in range(len(tokens))])
    for h in range(n_heads):
        fig.add_trace(go.Heatmap(z=layer_maps[h], colorscale=ATTENTION_SCALE, zmin=0, zmax=1,
                                 showscale=h == 0, customdata=hover,
                                 hovertemplate=f"head {h}<br>%{{customdata}}<br>%{{z:.3f}}<extra></extra>"),
                      row=h // cols + 1, col=h % cols + 1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, autorange="reversed")
    fig.update_layout(title=title, height=230 * rows + 60, margin=dict(l=10, r=10, t=60, b=10))
    return fig


def saliency_figure(attributions: Sequence, names: Sequence[str], zmax: float | None = None) -> go.Figure:
    """One row of colored tokens per attribution, all on the same symmetric color scale
    (``zmax`` defaults to the largest |score| among them)."""
    from analysis.saliency import shared_scale
    if zmax is None:
        zmax = shared_scale(*attributions)
    n = len(attributions)
    fig = make_subplots(rows=n, cols=1, vertical_spacing=0.25 / max(n, 1),
                        subplot_titles=[f"{name}: {a.output_name} = {a.prediction:.3f}"
                                        + (f" (IG delta {a.delta:+.1e})" if a.delta is not None else "")
                                        for name, a in zip(names, attributions)])
    for r, a in enumerate(attributions, start=1):
        toks = [("│ " if s == 1 and (i == 0 or a.segments[i - 1] == 0) else "") + t
                for i, (t, s) in enumerate(zip(a.tokens, a.segments))]
        fig.add_trace(go.Heatmap(
            z=[list(a.scores)], x=list(range(len(toks))), y=[name_or(names, r)],
            text=[toks], texttemplate="%{text}", textfont=dict(size=12),
            colorscale=SALIENCY_SCALE, zmid=0, zmin=-zmax, zmax=zmax, showscale=r == 1,
            colorbar=dict(title="score"),
            hovertemplate="%{text}<br>score %{z:.4f}<extra></extra>"), row=r, col=1)
        fig.update_xaxes(showticklabels=False, row=r, col=1)
        fig.update_yaxes(showticklabels=False, row=r, col=1)
    fig.update_layout(height=130 * n + 60, margin=dict(l=10, r=10, t=50, b=10))
    return fig


def name_or(names: Sequence[str], row: int) -> str:
    return names[row - 1] if row - 1 < len(names) else str(row)


def confusion_figure(cm: np.ndarray, labels: Sequence[str] | None = None, title: str = "") -> go.Figure:
    """Counts with rows = gold class, columns = predicted class."""
    cm = np.asarray(cm)
    labels = list(labels) if labels is not None else [str(i) for i in range(cm.shape[0])]
    fig = go.Figure(go.Heatmap(z=cm, x=labels, y=labels, colorscale="Blues", text=cm,
                               texttemplate="%{text}",
                               hovertemplate="gold %{y}<br>predicted %{x}<br>%{z}<extra></extra>"))
    fig.update_xaxes(title="predicted")
    fig.update_yaxes(title="gold", autorange="reversed")
    fig.update_layout(title=title, height=420, margin=dict(l=10, r=10, t=50, b=10))
    return fig


# Ordered classes (sentiment, very negative -> very positive) on a diverging scale whose
# middle stays visible on white; unordered ones on a high-contrast qualitative palette.
ORDINAL_COLORS = {2: ["#c0392b", "#2166ac"], 3: ["#c0392b", "#7f7f7f", "#2166ac"],
                  5: ["#b2182b", "#ef8a62", "#7f7f7f", "#67a9cf", "#2166ac"]}
QUALITATIVE_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                      "#17becf", "#bcbd22", "#7f7f7f"]


def category_colors(categories: Sequence[str], ordinal: bool = False) -> dict[str, str]:
    """A distinct color per category, in the given order: a diverging red -> grey -> blue
    scale when ``ordinal`` (2, 3 or 5 classes), otherwise a qualitative palette."""
    categories = list(dict.fromkeys(str(c) for c in categories))
    if ordinal and len(categories) in ORDINAL_COLORS:
        return dict(zip(categories, ORDINAL_COLORS[len(categories)]))
    return {c: QUALITATIVE_COLORS[i % len(QUALITATIVE_COLORS)] for i, c in enumerate(categories)}


def projection_figure(xy: np.ndarray, color=None, hover: Sequence[str] | None = None, title: str = "",
                      color_label: str = "", categorical: bool = False,
                      colors: dict[str, str] | None = None) -> go.Figure:
    """A 2-D or 3-D scatter; ``color`` is a class per point (``categorical``) or a number.
    ``colors`` maps classes to colors and fixes the legend order (see :func:`category_colors`);
    by default classes are sorted and drawn in the qualitative palette. Every point's
    ``customdata`` is its row index in ``xy`` (what a click on it selects)."""
    xy = np.asarray(xy)
    three_d = xy.shape[1] == 3
    hover = list(hover) if hover is not None else None
    coords = dict(x=xy[:, 0], y=xy[:, 1], **({"z": xy[:, 2]} if three_d else {}))
    scatter = go.Scatter3d if three_d else go.Scattergl
    size = 3 if three_d else 5
    fig = go.Figure()
    if color is not None and categorical:
        color = np.asarray(color).astype(str)
        present = set(color)
        colors = colors or category_colors(sorted(present))
        for value in [c for c in colors if c in present] + sorted(present - set(colors)):
            m = color == value
            fig.add_trace(scatter(**{k: v[m] for k, v in coords.items()}, mode="markers", name=f"{value}",
                                  marker=dict(size=size, opacity=0.75, color=colors.get(value, "#333333")),
                                  customdata=np.nonzero(m)[0],      # the point's index in the sample
                                  text=[hover[i] for i in np.nonzero(m)[0]] if hover else None,
                                  hovertemplate="%{text}<extra>" + f"{color_label}={value}</extra>"))
    else:
        marker = dict(size=size, opacity=0.8)
        if color is not None:
            marker.update(color=np.asarray(color, dtype=float), colorscale="Viridis", showscale=True,
                          colorbar=dict(title=color_label))
        fig.add_trace(scatter(**coords, mode="markers", marker=marker, text=hover, customdata=np.arange(len(xy)),
                              hovertemplate="%{text}<br>" + (f"{color_label} %{{marker.color:.2f}}"
                                                             if color is not None else "") + "<extra></extra>"))
    fig.update_layout(title=title, height=520, margin=dict(l=10, r=10, t=50, b=10),
                      legend=dict(title=color_label))
    return fig


def residual_figure(df, title: str = "") -> go.Figure:
    """STS: predicted vs gold score, the diagonal is a perfect prediction."""
    fig = go.Figure(go.Scattergl(x=df["label"], y=df["pred"], mode="markers",
                                 marker=dict(size=5, opacity=0.6, color=(df["pred"] - df["label"]).abs(),
                                             colorscale="Reds", showscale=True, colorbar=dict(title="|residual|")),
                                 text=df["sentence1"] + "<br>" + df["sentence2"],
                                 hovertemplate="%{text}<br>gold %{x:.2f} predicted %{y:.2f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[0, 5], y=[0, 5], mode="lines", line=dict(dash="dash", color="gray"),
                             showlegend=False, hoverinfo="skip"))
    fig.update_xaxes(title="gold similarity", range=[-0.1, 5.1])
    fig.update_yaxes(title="predicted", range=[-0.1, 5.1])
    fig.update_layout(title=title, height=420, showlegend=False, margin=dict(l=10, r=10, t=50, b=10))
    return fig


def slice_figure(table, by: str, metric: str, title: str = "") -> go.Figure:
    """Bars of one metric per slice, with the slice size in the hover; error bars when
    the table has ``<metric>_low`` / ``<metric>_high`` (a 95 % interval)."""
    error = None
    if f"{metric}_low" in table and f"{metric}_high" in table:
        error = dict(type="data", symmetric=False, array=(table[f"{metric}_high"] - table[metric]).to_numpy(),
                     arrayminus=(table[metric] - table[f"{metric}_low"]).to_numpy(), color="#444444")
    fig = go.Figure(go.Bar(x=table[by].astype(str), y=table[metric], customdata=table["n"], error_y=error,
                           hovertemplate="%{x}<br>" + metric + " %{y:.3f}<br>n=%{customdata}<extra></extra>"))
    fig.update_layout(title=title, height=320, margin=dict(l=10, r=10, t=50, b=10),
                      xaxis_title=by, yaxis_title=metric)
    return fig


def dev_curve_figure(events: Sequence[dict], title: str = "") -> go.Figure:
    """Dev metrics of a run against its training wall time, from its ``train_log.jsonl``
    events (``start`` and each ``eval``); one line per metric, markers at evaluations.
    Wall time is measured from the run's start and includes the dev evaluations."""
    start = next((e["time"] for e in events if e.get("event") == "start"), None)
    evals = [e for e in events if e.get("event") == "eval"]
    names = {"sst_acc": "SST accuracy", "sst_macro_f1": "SST macro-F1", "qqp_acc": "Quora accuracy*",
             "qqp_f1": "Quora F1*", "sts_pearson": "STS Pearson", "sts_spearman": "STS Spearman"}
    fig = go.Figure()
    for key, label in names.items():
        points = [(e["time"] - start, e[key]) for e in evals if key in e and start is not None]
        if points:
            minutes, values = zip(*[(t / 60, v) for t, v in points])
            fig.add_trace(go.Scatter(x=minutes, y=values, mode="lines+markers", name=label))
    fig.update_layout(title=title, xaxis_title="training wall time (minutes)", yaxis_title="dev metric",
                      height=420, width=820, margin=dict(t=50, b=50, l=60, r=20), template="plotly_white")
    return fig


def difference_figure(table, names: Sequence[str] = ("A", "B"), title: str = "") -> go.Figure:
    """A forest plot of paired differences: one row per (task, metric, slice value) of a
    :func:`analysis.significance.compare_task` table, A - B as a dot with its interval;
    the dashed line at 0 is "no difference". Rows whose interval excludes 0 are dark."""
    labels = [f"{r.task} {r.metric}" + ("" if r.slice == "all" else f" · {r.slice} {r.value}")
              for r in table.itertuples()]
    differs = [not (r.low <= 0 <= r.high) for r in table.itertuples()]
    fig = go.Figure(go.Scatter(
        x=table["diff"], y=labels, mode="markers",
        marker=dict(size=9, color=["#1f3b73" if d else "#9aa5b1" for d in differs]),
        error_x=dict(type="data", symmetric=False, array=table["high"] - table["diff"],
                     arrayminus=table["diff"] - table["low"], color="#555555"),
        customdata=np.stack([table["low"], table["high"], table["n"]], axis=1),
        hovertemplate="%{y}<br>A − B %{x:+.3f} [%{customdata[0]:+.3f}, %{customdata[1]:+.3f}]"
                      "<br>n=%{customdata[2]}<extra></extra>"))
    fig.add_shape(type="line", xref="x", yref="y domain", x0=0, x1=0, y0=0, y1=1,
                  line=dict(color="crimson", dash="dash", width=1))
    fig.update_yaxes(autorange="reversed", title="")
    lo, hi = min(0.0, float(np.nanmin(table["low"]))), max(0.0, float(np.nanmax(table["high"])))
    pad = 0.06 * (hi - lo or 1.0)
    fig.update_xaxes(title=f"{names[0]} − {names[1]} (95 % paired-bootstrap interval)",
                     range=[lo - pad, hi + pad])          # 0 ("no difference") always in view
    fig.update_layout(title=title, height=max(260, 26 * len(labels) + 110), showlegend=False,
                      margin=dict(l=10, r=10, t=50, b=40))
    return fig


def reliability_figure(reports: dict, title: str = "") -> go.Figure:
    """Reliability diagram of one or more checkpoints (``{name: calibration_report}``,
    analysis/calibration.py): observed frequency against mean confidence per bin (the
    dashed diagonal is perfect calibration), and each bin's number of examples below."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28], vertical_spacing=0.06)
    for i, (name, report) in enumerate(reports.items()):
        bins = report["bins"]
        full = bins[bins["n"] > 0]
        color = QUALITATIVE_COLORS[i % len(QUALITATIVE_COLORS)]
        fig.add_trace(go.Scatter(x=full["confidence"], y=full["accuracy"], mode="lines+markers", name=name,
                                 line=dict(color=color), customdata=full[["n", "lo", "hi"]].to_numpy(),
                                 hovertemplate="bin (%{customdata[1]:.1f}, %{customdata[2]:.1f}]<br>confidence "
                                               "%{x:.3f}<br>observed %{y:.3f}<br>n=%{customdata[0]}<extra>"
                                               + name + "</extra>"), row=1, col=1)
        fig.add_trace(go.Bar(x=(bins["lo"] + bins["hi"]) / 2, y=bins["n"], name=f"{name} (n per bin)",
                             marker=dict(color=color), opacity=0.7, showlegend=False,
                             hovertemplate="%{y} examples<extra>" + name + "</extra>"), row=2, col=1)
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dash", color="gray"),
                             name="perfect calibration", hoverinfo="skip"), row=1, col=1)
    fig.update_xaxes(range=[0, 1], row=1, col=1)
    fig.update_xaxes(range=[0, 1], title="confidence (mean per bin)", row=2, col=1)
    fig.update_yaxes(range=[0, 1.02], title="observed frequency", row=1, col=1)
    fig.update_yaxes(title="examples", row=2, col=1)
    fig.update_layout(title=title, height=520, barmode="group", margin=dict(l=10, r=10, t=50, b=40),
                      legend=dict(orientation="h", y=-0.18))
    return fig

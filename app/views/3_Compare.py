"""Compare: every checkpoint's dev metrics, recipe and training time; two side by side."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from analysis.compare import (METRIC_COLUMNS, checkpoint_dirs, checkpoint_table, history_long,
                              metrics_long, qqp_precision_recall)
from analysis.mistakes import confusion
from analysis.predictions import DISAGREE, agreement, disagreements, load_predictions, name_sentiment
from app.analysis_common import run_safely
from app.common import (QUORA_CAPTION, ROOT, STUDY_PLAN, checkpoints_root, fmt_duration, page_setup, study_plan,
                        study_texts)
from core.data import TASK_LABELS
from core.errors import MinbertError
from core.study import check_run, read_results

page_setup("Compare", ":material/compare_arrows:")
st.title(":material/compare_arrows: Compare checkpoints")
root = checkpoints_root()


def _signature(root: Path) -> tuple:
    """Changes whenever a checkpoint's metrics or predictions change (cache key)."""
    sig = []
    for d in checkpoint_dirs(root):
        for f in [d / "metrics.json", *sorted((d / "predictions").glob("*-dev.csv"))]:
            if f.is_file():
                sig.append((str(f), f.stat().st_mtime_ns))
    return tuple(sig)


@st.cache_data(show_spinner="Reading checkpoints…", max_entries=8)
def table_for(root: str, signature: tuple) -> pd.DataFrame:
    return checkpoint_table(root)


def shown_path(path: str) -> str:
    """A checkpoint's path as a command line in this checkout would name it."""
    try:
        return Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return path


@st.cache_data(show_spinner=False, max_entries=64)
def study_check(path: str, plan_text: str, results_text: str, signature: tuple) -> dict | None:
    """core.study's reproduction check of one checkpoint against the study row trained with
    the same settings (None when no row was: only the seed may differ). Cached by the
    plan's and the results' content and the checkpoints' signature."""
    plan = study_plan(plan_text)
    try:
        check = check_run(plan, read_results(plan.out / "results.jsonl"), path)
    except MinbertError:
        return None
    return None if check["config_differences"] else check


@st.cache_data(show_spinner=False, max_entries=32)
def predictions_for(path: str, task: str, signature: tuple) -> pd.DataFrame | None:
    return load_predictions(path, task, missing_ok=True)


signature = _signature(root)
table = table_for(str(root), signature)
if table.empty:
    st.info(f"No checkpoint with dev metrics under `{root}` yet. Train one on the Train page "
            "(or `python -m core.evaluate CHECKPOINT` writes dev predictions for an existing one).")
    st.stop()

# ---------------------------------------------------------------- all of them
st.subheader("All checkpoints (dev sets)")
shown = table[["name", *METRIC_COLUMNS, "train_time_s", "steps", "best_epoch", "recipe", "frozen_encoder",
               "device", "finished", "weights", "tasks"]].copy()
shown["train_time"] = shown.pop("train_time_s").map(lambda s: fmt_duration(s) if pd.notna(s) else "–")
fmt = {c: st.column_config.NumberColumn(c, format="%.3f") for c in METRIC_COLUMNS}
fmt["weights"] = st.column_config.CheckboxColumn(
    "weights here", help="Its model.safetensors is in this checkout. Runs without (the study's results-only runs) "
                         "show their metrics, predictions and embedding sample; Predict, attention and saliency "
                         "need the weights.")
st.dataframe(shown, hide_index=True, width="stretch", column_config=fmt)
st.caption(QUORA_CAPTION + " Mean score = mean of SST accuracy, Quora accuracy and STS Pearson over the "
           "tasks a checkpoint was trained on. Dev sets may be subsets for quick runs (data.eval_limit). "
           f"{int((~table['weights'].astype(bool)).sum())} of {len(table)} have no weights here (results-only): "
           "Predict, attention and saliency need the weights.")

long = metrics_long(table)
if not long.empty:
    c1, c2 = st.columns([3, 1])
    with c1:
        fig = px.bar(long, x="metric", y="value", color="name", barmode="group", height=340,
                     title="Dev metrics")
        fig.update_layout(margin=dict(t=40, b=10), legend_title_text="")
        st.plotly_chart(fig, width="stretch")
        st.caption(QUORA_CAPTION)
    with c2:
        times = table.dropna(subset=["train_time_s"])
        if not times.empty:
            fig = px.bar(times, x="name", y="train_time_s", height=340, title="Training time (s)")
            fig.update_layout(margin=dict(t=40, b=10), xaxis_title="", yaxis_title="seconds")
            st.plotly_chart(fig, width="stretch")

with st.expander("Recipes (the config each checkpoint was trained with)"):
    pick = st.selectbox("Checkpoint", table["name"], key="recipe_pick")
    record = table.set_index("name").loc[pick]
    if record["description"]:
        st.caption(record["description"])
    texts = run_safely(study_texts, what=str(STUDY_PLAN.relative_to(ROOT)))
    check = texts and study_check(str(record["path"]), *texts, signature)
    if check:
        if check["seed_of_row"] is not None:
            st.markdown(f"**Study row `{check['row']}`**, seed {check['seed_of_row']}: this checkpoint is one of the "
                        "row's own runs (the row's mean and sd include it).")
        else:
            verdict = {True: "reproduces it", False: "does **not** reproduce it",
                       None: "cannot be judged yet (the row has one seed: no sd)"}[check["reproduces"]]
            st.markdown(f"**Study row `{check['row']}`** was trained with these settings (seed aside): "
                        f"this checkpoint {verdict}.")
        st.dataframe(pd.DataFrame([{"metric": f["name"], "this checkpoint": f["value"],
                                    "row mean": f["row_mean"], "row sd": f["row_sd"], "seeds": f["seeds"],
                                    "within 2 sd": {True: "yes", False: "no", None: "–"}[f["within"]]}
                                   for f in check["figures"]]),
                     hide_index=True, width="stretch",
                     column_config={c: st.column_config.NumberColumn(c, format="%.3f")
                                    for c in ("this checkpoint", "row mean", "row sd")})
        st.caption(f"Within = |value − row mean| < 2 sd of the row's seeds, the reproduction study's rule (no "
                   f"verdict for one of the row's own runs). `python -m core.study "
                   f"{STUDY_PLAN.relative_to(ROOT)} --check {shown_path(record['path'])}` prints the same. " + QUORA_CAPTION)
    st.code(json.dumps(record["config"], indent=2), language="json")
    hist = history_long(record.to_dict())
    if not hist.empty and hist["epoch"].nunique() > 1:
        st.plotly_chart(px.line(hist, x="epoch", y="value", color="metric", markers=True, height=300,
                                title=f"{pick}: dev metrics per epoch"), width="stretch")

# ---------------------------------------------------------------- two of them
st.subheader("Two checkpoints side by side")
names = list(table["name"])
if len(names) < 2:
    st.info("Only one checkpoint so far: train another to compare two.")
    st.stop()
c1, c2 = st.columns(2)
a = c1.selectbox("Checkpoint A", names, index=0, key="cmp_a")
b = c2.selectbox("Checkpoint B", names, index=1, key="cmp_b")
if a == b:
    st.warning("Pick two different checkpoints.")
    st.stop()
paths = table.set_index("name")["path"]
preds = {(n, t): predictions_for(paths[n], t, signature) for n in (a, b) for t in ("sst", "qqp", "sts")}

sst_tab, sts_tab, qqp_tab, diff_tab = st.tabs(["SST confusion", "STS predicted vs gold", "Quora precision/recall",
                                                "Where they disagree"])
with sst_tab:
    cols = st.columns(2)
    for col, n in zip(cols, (a, b)):
        df = preds[(n, "sst")]
        with col:
            if df is None or "label" not in df:
                st.info(f"{n} has no SST dev predictions.")
                continue
            cm = confusion(df)
            acc = np.trace(cm) / max(cm.sum(), 1)
            labels = TASK_LABELS["sst"]
            fig = px.imshow(cm, x=labels, y=labels, text_auto=True, color_continuous_scale="Blues", height=380,
                            labels=dict(x="predicted", y="gold", color="count"),
                            title=f"{n}: accuracy {acc:.3f} on {cm.sum()} sentences")
            fig.update_layout(margin=dict(t=40, b=10), coloraxis_showscale=False)
            st.plotly_chart(fig, width="stretch", key=f"cm:{n}")

with sts_tab:
    frames = []
    for n in (a, b):
        df = preds[(n, "sts")]
        if df is not None and "label" in df:
            frames.append(df[["id", "label", "pred"]].assign(checkpoint=n))
    if not frames:
        st.info("Neither checkpoint has STS dev predictions.")
    else:
        both = pd.concat(frames)
        fig = px.scatter(both, x="label", y="pred", color="checkpoint", opacity=0.5, height=420,
                         labels=dict(label="gold similarity", pred="predicted similarity"),
                         title="STS dev: predicted vs gold (the diagonal is perfect)")
        fig.add_trace(go.Scatter(x=[0, 5], y=[0, 5], mode="lines", line=dict(dash="dash", color="gray"),
                                 name="y = x"))
        fig.update_layout(margin=dict(t=40, b=10))
        st.plotly_chart(fig, width="stretch")

with qqp_tab:
    curves, points = [], []
    for n in (a, b):
        df = preds[(n, "qqp")]
        if df is not None and "label" in df:
            curve, point = qqp_precision_recall(df)
            curves.append(curve.assign(checkpoint=n))
            points.append({"checkpoint": n, **point})
    if not curves:
        st.info("Neither checkpoint has Quora dev predictions.")
    else:
        c1, c2 = st.columns([2, 1])
        with c1:
            fig = px.line(pd.concat(curves), x="recall", y="precision", color="checkpoint", markers=True,
                          hover_data=["threshold", "f1"], height=400,
                          title="Quora dev: precision vs recall over decision thresholds")
            fig.update_layout(margin=dict(t=40, b=10), xaxis_range=[0, 1.02], yaxis_range=[0, 1.02])
            st.plotly_chart(fig, width="stretch")
        with c2:
            st.markdown("At threshold 0.5")
            st.dataframe(pd.DataFrame(points).round(3), hide_index=True, width="stretch")
        st.caption(QUORA_CAPTION)

with diff_tab:
    task = st.radio("Task", ["sst", "qqp", "sts"], horizontal=True, key="diff_task",
                    format_func={"sst": "Sentiment", "qqp": "Quora paraphrase", "sts": "STS similarity"}.get)
    da, db = preds[(a, task)], preds[(b, task)]
    if da is None or db is None:
        st.info(f"Both checkpoints need {task} dev predictions to compare examples.")
    else:
        stats = agreement(da, db, task)
        st.markdown(f"**{stats['disagree']:,}** of {stats['shared']:,} shared dev examples disagree: "
                    f"{DISAGREE[task]} (agreement {stats['agree_rate']:.1%}; the Errors page uses the same rule).")
        diff = disagreements(da, db, task, names=(a, b))
        if task == "sst":
            diff = name_sentiment(diff, (f"pred_{a}", f"pred_{b}", "label"))
        st.dataframe(diff.drop(columns=["id"]).head(500), hide_index=True, width="stretch")
        if task == "qqp":
            st.caption(QUORA_CAPTION)

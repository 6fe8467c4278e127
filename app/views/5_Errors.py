"""Errors: where a checkpoint goes wrong on the dev sets, and where two disagree.

Reads the per-example dev predictions that ``python -m core.evaluate`` and the trainer
write (``CHECKPOINT/predictions/{sst,qqp,sts}-dev.csv``, read by analysis/predictions.py).
The tables are computed in analysis/mistakes.py; disagreements follow the one rule of
analysis/predictions.py; select a row to open that example in the saliency view.
"""
from __future__ import annotations


import pandas as pd
import streamlit as st

from analysis import mistakes as M
from analysis import predictions as P
from analysis.plots import confusion_figure, residual_figure, slice_figure
from app.analysis_common import (DATA_DIR, TASK_TITLES, MinbertError, has_weights, load_model, open_in_saliency,
                                 pick_checkpoints, run_safely, weights_missing)
from app.common import checkpoint_tasks, offered_tasks, page_setup, resolve_checkpoint
from core.data import TASK_LABELS

page_setup("Errors", ":material/bug_report:")
st.title(":material/bug_report: Errors")
st.caption("Confusions, the most confident mistakes, largest residuals, per-slice metrics, and the "
           "disagreements of two checkpoints on the dev sets. Select a row to inspect it in the saliency view.")

names = pick_checkpoints("er_ckpts", label="Checkpoint (a second one adds a disagreement table)")
tasks = offered_tasks(names)
if st.session_state.get("er_task") not in tasks:
    st.session_state.pop("er_task", None)
task = st.selectbox("Task", tasks, format_func=TASK_TITLES.get, key="er_task")
if not names:
    st.info("Pick a checkpoint.")
    st.stop()


def _stamp(name: str, task: str) -> float:
    try:
        path = P.predictions_path(resolve_checkpoint(name), task)
    except MinbertError:
        return 0.0
    return path.stat().st_mtime if path.is_file() else 0.0


@st.cache_data(max_entries=32, show_spinner=False)
def predictions(name: str, task: str, stamp: float):
    return M.add_slices(P.load_predictions(resolve_checkpoint(name), task), task)


def compute_predictions(name: str, task: str) -> bool:
    from core.evaluate import evaluate_model, write_predictions
    model = load_model(name)
    with st.spinner(f"Predicting the {task} dev set with {name}…"):
        _, frames = evaluate_model(model, tasks=[task], data_dir=DATA_DIR)
    write_predictions(frames, P.predictions_path(resolve_checkpoint(name), task).parent, "dev")
    return True


frames = {}
for name in names:
    df = run_safely(predictions, name, task, _stamp(name, task), what=name)
    if df is None:
        if task not in checkpoint_tasks(name):
            st.info(f"{name} has no {TASK_TITLES[task].lower()} head.")
            continue
        if not has_weights(name):
            st.info(f"{name}: {weights_missing(name)}, so its {TASK_TITLES[task].lower()} dev predictions "
                    "cannot be computed here.")
            continue
        if st.button(f"Compute {TASK_TITLES[task].lower()} dev predictions for {name}", key=f"er_compute_{name}"):
            if run_safely(compute_predictions, name, task, what=name):
                st.rerun()
        continue
    frames[name] = df
if not frames:
    st.stop()

name = next(iter(frames))
df = frames[name]
metrics = M.frame_metrics(df, task)
cols = st.columns(len(metrics) + 1)
cols[0].metric("examples", f"{len(df):,}")
for col, (k, v) in zip(cols[1:], metrics.items()):
    col.metric(k, f"{v:.3f}")


def pick_table(table, key: str, columns: list[str]) -> None:
    """A selectable table; a selected row can be opened in the saliency view."""
    shown = table[[c for c in columns if c in table.columns]]
    if task == "sst":   # class names, not indices
        shown = P.name_sentiment(shown, ("label", "pred"))
    # the texts get the room (wrapped on hover); labels and scores stay narrow
    config = {c: (st.column_config.TextColumn(c, width="medium") if c in ("sentence", "sentence1", "sentence2")
                  else st.column_config.NumberColumn(c, width="small", format="%.2f")
                  if pd.api.types.is_float_dtype(shown[c])
                  else st.column_config.Column(c, width="small")) for c in shown.columns}
    event = st.dataframe(shown, hide_index=True, width="stretch", key=key, on_select="rerun",
                         selection_mode="single-row", column_config=config)
    rows = event.selection.rows if event is not None else []
    if rows:
        row = table.iloc[rows[0]]
        text_a = row["sentence"] if task == "sst" else row["sentence1"]
        text_b = None if task == "sst" else row["sentence2"]
        if st.button("Open the selected example in Attention & saliency", key=f"{key}_open"):
            open_in_saliency(task, text_a, text_b, name)


text_cols = ["sentence"] if task == "sst" else ["sentence1", "sentence2"]
st.subheader(f"{name}: worst predictions")
if task == "sst":
    c1, c2 = st.columns([2, 3])
    c1.plotly_chart(confusion_figure(M.confusion(df), TASK_LABELS["sst"], title="Confusion (dev)"),
                    width="stretch", key="er_confusion")
    with c2:
        st.markdown("**Most confident mistakes**")
        pick_table(M.worst_examples(df, "sst", k=50), "er_sst_mistakes", [*text_cols, "label", "pred", "confidence"])
elif task == "qqp":
    c1, c2 = st.columns(2)
    with c1:
        st.markdown("**False positives** (predicted paraphrase), most confident first")
        pick_table(M.worst_examples(df, "qqp", "fp", k=50), "er_fp", [*text_cols, "prob", "label"])
    with c2:
        st.markdown("**False negatives** (missed paraphrase), most confident first")
        pick_table(M.worst_examples(df, "qqp", "fn", k=50), "er_fn", [*text_cols, "prob", "label"])
else:
    c1, c2 = st.columns([2, 3])
    c1.plotly_chart(residual_figure(df, title="Predicted vs gold"), width="stretch", key="er_residuals")
    with c2:
        st.markdown("**Largest residuals**")
        pick_table(M.worst_examples(df, "sts", k=50), "er_sts_worst", [*text_cols, "label", "pred", "residual"])

st.subheader("Slices")
by = st.selectbox("Slice by", list(M.SLICES[task]), key="er_slice",
                  help="length: words in the input; negation: a negation word (not, no, never, n't, …) present; "
                       "overlap: Jaccard overlap of the two sentences' words; label: the gold label.")
table = M.slice_metrics(df, task, by)
c1, c2 = st.columns([3, 2])
metric = list(metrics)[0]
c1.plotly_chart(slice_figure(table, by, metric, title=f"{metric} per {by} slice"), width="stretch",
                key="er_slice_fig")
c2.dataframe(table, hide_index=True, width="stretch")

if len(frames) == 2:
    other = list(frames)[1]
    st.subheader(f"Disagreements: {name} vs {other}")
    threshold = st.slider("Similarity gap that counts as disagreeing", 0.1, 2.0, P.STS_DISAGREE, 0.1,
                          key="er_gap", help=f"Default: {P.DISAGREE['sts']}, the rule the Compare page uses.") \
        if task == "sts" else P.STS_DISAGREE
    table = run_safely(P.disagreements, frames[name], frames[other], task, names=(name, other),
                       sts_threshold=threshold, what="disagreements")
    if table is not None:
        summary = P.disagreement_summary(table, (name, other))
        cols = st.columns(len(summary))
        for col, (k, v) in zip(cols, summary.items()):
            col.metric(k if k in ("disagreements", "neither", "tie") else f"{k} right", v)
        pick_table(table, "er_disagree", [*text_cols, "label", f"pred_{name}", f"pred_{other}", "right"])

"""Errors: where a checkpoint goes wrong on the dev sets, and where two disagree.

Reads the per-example dev predictions that ``python -m core.evaluate`` and the trainer
write (``CHECKPOINT/predictions/{sst,qqp,sts}-dev.csv``, read by analysis/predictions.py).
The tables are computed in analysis/mistakes.py; disagreements follow the one rule of
analysis/predictions.py; select a row to get links that open that example in Attention
& saliency and Predict (both checkpoints side by side; app/links.py). Slices carry their
size and a 95 % bootstrap interval; with two checkpoints, the paired difference per
slice (analysis/significance.py). Figures download as PNG / SVG, tables as CSV.
"""
from __future__ import annotations


import pandas as pd
import streamlit as st

from analysis import mistakes as M
from analysis import predictions as P
from analysis import significance as S
from analysis.plots import confusion_figure, residual_figure, slice_figure
from app.analysis_common import (DATA_DIR, TASK_TITLES, MinbertError, checkpoint_choices, has_weights, load_model,
                                 pick_checkpoints, run_safely, weights_missing)
from app.common import checkpoint_tasks, offered_tasks, page_setup, resolve_checkpoint
from app.exports import show_figure, show_table
from app.links import example_links, linked_models
from core.tasks import TASK_LABELS

page_setup("Errors", ":material/bug_report:")
st.title(":material/bug_report: Errors")
st.caption("Confusions, the most confident mistakes, largest residuals, per-slice metrics, and the "
           "disagreements of two checkpoints on the dev sets. Select a row to inspect it in the saliency view.")

names = pick_checkpoints("er_ckpts", label="Checkpoint (a second one adds a disagreement table)",
                         preferred=list(linked_models(checkpoint_choices())) or None)
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


@st.cache_data(max_entries=32, show_spinner=False)
def slice_table(name: str, task: str, by: str, stamp: float) -> pd.DataFrame:
    return S.slice_intervals(predictions(name, task, stamp), task, by)


@st.cache_data(max_entries=16, show_spinner=False)
def paired_slices(a: str, b: str, task: str, stamps: tuple) -> pd.DataFrame:
    return S.compare_task(predictions(a, task, stamps[0]), predictions(b, task, stamps[1]), task, names=(a, b))


@st.cache_data(max_entries=32, show_spinner=False)
def metric_intervals(name: str, task: str, stamp: float) -> dict:
    """95 % bootstrap interval of each of the task's metrics over the whole dev set."""
    df = predictions(name, task, stamp)
    kind = float if task == "sts" else int
    y, p = df["label"].to_numpy(kind), df["pred"].to_numpy(kind)
    return {m: S.bootstrap_metric(y, p, m, n_resamples=1000)[1:] for m in M.frame_metrics(df, task)
            if m in S.BATCHED}


def compute_predictions(name: str, task: str) -> bool:
    from core.evaluation.evaluator import evaluate_model, write_predictions
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
intervals = metric_intervals(name, task, _stamp(name, task))
for col, (k, v) in zip(cols[1:], metrics.items()):
    low, high = intervals.get(k, (None, None))
    col.metric(k, f"{v:.3f}", help=None if low is None else
               f"95 % bootstrap interval [{low:.3f}, {high:.3f}] (1,000 resamples of the {len(df):,} dev examples)")


def class_columns(columns) -> list[str]:
    return [c for c in columns if c == "label" or c == "pred" or c.startswith("pred_")]


def pick_table(table, key: str, columns: list[str], name_: str) -> None:
    """A selectable table (classes by name); a selected row gets links to Attention &
    saliency and Predict with the picked checkpoints that have weights."""
    shown = table[[c for c in columns if c in table.columns]]
    shown = P.name_classes(shown, task, class_columns(shown.columns))     # class names, not indices
    # the texts get the room (wrapped on hover); labels and scores stay narrow
    config = {c: (st.column_config.TextColumn(c, width="medium") if c in ("sentence", "sentence1", "sentence2")
                  else st.column_config.NumberColumn(c, width="small", format="%.2f")
                  if pd.api.types.is_float_dtype(shown[c])
                  else st.column_config.Column(c, width="small")) for c in shown.columns}
    event = show_table(shown, name_, key=key, on_select="rerun", selection_mode="single-row", column_config=config)
    rows = event.selection.rows if event is not None else []
    if rows:
        row = table.iloc[rows[0]]
        text_a = row["sentence"] if task == "sst" else row["sentence1"]
        text_b = None if task == "sst" else row["sentence2"]
        with_weights = [n for n in frames if has_weights(n)]
        if not with_weights:
            st.caption("Neither checkpoint has its weights here: the links open the example with the default model.")
        example_links(task, text_a, text_b, with_weights)


text_cols = ["sentence"] if task == "sst" else ["sentence1", "sentence2"]
st.subheader(f"{name}: worst predictions")
if task == "sst":
    c1, c2 = st.columns([2, 3])
    with c1:
        show_figure(confusion_figure(M.confusion(df), TASK_LABELS["sst"], title="Confusion (dev)"),
                    f"confusion-sst-{name}", key="er_confusion")
    with c2:
        st.markdown("**Most confident mistakes**")
        pick_table(M.worst_examples(df, "sst", k=50), "er_sst_mistakes", [*text_cols, "label", "pred", "confidence"],
                   f"mistakes-sst-{name}")
elif task == "qqp":
    c1, c2 = st.columns(2)
    with c1:
        st.markdown("**False positives** (predicted paraphrase), most confident first")
        pick_table(M.worst_examples(df, "qqp", "fp", k=50), "er_fp", [*text_cols, "prob", "label"],
                   f"false-positives-qqp-{name}")
    with c2:
        st.markdown("**False negatives** (missed paraphrase), most confident first")
        pick_table(M.worst_examples(df, "qqp", "fn", k=50), "er_fn", [*text_cols, "prob", "label"],
                   f"false-negatives-qqp-{name}")
else:
    c1, c2 = st.columns([2, 3])
    with c1:
        show_figure(residual_figure(df, title="Predicted vs gold"), f"residuals-sts-{name}", key="er_residuals")
    with c2:
        st.markdown("**Largest residuals**")
        pick_table(M.worst_examples(df, "sts", k=50), "er_sts_worst", [*text_cols, "label", "pred", "residual"],
                   f"residuals-sts-{name}")

st.subheader("Slices")
by = st.selectbox("Slice by", list(M.SLICES[task]), key="er_slice",
                  help="length: words in the input; negation: a negation word (not, no, never, n't, …) present; "
                       "overlap: Jaccard overlap of the two sentences' words; label: the gold label.")
table = slice_table(name, task, by, _stamp(name, task))
metric = S.LABEL_SLICE_METRICS[task][0] if by == "label" else S.TASK_METRICS[task][0]
c1, c2 = st.columns([3, 2])
with c1:
    show_figure(slice_figure(table, by, metric, title=f"{name}: {metric} per {by} slice (95 % interval)"),
                f"slices-{task}-{by}-{name}", key="er_slice_fig")
with c2:
    show_table(table, f"slices-{task}-{by}-{name}", key="er_slice_table",
               column_config={c: st.column_config.NumberColumn(c, format="%.3f") for c in table.columns
                              if c not in (by, "n")})
    st.caption(f"n: the slice's size. {metric}_low / _high: 95 % bootstrap interval (1,000 resamples of the "
               "slice). " + ("A label slice holds one gold label: accuracy only (no macro-F1 / F1)." if by == "label"
                             and task != "sts" else ""))


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
        pick_table(table, "er_disagree", [*text_cols, "label", f"pred_{name}", f"pred_{other}", "right"],
                   f"disagreements-{task}-{name}-vs-{other}")
    st.subheader(f"Per {by} slice: {name} − {other}")
    paired = run_safely(paired_slices, name, other, task, (_stamp(name, task), _stamp(other, task)),
                        what="paired comparison")
    if paired is not None:
        rows = paired[paired["slice"].isin(["all", by])].assign(
            interval=lambda t: [f"[{lo:+.3f}, {hi:+.3f}]" for lo, hi in zip(t["low"], t["high"])])
        shown = rows[["value", "metric", "n", "a", "b", "diff", "interval", "verdict", "p_value"]].rename(
            columns={"value": by, "a": name, "b": other, "diff": "A − B", "p_value": "McNemar p"})
        show_table(shown, f"paired-slices-{task}-{by}", key="er_paired",
                   column_config={c: st.column_config.NumberColumn(c, format="%.3f")
                                  for c in (name, other, "A − B")})
        st.caption(f"A − B with a 95 % paired-bootstrap interval ({S.N_RESAMPLES:,} resamples, the same examples "
                   "for both); 'no difference' when it contains 0; McNemar: exact test on the examples exactly one "
                   "gets right. Each row's interval is 95 % on its own.")

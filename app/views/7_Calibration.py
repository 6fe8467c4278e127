"""Calibration: does a checkpoint's "70 % confident" mean right 70 % of the time?

Reliability diagrams and expected calibration error (ECE, with a 95 % bootstrap
interval) for sentiment (5-way, top-label) and Quora paraphrase (binary), from the stored
dev predictions (analysis/calibration.py): results-only study runs work, nothing is
recomputed. Two checkpoints side by side on one diagram. The Predict page's confidence
links here (``?m1=CHECKPOINT&task=sst``, app/links.py); the figure downloads as PNG / SVG
and the bins as CSV (app/exports.py).
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis import calibration as C
from analysis import predictions as P
from analysis.plots import reliability_figure
from app.analysis_common import TASK_TITLES, checkpoint_choices, has_weights, pick_checkpoints, run_safely
from app.common import page_setup, resolve_checkpoint
from app.exports import show_figure, show_table
from app.links import linked_selection, model_params, show_query

page_setup("Calibration", ":material/tune:")
st.title(":material/tune: Calibration")
st.caption("How far to trust a checkpoint's confidence: per confidence bin, how often it is right. On the "
           "dashed diagonal a model is calibrated; below it, overconfident.")

models, linked_task = linked_selection(checkpoint_choices(), tasks=C.CALIBRATION_TASKS)
if linked_task:
    st.session_state["ca_task"] = linked_task
names = pick_checkpoints("ca_ckpts", label="Checkpoints (two side by side)", preferred=list(models) or None)
c1, c2 = st.columns([2, 1])
task = c1.radio("Task", list(C.CALIBRATION_TASKS), horizontal=True, key="ca_task",
                format_func=lambda t: f"{TASK_TITLES[t]} ({'5-way, top-label' if t == 'sst' else 'binary'})")
n_bins = c2.slider("Bins", 5, 20, C.N_BINS, key="ca_bins", help="Equal-width confidence bins on [0, 1].")
if not names:
    st.info("Pick a checkpoint.")
    st.stop()
show_query(model_params(names, task))


def _content(name: str) -> str:
    """The prediction file's content hash (core/evaluation/cache.py): the cache key of its report."""
    from core.evaluation.cache import file_fingerprint
    path = P.predictions_path(resolve_checkpoint(name), task)
    return file_fingerprint(path) if path.is_file() else ""


@st.cache_data(max_entries=32, show_spinner=False)
def report_for(name: str, task: str, n_bins: int, content: str) -> dict:
    return C.calibration_report(P.load_predictions(resolve_checkpoint(name), task), task, n_bins)


reports = {}
for name in names:
    content = _content(name)
    if not content:
        how = ("`python -m core.evaluate " + name + "` writes them" if has_weights(name)
               else "it is a results-only run without them, and computing them needs the weights")
        st.info(f"**{name}** has no stored {TASK_TITLES[task].lower()} dev predictions: {how}.")
        continue
    report = run_safely(report_for, name, task, int(n_bins), content, what=name)
    if report is not None:
        reports[name] = report
if not reports:
    st.stop()

cols = st.columns(len(reports))
for col, (name, r) in zip(cols, reports.items()):
    with col:
        st.markdown(f"**{name}**")
        m1, m2, m3 = st.columns(3)
        m1.metric("ECE ↓", f"{r['ece']:.3f}", help=f"95 % bootstrap interval [{r['ece_low']:.3f}, {r['ece_high']:.3f}]"
                                                  f" over the {r['n']:,} dev examples")
        m2.metric("MCE ↓", f"{r['mce']:.3f}", help="The largest |observed − confidence| over non-empty bins.")
        m3.metric("examples", f"{r['n']:,}")
        st.caption(f"ECE 95 % interval [{r['ece_low']:.3f}, {r['ece_high']:.3f}]")

title = f"{TASK_TITLES[task]}: reliability ({n_bins} bins)"
show_figure(reliability_figure(reports, title=title), f"reliability-{task}-" + "-vs-".join(reports), key="ca_fig")
bins = pd.concat([r["bins"].assign(checkpoint=name) for name, r in reports.items()], ignore_index=True)
with st.expander("Bins"):
    show_table(bins[["checkpoint", "lo", "hi", "n", "confidence", "accuracy", "gap"]],
               f"reliability-bins-{task}", key="ca_bins_table",
               column_config={c: st.column_config.NumberColumn(c, format="%.3f")
                              for c in ("lo", "hi", "confidence", "accuracy", "gap")})
st.caption(f"Reading: {C.READING[task]}. ECE = Σ (bin size / n) · |observed − mean confidence| (Guo et al. 2017); "
           "bins are right-closed. ECE grows with the number of bins and is biased upward on small sets (its "
           "bootstrap interval can sit above the point value): compare checkpoints on the same dev set and bins.")

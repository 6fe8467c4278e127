"""Behaviour tests: how checkpoints handle controlled edits of a sentence (CheckList style).

Runs the versioned suite in ``data/behaviour/suite.yaml`` (analysis/behaviour.py: MFT,
INV and DIR tests over the three tasks) for up to two checkpoints: pass rate per test
per checkpoint, and every failed case with its inputs; select a failure to open it in
Attention & saliency and Predict with both checkpoints (app/links.py). The same runs
from the command line: ``python -m analysis.behaviour CHECKPOINT ...``. Running needs
the model, so results-only runs are not offered. Results are cached by checkpoint
content and suite content; the chart downloads as PNG / SVG, tables as CSV.
"""
from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from analysis import behaviour as B
from app.analysis_common import (TASK_TITLES, checkpoint_choices, has_weights, load_model, pick_checkpoints,
                                 run_safely, weights_missing)
from app.common import ROOT, checkpoint_key, page_setup
from app.exports import show_figure, show_table
from app.links import example_links, linked_models, model_params, show_query

page_setup("Behaviour tests", ":material/rule:")
st.title(":material/rule: Behaviour tests")


@st.cache_data(max_entries=4, show_spinner=False)
def suite_for(sha256: str) -> B.Suite:
    return B.load_suite(B.SUITE_PATH)


@st.cache_data(max_entries=16, show_spinner=False)
def results_for(name: str, content: str, suite_sha: str) -> list[dict]:
    """The suite's results for one checkpoint, cached by its content and the suite's."""
    return B.run_suite(load_model(name), suite_for(suite_sha))


def suite_now() -> B.Suite:
    import hashlib
    try:
        sha = hashlib.sha256(B.SUITE_PATH.read_bytes()).hexdigest()
    except OSError as e:
        raise B.SuiteError(f"cannot read the behaviour suite {B.SUITE_PATH}: {e.strerror or e}") from None
    return suite_for(sha)


suite = run_safely(suite_now, what="behaviour suite")
if suite is None:
    st.stop()
st.caption(f"Suite **{suite.name}**, version {suite.version} ({len(suite.tests)} tests, "
           f"`{B.SUITE_PATH.relative_to(ROOT)}`, sha256 {suite.sha256[:12]}). MFT: each input must get the expected "
           "label or score; INV: an edit must not change the prediction; DIR: the score must move the expected way "
           "(Ribeiro et al., 2020). Scores: sentiment = expected class 0–4, paraphrase = P(paraphrase), "
           "similarity = 0–5.")

linked = linked_models(checkpoint_choices())
for name in [n for n in linked if not has_weights(n)]:
    st.info(f"**{name}**: {weights_missing(name)}; behaviour tests run the model.", icon=":material/cloud_off:")
names = pick_checkpoints("bt_ckpts", label="Checkpoints (two side by side)", weights_only=True,
                         preferred=[n for n in linked if has_weights(n)] or None)
if not names:
    st.info("Pick a checkpoint.")
    st.stop()
show_query(model_params(names))

results = {}
for name in names:
    with st.spinner(f"Running {len(suite.tests)} behaviour tests with {name}…"):
        got = run_safely(lambda n: results_for(n, checkpoint_key(n), suite.sha256), name, what=name)
    if got is not None:
        results[name] = got
if not results:
    st.stop()


def rates_figure(summary, names) -> go.Figure:
    fig = go.Figure()
    for name in names:
        fig.add_trace(go.Bar(y=summary["id"], x=summary[name], orientation="h", name=name,
                             customdata=summary["n"], hovertemplate="%{y}<br>pass rate %{x:.0%} of %{customdata} "
                                                                    "cases<extra>" + name + "</extra>"))
    fig.update_xaxes(range=[0, 1], title="pass rate", tickformat=".0%")
    fig.update_yaxes(autorange="reversed", title="")
    fig.update_layout(barmode="group", height=120 + 28 * len(summary) * max(1, len(names)) // 1.6,
                      margin=dict(l=10, r=10, t=40, b=40), title="Pass rate per test",
                      legend=dict(orientation="h", y=-0.12))
    return fig


summary = B.summary_frame(results)
st.subheader("Pass rates")
summary = summary[["id", "task", "kind", "n", *results, "capability", "description"]]   # pass rates in view
show_table(summary, f"behaviour-v{suite.version}-pass-rates", key="bt_summary",
           column_config={**{n: st.column_config.ProgressColumn(n, min_value=0.0, max_value=1.0, format="percent")
                             for n in results},
                          "description": st.column_config.TextColumn("description", width="large")})
skipped = sorted({r["id"] for rs in results.values() for r in rs if r.get("skipped")})
if skipped:
    st.caption(f"Not run (the checkpoint has no head for that task): {', '.join(skipped)}.")
show_figure(rates_figure(summary, list(results)), f"behaviour-v{suite.version}-pass-rates", key="bt_fig")

st.subheader("Failures")
for name, got in results.items():
    fails = B.failures_frame(got)
    st.markdown(f"**{name}**: {len(fails)} failed case(s) of {sum(r['n'] for r in got if not r.get('skipped')):,}")
    if fails.empty:
        continue
    tests = ["every test", *dict.fromkeys(fails["test"])]
    which = st.selectbox("Test", tests, key=f"bt_filter_{name}")
    shown = fails if which == "every test" else fails[fails["test"] == which]
    event = show_table(shown[["test", "kind", "why", "inputs", "scores", "classes"]], f"behaviour-failures-{name}",
                       key=f"bt_fail_{name}", export=shown.drop(columns=["first", "last"]), on_select="rerun",
                       selection_mode="single-row",
                       column_config={"inputs": st.column_config.TextColumn("inputs", width="large")})
    rows = event.selection.rows if event is not None else []
    if rows:
        row = shown.iloc[rows[0]]
        for label, x in (("original", row["first"]), ("edited", row["last"])) if row["kind"] != "MFT" else \
                (("input", row["first"]),):
            text_a, text_b = (x[0], x[1]) if isinstance(x, tuple) else (x, None)
            st.markdown(f"*{label}* ({TASK_TITLES[row['task']].lower()}): {B._text(x)}")
            example_links(row["task"], text_a, text_b, list(results))

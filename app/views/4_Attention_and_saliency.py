"""Attention & saliency: what one or two checkpoints look at for one input.

Saliency (Integrated Gradients, gradient x input, occlusion) of a task output, and the
encoder's attention (one head, all heads of a layer, rollout). The math is in
analysis/saliency.py and analysis/attention.py; figures in analysis/plots.py.

The page opens the example in its URL (app/links.py: ``?task=&a=&b=&m1=&m2=&view=``,
what the Errors, Embeddings and Behaviour pages link to) and keeps its URL in step with
what it shows, so the address can be shared. Every figure downloads as PNG / SVG and
every table as CSV (app/exports.py).
"""
from __future__ import annotations


import pandas as pd
import streamlit as st

from analysis.attention import attention_maps, attention_rollout
from analysis.plots import attention_grid, attention_heatmap, saliency_figure
from analysis.saliency import attribute
from app.analysis_common import (EXAMPLE_KEY, TASK_TITLES, checkpoint_choices, has_weights, load_model,
                                 pick_checkpoints, run_safely, weights_missing)
from app.common import checkpoint_key, offered_tasks, page_setup
from app.exports import show_figure, show_table
from app.links import LinkError, example_links, example_params, linked_example, show_query
from core.tasks import TASK_LABELS

page_setup("Attention and saliency", ":material/visibility:")
st.title(":material/visibility: Attention & saliency")
st.caption("Which wordpieces drive a prediction, and where the encoder's attention goes. "
           "Pick two checkpoints to see them side by side on the same input.")

METHODS = {"ig": "Integrated Gradients", "grad_x_input": "Gradient × input", "occlusion": "Occlusion"}
DEFAULTS = {"sst": ("A gorgeous, witty, seductive movie.", ""),
            "qqp": ("How do I learn Python quickly?", "What is the fastest way to learn Python?"),
            "sts": ("A man is playing a guitar.", "Someone plays an instrument.")}

# An example opened by a link (app/links.py) or handed over in the session pre-fills the inputs once.
VIEWS = {"saliency": "Saliency", "attention": "Attention"}
preferred: list[str] = []
linked = linked_example(checkpoint_choices(), views=tuple(VIEWS))
example = st.session_state.pop(EXAMPLE_KEY, None)
if linked:
    example = {"task": linked.task, "text_a": linked.text_a, "text_b": linked.text_b, "models": linked.models,
               "view": linked.view}
if example:
    st.session_state["as_task"] = example["task"]
    st.session_state["as_text_a"] = example["text_a"]
    st.session_state["as_text_b"] = example.get("text_b") or ""
    st.session_state["as_prev_task"] = example["task"]
    if example.get("view"):
        st.session_state["as_view"] = VIEWS[example["view"]]
    preferred = list(example.get("models") or ([example["checkpoint"]] if example.get("checkpoint") else []))
    for name in [n for n in preferred if not has_weights(n)]:
        st.info(f"**{name}**: {weights_missing(name)}.", icon=":material/cloud_off:")

names = pick_checkpoints("as_ckpts", preferred=[n for n in preferred if has_weights(n)] or None, weights_only=True)
tasks = offered_tasks(names)
if st.session_state.get("as_task") not in tasks:
    st.session_state.pop("as_task", None)
task = st.selectbox("Task", tasks, format_func=TASK_TITLES.get, key="as_task")
# Switching task swaps in that task's example, unless the user typed their own text.
prev = st.session_state.get("as_prev_task")
untouched = prev in DEFAULTS and (st.session_state.get("as_text_a"),
                                  st.session_state.get("as_text_b", "")) == DEFAULTS[prev]
if "as_text_a" not in st.session_state or (prev != task and untouched):
    st.session_state["as_text_a"], st.session_state["as_text_b"] = DEFAULTS[task]
st.session_state["as_prev_task"] = task
c1, c2 = st.columns(2)
text_a = c1.text_input("Sentence" if task == "sst" else "First sentence", key="as_text_a")
text_b = c2.text_input("Second sentence", key="as_text_b") if task != "sst" else None
view = st.radio("View", ["Saliency", "Attention"], horizontal=True, key="as_view")

if not names:
    st.info("Pick at least one checkpoint.")
    st.stop()
for name in [n for n in names if not has_weights(n)]:   # results-only runs: nothing to run here
    st.info(f"**{name}**: {weights_missing(name)}.", icon=":material/cloud_off:")
names = [n for n in names if has_weights(n)]
if not names:
    st.stop()
try:   # the address bar always links to what this page shows
    show_query(example_params(task, text_a, text_b or None, names, view.lower(), views=tuple(VIEWS)))
except LinkError:
    pass   # a text that cannot be shown (empty, too long) is reported below, by the model call


# Keyed by the checkpoint's content (``content``), not only its name: a checkpoint
# retrained under the same name gets new results.
@st.cache_data(max_entries=64, show_spinner=False)
def saliency_for(name: str, content: str, task: str, text_a: str, text_b: str | None, target: int | None,
                 method: str, n_steps: int, baseline: str, words: bool):
    return attribute(load_model(name), task, text_a, text_b, target=target, method=method, n_steps=n_steps,
                     baseline=baseline, words=words)


@st.cache_data(max_entries=64, show_spinner=False)
def attention_for(name: str, content: str, text_a: str, text_b: str | None):
    return attention_maps(load_model(name), text_a, text_b)


if view == "Saliency":
    c1, c2, c3, c4 = st.columns(4)
    method = c1.selectbox("Method", list(METHODS), format_func=METHODS.get, key="as_method")
    n_steps = c2.slider("IG steps", 10, 200, 50, step=10, key="as_steps", disabled=method != "ig")
    baseline = c3.selectbox("Baseline", ["mask", "pad"], key="as_baseline",
                            format_func=lambda b: f"[{b.upper()}] for every wordpiece",
                            help="IG integrates from this input; occlusion replaces one token with it. "
                                 "[CLS] and [SEP] are kept.")
    words = c4.checkbox("Merge wordpieces into words", key="as_words")
    target = None
    if task == "sst":
        choice = st.selectbox("Explain the probability of", ["predicted class", *TASK_LABELS["sst"]],
                              key="as_target")
        target = None if choice == "predicted class" else TASK_LABELS["sst"].index(choice)
    results, shown = [], []
    with st.spinner("Attributing…"):
        for name in names:
            a = run_safely(lambda n: saliency_for(n, checkpoint_key(n), task, text_a, text_b or None, target,
                                                  method, n_steps, baseline, words), name, what=name)
            if a is not None:
                results.append(a)
                shown.append(name)
    if results:
        show_figure(saliency_figure(results, shown), f"saliency-{method}-{task}", key="as_saliency_fig")
        st.caption("Blue raises the explained output, red lowers it; all rows share one color scale. "
                   "For bi-encoder heads both sentences are encoded separately: the second sentence's tokens "
                   "follow the bar `│`.")
        rows = [{"checkpoint": n, "head": a.head_mode, "explains": a.output_name, "f(input)": a.prediction,
                 "f(baseline)": a.baseline_output, "sum of scores": float(a.scores.sum()),
                 "IG delta": a.delta} for n, a in zip(shown, results)]
        show_table(pd.DataFrame(rows), f"saliency-{method}-{task}-summary", key="as_saliency_table")
        if method == "ig":
            st.caption("Completeness: sum of scores = f(input) − f(baseline) + delta; a small |delta| means "
                       "enough integration steps.")
        with st.expander("Scores per token"):
            cols = st.columns(len(results))
            for col, name, a in zip(cols, shown, results):
                with col:
                    st.markdown(f"**{name}**")
                    show_table(a.table(), f"saliency-{method}-{name}-tokens", key=f"as_tokens_{name}")
else:
    results, shown = [], []
    for name in names:
        r = run_safely(lambda n: attention_for(n, checkpoint_key(n), text_a, text_b or None), name, what=name)
        if r is not None:
            results.append(r)
            shown.append(name)
    if results:
        n_layers, n_heads = results[0][1].shape[:2]
        c1, c2, c3 = st.columns(3)
        mode = c1.radio("Show", ["One head", "All heads of a layer", "Rollout"], key="as_att_mode")
        layer = c2.slider("Layer", 0, n_layers - 1, n_layers - 1, key="as_layer")
        head = c3.slider("Head", 0, n_heads - 1, 0, key="as_head", disabled=mode != "One head")
        cols = st.columns(len(results))
        for i, (col, name, (tokens, maps)) in enumerate(zip(cols, shown, results)):
            with col:
                if mode == "One head":
                    fig = attention_heatmap(tokens, maps[layer, head], title=f"{name}: layer {layer}, head {head}")
                elif mode == "All heads of a layer":
                    fig = attention_grid(tokens, maps[layer], cols=3, title=f"{name}: layer {layer}")
                else:
                    fig = attention_heatmap(tokens, attention_rollout(maps)[layer], zmax=None,
                                            title=f"{name}: rollout through layer {layer}")
                show_figure(fig, f"attention-{name}-{mode.replace(' ', '-')}-layer{layer}", key=f"as_att_fig_{i}")
        st.caption("Rows attend to columns. A pair is shown as the joint input `[CLS] a [SEP] b [SEP]` (dotted "
                   "line after the first [SEP]); a bi-encoder reads each sentence alone. Rollout (Abnar & "
                   "Zuidema, 2020) multiplies head-averaged attention plus the residual through the layers.")

with st.expander("Open this example in Predict"):
    example_links(task, text_a, text_b or None, names, pages=("predict",))

"""Embeddings: the geometry of a checkpoint's sentence embeddings on a dev sample.

UMAP (or PCA) pictures colored by label, score or error, side by side for up to four
checkpoints, with alignment / uniformity (Wang & Isola, 2020), kNN label purity and
the STS Spearman of cosine similarity beside them. Embeddings and projections are cached
on disk per checkpoint content hash, sample, method and seed (analysis/geometry.py).
The reproduction study's training objectives (plain, triplet, SimCSE, MNRL: the plan's
``geometry`` entries) can be put side by side in one click, with their geometry numbers
over seeds (core/experiments/study.py).

The first UMAP of a server process loads umap-learn and compiles its layout kernel (about
a minute on 2 CPU cores): the page starts that in the background when it opens, says so
while it lasts, and shows each checkpoint's progress (PCA is instant). Controls that do
not apply are disabled (the seed for PCA; sample size, seed and 3-D for results-only
runs, which show the sample they kept). Click a point (2-D) to open its sentence in
Attention & saliency and Predict with the picked checkpoints (app/links.py), with its
nearest neighbours in the sample; pictures download as PNG / SVG (app/exports.py).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from analysis.checkpoints import EMBEDDINGS_FILE, checkpoints_root
from analysis.geometry import (embed_sample, geometry_report, nearest_neighbours, sample_projection, stored_view,
                               umap_state, warm_umap_in_background)
from analysis.plots import category_colors, projection_figure
from app.analysis_common import (DATA_DIR, TASK_TITLES, checkpoint_choices, has_weights, load_model,
                                 pick_checkpoints, run_safely)
from app.common import ROOT, STUDY_PLAN, page_setup, resolve_checkpoint, study_plan, study_texts
from app.exports import show_figure, show_table
from app.links import example_links, linked_models
from core.data.datasets import texts_for_ids
from core.tasks import TASK_LABELS
from core.experiments.study import GEOMETRY_NOTE, geometry_rows, read_results

page_setup("Embeddings", ":material/scatter_plot:")
st.title(":material/scatter_plot: Embeddings")
st.caption("Sentence embeddings (the checkpoint's own pooling) of a seeded dev sample, projected to 2-D or 3-D. "
           "Pick checkpoints trained with different objectives to compare their geometry.")


@st.cache_data(show_spinner=False, max_entries=4)
def study_objectives(plan_text: str, results_text: str, root: str) -> tuple[list[dict], dict[str, str]]:
    """The plan's geometry comparison (cached by the plan's and the results' content and
    the checkpoints folder the names are relative to) and, per objective label, the
    checkpoint name of its lowest finished seed."""
    plan = study_plan(plan_text)
    results = read_results(plan.out / "results.jsonl")
    try:
        prefix = plan.out.resolve().relative_to(Path(root).resolve()).as_posix() + "/"
    except ValueError:      # the checkpoints folder is elsewhere (MINBERT_CHECKPOINTS): no runs to pick
        return geometry_rows(plan, results), {}
    runs = {}
    for entry in plan.geometry:
        seeds = sorted(r["seed"] for r in results if r["row"] == entry.row)
        if seeds:
            runs[entry.label] = f"{prefix}{entry.row}-s{seeds[0]}"
    return geometry_rows(plan, results), runs


def objectives_now():
    texts = study_texts()
    return None if texts is None else study_objectives(*texts, str(checkpoints_root()))


objectives = run_safely(objectives_now, what=str(STUDY_PLAN.relative_to(ROOT)))
if objectives:
    table, objective_runs = objectives
    with st.expander("Training objectives compared: plain, triplet (001), SimCSE (003), MNRL (004)", expanded=True):
        st.caption("From the reproduction study (`configs/study.yaml`, `geometry:`); Δ is against the study row "
                   "that differs only by that objective. " + GEOMETRY_NOTE)
        st.dataframe(table, hide_index=True, width="stretch")
        st.button(f"Show {', '.join(objective_runs) or 'them'} side by side (lowest finished seed)",
                  key="em_objectives", disabled=not objective_runs,
                  on_click=lambda: st.session_state.update(em_ckpts=list(objective_runs.values())))
        missing = [row["objective"] for row in table if row["objective"] not in objective_runs]
        if missing:
            st.caption(f"Not run yet: {', '.join(missing)} (`python -m core.study configs/study.yaml`).")

warm_umap_in_background()   # the first UMAP of this server then does not also pay umap-learn's start-up
names = pick_checkpoints("em_ckpts", label="Checkpoints (up to four, side by side)", max_selections=4,
                         preferred=list(linked_models(checkpoint_choices())) or None)
stored_only = bool(names) and not any(has_weights(n) for n in names)
if stored_only:
    st.session_state["em_dims"] = 2      # a results-only run kept 2-D projections only
c1, c2, c3, c4, c5 = st.columns(5)
task = c1.selectbox("Sample from the dev set of", list(TASK_TITLES), format_func=TASK_TITLES.get, key="em_task")
n = c2.number_input("Sample size", min_value=20, max_value=2000, value=500, step=50, key="em_n", disabled=stored_only,
                    help="Sentences embedded per checkpoint. Results-only runs show the sample they kept.")
method = c3.radio("Projection", ["umap", "pca"], format_func=str.upper, horizontal=True, key="em_method",
                  help="UMAP: cosine neighbours, seconds once warm. PCA: instant and deterministic.")
dims = c4.radio("Dimensions", [2, 3], horizontal=True, key="em_dims", disabled=stored_only,
                help="Results-only runs kept 2-D projections. Clicking a point works in 2-D.")
seed = c5.number_input("Seed", min_value=0, max_value=10_000, value=0, key="em_seed",
                       disabled=method == "pca" or stored_only,
                       help="UMAP's random seed. PCA has none (deterministic); results-only runs kept seed 0.")
color_options = {"sst": ["label", "error"], "qqp": ["label", "error"], "sts": ["similarity score", "error"]}[task]
color_by = st.radio("Color by", color_options, horizontal=True, key="em_color")
if not names:
    st.info("Pick at least one checkpoint.")
    st.stop()
if method == "umap" and not stored_only and umap_state() != "warm":
    st.info("The first UMAP on this server loads umap-learn and compiles its layout kernel: about a minute on "
            "2 CPU cores (it started in the background when this page opened). Later ones take seconds; PCA is "
            "instant.", icon=":material/hourglass_top:")


def view(name: str, progress):
    """(sample, projection, numbers) of one checkpoint; ``progress(fraction, text)`` says what runs."""
    if not has_weights(name):   # a results-only run: the sample its embeddings.json kept
        return stored_view(Path(resolve_checkpoint(name)) / EMBEDDINGS_FILE, task, method, int(dims))
    progress(0.05, f"Loading {name}…")
    model = load_model(name)
    progress(0.25, f"Embedding {int(n):,} {TASK_TITLES[task].lower()} dev sentences with {name}…")
    sample = embed_sample(model, task, n=int(n), seed=0, data_dir=DATA_DIR)
    progress(0.55, f"{method.upper()} of {len(sample):,} points" + (
        " (waiting for umap-learn to load: first UMAP of this server)…" if method == "umap"
        and umap_state() != "warm" else "…"))
    xy = sample_projection(sample, method, int(dims), int(seed))
    progress(0.8, f"Geometry numbers of {name} (STS and SST samples)…")
    report = geometry_report(model, n=int(n), seed=0, data_dir=DATA_DIR)
    return sample, xy, report


def selected_index(event) -> int | None:
    """The sample index of the clicked point (its customdata), if any."""
    points = getattr(getattr(event, "selection", None), "points", None) or []
    if not points:
        return None
    data = points[0].get("customdata")
    data = data[0] if isinstance(data, (list, tuple)) else data
    return None if data is None else int(data)


def open_links(sample, index: int, name: str) -> None:
    """The clicked sentence (a pair's both sentences), with links to Attention & saliency and
    Predict, and its nearest neighbours in this checkpoint's sample (cosine of its embeddings)."""
    text_a, text_b = texts_for_ids(task, [sample.ids[index]], "dev", "the embedding sample")[0]
    st.markdown(f"**Selected:** {text_a}" + (f"  \n**and:** {text_b}" if text_b else ""))
    with_weights = [m for m in names if has_weights(m)][:2]
    example_links(task, text_a, text_b if task != "sst" else None, with_weights)
    emb = getattr(sample, "emb_a", None)
    if emb is None:
        st.caption("Neighbours need the embeddings: a results-only run kept only its projection.")
        return
    idx, sims = nearest_neighbours(emb, index, k=5)
    neighbours = pd.DataFrame({"sentence": [sample.texts_a[i] for i in idx], "cosine": sims})
    st.caption(f"Nearest neighbours of the selected sentence among the {len(sample)} sampled (cosine of "
               f"{name}'s embeddings):")
    show_table(neighbours, f"neighbours-{task}-{name}", key=f"em_nn_{name}",
               column_config={"cosine": st.column_config.NumberColumn("cosine", format="%.3f")})


def colors(sample):
    """(values, legend title, categorical?, class -> color or None) for the chosen coloring."""
    if color_by == "error":
        if sample.errors is None:
            return None, "", False, None
        if task == "sts":
            return sample.errors, "|error|", False, None
        return (np.where(sample.errors == 1, "wrong", "right"), "prediction", True,
                {"right": "#2ca02c", "wrong": "#d62728"})
    if task == "sts":
        return sample.labels, "gold score", False, None
    names = TASK_LABELS[task]
    return ([names[int(v)] for v in sample.labels], "gold label", True,
            category_colors(names, ordinal=task == "sst"))


# two side by side per row (four narrow columns would cut the pictures and their numbers)
cols = [col for start in range(0, len(names), 2) for col in st.columns(2)][:len(names)]
for i, (col, name) in enumerate(zip(cols, names)):
    with col:
        bar = st.empty()
        result = run_safely(view, name, lambda f, text: bar.progress(f, text=text), what=name)
        bar.empty()
        if result is None:
            continue
        sample, xy, report = result
        if not has_weights(name):
            st.caption(f"Weights not available locally: the embedding sample this run kept ({len(sample)} "
                       f"sentences, projection seed 0), not recomputed for the settings above.")
        values, title, categorical, palette = colors(sample)
        if color_by == "error" and values is None:
            st.warning(f"{name} has no {TASK_TITLES[task].lower()} head: no errors to color by.")
        hover = [t[:90] + ("…" if len(t) > 90 else "") for t in sample.texts_a]
        fig = projection_figure(xy, values, hover, title=f"{name}: {method.upper()} of {len(sample)} sentences",
                                color_label=title, categorical=categorical, colors=palette)
        clickable = int(dims) == 2
        event = show_figure(fig, f"{method}-{task}-{name}", key=f"em_fig_{i}",
                            **({"on_select": "rerun", "selection_mode": "points"} if clickable else {}))
        index = selected_index(event) if clickable else None
        if index is not None and 0 <= index < len(sample):
            open_links(sample, index, name)
        elif clickable:
            st.caption("Click a point to open its sentence in Attention & saliency and Predict.")
        m1, m2, m3, m4 = st.columns(4)
        fmt = lambda v: "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"
        m1.metric("alignment ↓", fmt(report["alignment"]),
                  help=f"E‖f(x)−f(y)‖² over {report['n_positive_pairs']} STS dev pairs scored ≥ 4 (unit vectors)")
        m2.metric("uniformity ↓", fmt(report["uniformity"]),
                  help="log E exp(−2‖f(x)−f(y)‖²) over every sampled STS sentence")
        m3.metric("kNN purity ↑", fmt(report["knn_purity"]),
                  help=f"share of the 10 nearest neighbours with the same sentiment, {report['n_sst']} SST dev sentences")
        m4.metric("STS Spearman ↑", fmt(report["sts_spearman"]),
                  help=f"Spearman of cosine similarity vs gold score, {report['n_sts_pairs']} STS dev pairs")
st.caption("Alignment and uniformity follow Wang & Isola (2020): lower is better for both. UMAP uses cosine "
           "neighbours (15) and is reproducible for a seed; PCA is the fast, deterministic alternative.")

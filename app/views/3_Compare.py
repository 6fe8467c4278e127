"""Compare: dev metrics of every run, one line per study row (mean ± sd over seeds);
the recipe and study claim behind a run; two runs side by side."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from analysis.compare import history_long, qqp_precision_recall
from analysis.mistakes import confusion
from analysis.predictions import DISAGREE, agreement, disagreements, load_predictions, name_sentiment
from app.analysis_common import run_safely
from app.common import (QUORA_CAPTION, ROOT, SHIPPED, STUDY_PLAN, checkpoints_root, fmt_duration, page_setup,
                        pick_run, run_tables, study_plan, study_texts)
from app.content import chart_lines, confusion_spec, dot_spec, fmt_mean_sd, run_group, subset_short
from core.tasks import TASK_LABELS
from core.errors import MinbertError
from core.experiments.study import check_run, read_results

page_setup("Compare", ":material/compare_arrows:")
st.title(":material/compare_arrows: Compare checkpoints")
root = checkpoints_root()

# the figures the overview shows (column, name); * marks the Quora caveat, said once below
SHOWN = {"mean_score": "mean", "sst_acc": "SST acc", "qqp_acc": "Quora acc*", "sts_pearson": "STS r"}
STUDY_KINDS = ("study", "study-best")


def shown_path(path: str) -> str:
    """A checkpoint's path as a command line in this checkout would name it."""
    try:
        return Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return path


def default_selection(groups: pd.DataFrame) -> list[str]:
    """The shipped model, the user's own runs and the best full-dev study row; the first
    five lines when there are none of those."""
    picked = list(groups.loc[groups["kind"].isin(["shipped", "your run"]), "name"])
    rows = groups[groups["kind"].isin(STUDY_KINDS) & ~groups["subset"].map(bool)]
    if len(rows):
        picked.append(rows["name"].iloc[0])   # full-dev first, most tasks, best mean
    return picked or list(groups["name"][:5])


def label_of(line: pd.Series, metric: str) -> str:
    """A chart label: the run or row, with its dev-subset n when it has one and, for the
    mean, the tasks it covers when fewer than three (a mean over one task is not a mean
    over three)."""
    marks = [subset_short(line["subset"])] if line["subset"] else []
    if metric == "mean_score" and line["n_tasks"] < 3:
        marks.append(f"{line['scored']} only")
    return f"{line['name']} [{'; '.join(marks)}]" if marks else line["name"]


def overview_frame(groups: pd.DataFrame) -> pd.DataFrame:
    """The table's lines: mean ± sd cells, seeds, the dev set, training time."""
    out = pd.DataFrame({"row / run": groups["name"]})
    for col, name in SHOWN.items():
        out[name] = [fmt_mean_sd(m, s) for m, s in zip(groups[col], groups[f"{col}_sd"])]
    out["seeds"] = groups["seeds"]
    out["dev set"] = [subset_short(m) or "full" for m in groups["subset"]]   # the whole mark: the caption
    out["train time"] = groups["train_time_s"].map(lambda s: fmt_duration(s) if pd.notna(s) else "–")
    return out


def seeds_frame(table: pd.DataFrame, groups: pd.DataFrame) -> pd.DataFrame:
    """Every run of the shown lines, one line per seed."""
    runs = [r for rs in groups["runs"] for r in rs]
    part = table.set_index("name").loc[runs].reset_index()
    out = pd.DataFrame({"run": part["name"], "seed": [run_group(n)[1] for n in part["name"]]})
    for col, name in SHOWN.items():
        out[name] = part[col].round(3)
    out["train time"] = part["train_time_s"].map(lambda s: fmt_duration(s) if pd.notna(s) else "–")
    return out


def dot_chart(groups: pd.DataFrame, table: pd.DataFrame, metric: str, seeds: bool) -> dict:
    """The overview chart (app.content.dot_spec): one dot per line with ±1 sd, the
    seeds beside it when asked; training time in minutes."""
    minutes = metric == "train_time_s"
    lines = chart_lines(groups, metric, label_of)
    values = table.set_index("name")[metric]
    pts = [(lab, v) for lab, runs in zip(lines["label"], lines["runs"]) if seeds and len(runs) > 1
           for v in values.loc[list(runs)].dropna()]
    return dot_spec(lines, metric, "minutes" if minutes else SHOWN[metric], pts, 1 / 60 if minutes else 1.0)


def overview(table: pd.DataFrame, groups: pd.DataFrame) -> pd.DataFrame:
    """Selection, chart and table of the shown lines; returns the shown lines."""
    c1, c2 = st.columns([3, 1])
    everything = c2.toggle(f"All {len(groups)} lines", key="cmp_all",
                           help=f"Every run and study row ({len(table)} runs in all).")
    seeds = c2.toggle("Every seed", key="cmp_seeds", help="Each study row's seeds, beside its mean ± sd.")
    names = list(groups["name"])
    if "cmp_shown" not in st.session_state:
        st.session_state["cmp_shown"] = default_selection(groups)
    st.session_state["cmp_shown"] = [n for n in st.session_state["cmp_shown"] if n in names]
    chosen = c1.multiselect("Runs and study rows", names, key="cmp_shown", disabled=everything,
                            help="A study row is one line: mean ± sd over its seeds.")
    shown = groups if everything else groups[groups["name"].isin(chosen)]
    if shown.empty:
        st.info("Pick runs or study rows above.")
        return shown
    metric = st.radio("Figure", [*SHOWN, "train_time_s"], horizontal=True, key="cmp_metric",
                      format_func=lambda m: SHOWN.get(m, "training time"))
    spec = dot_chart(shown, table, metric, seeds)
    st.vega_lite_chart(spec=spec, width="stretch", key="cmp_chart")
    n_runs = int(shown.loc[shown[metric].notna(), "seeds"].sum())
    n_lines = sum(row["type"] == "line" for row in spec["data"]["values"])
    st.caption(f"{n_lines} lines, {n_runs} runs" + (" (grey dots: the seeds)" if seeds else ""))
    if seeds:
        st.dataframe(seeds_frame(table, shown), hide_index=True, width="stretch")
    else:
        st.dataframe(overview_frame(shown), hide_index=True, width="stretch", column_config={
            "row / run": st.column_config.TextColumn(width="medium"),
            "seeds": st.column_config.NumberColumn(width="small"),
            "train time": st.column_config.TextColumn(width="small")})
    subsets = shown[shown["subset"].map(bool)]
    marks = "; ".join(f"{n}: {d}" for n, d in zip(subsets["name"][:5], subsets["dev set"][:5]))
    st.caption("Mean ± sd over seeds (sample sd); mean = mean of SST accuracy, Quora accuracy and STS Pearson over the "
               "tasks a run was trained on. "
               + (f"{len(subsets)} line(s) were scored on a dev subset (data.eval_limit), marked with their n (triangles "
                  f"in the chart) and ranked after the full-dev lines: {marks}"
                  + ("; …" if len(subsets) > 5 else "") + ". " if len(subsets) else "")
               + f"{int((~table['weights'].astype(bool)).sum())} of {len(table)} runs have no weights here "
               "(results-only: Predict and Attention & saliency do not offer them; Home lists the models with weights). " + QUORA_CAPTION.replace(":material/info: ", "* "))
    return shown


# ------------------------------------------------------------- study claims
@st.cache_data(show_spinner=False, max_entries=64)
def study_check(path: str, plan_text: str, results_text: str, signature: tuple) -> dict | None:
    """core.experiments.study's reproduction check of one run against the study row trained with the
    same settings (None when no row was: only the seed may differ)."""
    plan = study_plan(plan_text)
    try:
        check = check_run(plan, read_results(plan.out / "results.jsonl"), path)
    except MinbertError:
        return None
    return None if check["config_differences"] else check


@st.cache_data(show_spinner=False, max_entries=8)
def study_claims(plan_text: str, results_text: str) -> dict[str, dict]:
    """``core.experiments.study.claim_table`` by row name (the report's number and claim, our mean ±
    sd, the verdict); empty where core.experiments.study does not provide it."""
    import core.experiments.study as study
    if not hasattr(study, "claim_table"):
        return {}
    plan = study_plan(plan_text)
    return {c["row"]: c for c in study.claim_table(plan, read_results(plan.out / "results.jsonl"))}


def show_claim(claim: dict) -> None:
    """A study row's report claim beside our result: three things, side by side."""
    c1, c2, c3 = st.columns([2, 2, 1])
    with c1:
        st.markdown(f"**The report** ({claim.get('report') or '–'}"
                    + (f", {claim['source']}" if claim.get("source") else "") + ")")
        st.write(str(claim.get("report_result") or "–"))
        st.caption(f"Claim: {claim.get('claim') or 'not stated'}"
                   + (f" (expects {claim['expect']} than {claim['baseline']})" if claim.get("expect") and
                      claim.get("baseline") else ""))
    with c2:
        metric = SHOWN.get(claim.get("metric"), claim.get("metric") or "mean")
        if not claim.get("seeds"):
            st.markdown(f"**Ours** ({metric})")
            st.write("not run yet with the row's current settings")
            st.caption(f"`python -m core.study {STUDY_PLAN.relative_to(ROOT)} --only {claim['row']}`")
        else:
            st.markdown(f"**Ours** ({metric}, mean ± sd over {claim['seeds']} seeds)")
            st.write(fmt_mean_sd(claim.get("mean"), claim.get("sd")))
        if claim.get("delta") is not None and claim.get("baseline"):
            st.caption(f"Δ vs {claim['baseline']}: {claim['delta']:+.3f}")
    with c3:
        st.markdown("**Verdict**")
        st.write(str(claim.get("verdict") or ("a baseline row" if not claim.get("baseline") else
                                               "no direction stated to check")))


def show_check(check: dict, record: pd.Series) -> None:
    if check["seed_of_row"] is not None:
        st.markdown(f"**Study row `{check['row']}`**, seed {check['seed_of_row']}: this checkpoint is one of the "
                    "row's own runs (the row's mean and sd include it).")
    else:
        verdict = {True: "reproduces it", False: "does **not** reproduce it",
                   None: "cannot be judged yet (the row has one seed: no sd)"}[check["reproduces"]]
        st.markdown(f"**Study row `{check['row']}`** was trained with these settings (seed aside): "
                    f"this checkpoint {verdict}.")
    st.dataframe(pd.DataFrame([{"metric": f["name"], "this checkpoint": f["value"], "row mean": f["row_mean"],
                                "row sd": f["row_sd"], "seeds": f["seeds"],
                                "within 2 sd": {True: "yes", False: "no", None: "–"}[f["within"]]}
                               for f in check["figures"]]),
                 hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(c, format="%.3f")
                                for c in ("this checkpoint", "row mean", "row sd")})
    st.caption(f"Within = |value − row mean| < 2 sd of the row's seeds, the reproduction study's rule (no verdict for "
               f"one of the row's own runs). `python -m core.study {STUDY_PLAN.relative_to(ROOT)} --check "
               f"{shown_path(record['path'])}` prints the same. Quora acc*: see the note above.")


def recipe_panel(table: pd.DataFrame, groups: pd.DataFrame, signature: tuple) -> None:
    """The config a run was trained with; for a study row, the report's claim beside our
    result; for a run trained like a study row, whether it reproduces it."""
    pick = pick_run("Checkpoint", groups, key="recipe_pick", default=SHIPPED)
    record = table.set_index("name").loc[pick]
    if record["description"]:
        st.caption(record["description"])
    texts = run_safely(study_texts, what=str(STUDY_PLAN.relative_to(ROOT)))
    if texts:
        group, seed = run_group(pick)
        folder = study_plan(texts[0]).out.name + "/"
        claim = study_claims(*texts).get(group.removeprefix(folder)) if group.startswith(folder) else None
        if claim:
            show_claim(claim)
        check = study_check(str(record["path"]), *texts, signature)
        if check:
            show_check(check, record)
    st.code(json.dumps(record["config"], indent=2), language="json")
    hist = history_long(record.to_dict())
    if not hist.empty and hist["epoch"].nunique() > 1:
        st.plotly_chart(px.line(hist, x="epoch", y="value", color="metric", markers=True, height=300,
                                title=f"{pick}: dev metrics per epoch"), width="stretch")


# ---------------------------------------------------------------- two of them
@st.cache_data(show_spinner=False, max_entries=32)
def predictions_for(path: str, task: str, signature: tuple) -> pd.DataFrame | None:
    return load_predictions(path, task, missing_ok=True)


class LazyPredictions(dict):
    """``preds[(run, task)]``: a run's dev predictions, read (cached) when first asked for."""

    def __init__(self, paths: pd.Series, signature: tuple):
        super().__init__()
        self.paths, self.signature = paths, signature

    def __missing__(self, key: tuple[str, str]) -> pd.DataFrame | None:
        self[key] = predictions_for(self.paths[key[0]], key[1], self.signature)
        return self[key]


def sst_tab(preds: dict, a: str, b: str) -> None:
    for col, n in zip(st.columns(2), (a, b)):
        df = preds[(n, "sst")]
        with col:
            if df is None or "label" not in df:
                st.info(f"{n} has no SST dev predictions.")
                continue
            cm = confusion(df)
            acc = np.trace(cm) / max(cm.sum(), 1)
            spec = confusion_spec(cm, TASK_LABELS["sst"], f"{n.split('/')[-1]}: acc {acc:.3f}, n={cm.sum():,}")
            st.vega_lite_chart(spec=spec, width="stretch", key=f"cm:{n}")


def sts_tab(preds: dict, a: str, b: str) -> None:
    frames = [preds[(n, "sts")][["id", "label", "pred"]].assign(checkpoint=n) for n in (a, b)
              if preds[(n, "sts")] is not None and "label" in preds[(n, "sts")]]
    if not frames:
        st.info("Neither checkpoint has STS dev predictions.")
        return
    fig = px.scatter(pd.concat(frames), x="label", y="pred", color="checkpoint", opacity=0.5, height=420,
                     labels=dict(label="gold similarity", pred="predicted similarity"),
                     title="STS dev: predicted vs gold (the diagonal is perfect)")
    fig.add_trace(go.Scatter(x=[0, 5], y=[0, 5], mode="lines", line=dict(dash="dash", color="gray"), name="y = x"))
    fig.update_layout(margin=dict(t=40, b=10), legend=dict(orientation="h", y=-0.2))
    st.plotly_chart(fig, width="stretch")


def qqp_tab(preds: dict, a: str, b: str) -> None:
    curves, points = [], []
    for n in (a, b):
        df = preds[(n, "qqp")]
        if df is not None and "label" in df:
            curve, point = qqp_precision_recall(df)
            curves.append(curve.assign(checkpoint=n))
            points.append({"checkpoint": n, **point})
    if not curves:
        st.info("Neither checkpoint has Quora dev predictions.")
        return
    c1, c2 = st.columns([2, 1])
    with c1:
        fig = px.line(pd.concat(curves), x="recall", y="precision", color="checkpoint", markers=True,
                      hover_data=["threshold", "f1"], height=400,
                      title="Quora* dev: precision vs recall over decision thresholds")
        fig.update_layout(margin=dict(t=40, b=10), xaxis_range=[0, 1.02], yaxis_range=[0, 1.02],
                          legend=dict(orientation="h", y=-0.2))
        st.plotly_chart(fig, width="stretch")
    with c2:
        st.markdown("At threshold 0.5")
        st.dataframe(pd.DataFrame(points).round(3), hide_index=True, width="stretch")


def diff_tab(preds: dict, a: str, b: str) -> None:
    task = st.radio("Task", ["sst", "qqp", "sts"], horizontal=True, key="diff_task",
                    format_func={"sst": "Sentiment", "qqp": "Quora paraphrase*", "sts": "STS similarity"}.get)
    da, db = preds[(a, task)], preds[(b, task)]
    if da is None or db is None:
        st.info(f"Both checkpoints need {task} dev predictions to compare examples.")
        return
    stats = agreement(da, db, task)
    st.markdown(f"**{stats['disagree']:,}** of {stats['shared']:,} shared dev examples disagree: "
                f"{DISAGREE[task]} (agreement {stats['agree_rate']:.1%}; the Errors page uses the same rule).")
    diff = disagreements(da, db, task, names=(a, b))
    if task == "sst":
        diff = name_sentiment(diff, (f"pred_{a}", f"pred_{b}", "label"))
    st.dataframe(diff.drop(columns=["id"]).head(500), hide_index=True, width="stretch")


def side_by_side(table: pd.DataFrame, groups: pd.DataFrame, shown: pd.DataFrame, signature: tuple) -> None:
    st.subheader("Two checkpoints side by side")
    if len(table) < 2:
        st.info("Only one checkpoint so far: train another to compare two.")
        return
    first = [r for rs in shown["runs"] for r in rs] or list(table["name"])
    others = [n for n in first if n != first[0]] or [n for n in table["name"] if n != first[0]]
    c1, c2 = st.columns(2)
    with c1:
        a = pick_run("Checkpoint A", groups, key="cmp_a", default=first[0])
    with c2:
        b = pick_run("Checkpoint B", groups, key="cmp_b", default=others[0])
    if a == b:
        st.warning("Pick two different checkpoints.")
        return
    paths = table.set_index("name")["path"]
    paired = st.expander(f"Is the difference real? {a} − {b} on every metric and slice, with 95 % intervals",
                         key="cmp_paired", on_change="rerun", icon=":material/difference:")
    if paired.open:   # a paired bootstrap takes seconds: computed when opened (then cached)
        with paired:
            from app.compare_stats import render_paired_comparison   # (its import alone takes ~2 s cold)
            render_paired_comparison(a, b, key="pc")   # its table sorts and filters
    preds = LazyPredictions(paths, signature)
    names = ["SST confusion", "STS predicted vs gold", "Quora* precision/recall", "Where they disagree"]
    tabs = st.tabs(names, key="cmp_tab", on_change="rerun")   # only the open tab runs
    for tab, show in zip(tabs, (sst_tab, sts_tab, qqp_tab, diff_tab)):
        if tab.open:
            with tab:
                show(preds, a, b)

table, groups, signature = run_tables(root)
if table.empty:
    st.info(f"No checkpoint with dev metrics under `{root}` yet. Train one on the Train page "
            "(or `python -m core.evaluate CHECKPOINT` writes dev predictions for an existing one).")
    st.stop()

st.subheader("Dev metrics")
shown = overview(table, groups)
panel = st.expander("Recipe and study claim of a checkpoint", key="recipe_panel", on_change="rerun",
                    icon=":material/science:")
if panel.open:
    with panel:
        recipe_panel(table, groups, signature)
side_by_side(table, groups, shown, signature)

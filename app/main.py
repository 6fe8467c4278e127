"""minBERT Studio: the app's entry point and landing page.

    streamlit run app/main.py

Builds the navigation from the page files in ``app/views/`` (``N_Title.py``: pages 1-3
are the studio, later ones the analysis tools) and renders the home page.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from analysis.records import checkpoint_record  # noqa: E402
from app.common import (PRETRAINED, SHIPPED, MinbertError, checkpoint_tasks, checkpoints_root,  # noqa: E402
                        fmt_duration, job_manager, preload_default_model, resolve_checkpoint, run_tables,
                        trained_checkpoints)
from app.content import dev_subset, fmt_mean_sd, subset_label, task_mean  # noqa: E402
from core.tasks import QUORA_NOTE  # noqa: E402


def home() -> None:
    """The landing page: what this is, where to go, which checkpoints and jobs exist."""
    st.title(":material/psychology: minBERT Studio")
    st.markdown(
        "A BERT encoder written from scratch in PyTorch, loaded with the **all-MiniLM-L6-v2** weights and "
        "fine-tuned jointly on three tasks: **sentiment** (Stanford Sentiment Treebank, 5 classes), "
        "**paraphrase** detection (Quora question pairs) and semantic **similarity** (STS, 0–5).")

    c1, c2, c3 = st.columns(3)
    with c1:
        st.page_link("views/1_Predict.py", label="**Predict**", icon=":material/online_prediction:")
        st.caption("Type a sentence or a pair and see predictions as you type, or paste a whole review; "
                   "compare checkpoints; batch-predict a CSV.")
    with c2:
        st.page_link("views/2_Train.py", label="**Train**", icon=":material/model_training:")
        st.caption("Edit a recipe, launch a background training job, watch its loss curves and dev metrics.")
    with c3:
        st.page_link("views/3_Compare.py", label="**Compare**", icon=":material/compare_arrows:")
        st.caption("Every run's dev metrics (a study row as mean ± sd over its seeds); two runs side by side, "
                   "with paired intervals, confusion matrices and disagreements.")

    st.subheader("Checkpoints")
    root = checkpoints_root()
    names = trained_checkpoints()
    if not names:
        st.info(f"No trained checkpoint under `{root}` yet. The Predict page works right away with the zero-shot "
                "pretrained encoder, and has a one-click *Train a starter model* (a few minutes on CPU).")
    st.dataframe(models_frame(root, names), hide_index=True, width="stretch",
                 column_config={"mean dev score": st.column_config.NumberColumn(format="%.3f")})
    st.caption("Mean dev score = mean of SST accuracy, Quora accuracy* and STS Pearson over a model's tasks; a "
               "score on a dev subset (data.eval_limit) says so with its n and ranks after full-dev ones. "
               f"* {QUORA_NOTE}")
    studies_summary()

    jobs = job_manager().refresh()
    active = [j for j in jobs if j.active]
    st.subheader("Training jobs")
    if not jobs:
        st.caption("No jobs yet.")
    else:
        st.write(f"{len(active)} active, {len(jobs)} in total.")
        for job in active[:5]:
            st.progress(job.progress().fraction, text=f"job {job.id} · {job.name}: {job.state}")
    st.caption(f"Checkpoints and the job database live in `{root}`.")


def models_frame(root: Path, names: list[str]) -> pd.DataFrame:
    """The checkpoints with weights (what Predict and the analysis pages can load), the
    shipped one first, then full-dev figures by mean, then dev-subset ones (marked)."""
    rows = []
    for name in names:
        r = checkpoint_record(root / name) if (root / name).is_dir() else checkpoint_record(resolve_checkpoint(name))
        subset, score = dev_subset(r), task_mean(r)
        rows.append({"checkpoint": name + (" (shipped)" if name == SHIPPED else ""),
                     "tasks": ", ".join(checkpoint_tasks(name)), "mean dev score": score,
                     "dev set": subset_label(subset) or "full", "recipe": r["recipe"],
                     "training time": fmt_duration(r["train_time_s"]), "finished": r["finished"],
                     "_order": (name != SHIPPED, bool(subset), -(score or 0.0))})
    rows.sort(key=lambda row: row.pop("_order"))
    rows.append({"checkpoint": PRETRAINED, "tasks": "qqp, sts (zero-shot)", "mean dev score": None, "dev set": "",
                 "recipe": "all-MiniLM-L6-v2, no fine-tuning", "training time": "–", "finished": True})
    return pd.DataFrame(rows)


def studies_summary() -> None:
    """The runs kept without weights (the studies'), one line per folder: how many rows
    and runs, and its best full-dev row with mean ± sd over seeds."""
    table, groups, _ = run_tables()
    kept = groups[~groups["weights"].astype(bool) & ~groups["kind"].isin(["zero-shot", "your run", "shipped"])]
    if kept.empty:
        return
    rows = []
    for kind, part in kept.groupby("kind", sort=False):
        full = part[~part["subset"].map(bool)]
        best = full.iloc[0] if len(full) else part.iloc[0]
        rows.append({"folder": f"{kind}/", "rows": len(part), "runs": int(part["seeds"].sum()),
                     "best row (mean dev score)": f"{best['name'].split('/', 1)[-1]}: "
                                                  f"{fmt_mean_sd(best['mean_score'], best['mean_score_sd'])}"})
    st.subheader("Studies (results only)")
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.caption(f"{int(kept['seeds'].sum())} runs kept with their metrics, dev predictions and embedding samples but "
               "no weights (a study row is its seeds: mean ± sd). Compare, Errors and Embeddings show them.")
    st.page_link("views/3_Compare.py", label="Compare the study rows", icon=":material/compare_arrows:")


PAGE_ICONS = {"Predict": ":material/online_prediction:", "Train": ":material/model_training:",
              "Compare": ":material/compare_arrows:"}


def _pages() -> dict[str, list]:
    """Home, then every ``app/views/N_Title.py`` in number order, in two sections."""
    sections: dict[str, list] = {"Studio": [st.Page(home, title="Home", icon=":material/home:", default=True)]}
    files = [p for p in (Path(__file__).parent / "views").glob("*.py") if re.match(r"^\d+_", p.stem)]
    for path in sorted(files, key=lambda p: (int(p.stem.split("_", 1)[0]), p.stem)):
        title = path.stem.split("_", 1)[1].replace("_", " ")
        section = "Studio" if int(path.stem.split("_", 1)[0]) <= 3 else "Analysis"
        sections.setdefault(section, []).append(
            st.Page(path, title=title, icon=PAGE_ICONS.get(title, ":material/analytics:")))
    return sections


st.set_page_config(page_title="minBERT Studio", page_icon=":material/psychology:", layout="wide")
try:   # once per server process (cached): the first prediction is then as fast as later ones
    preload_default_model()
except MinbertError:
    pass   # a broken default checkpoint is reported by the page that uses it
st.navigation(_pages()).run()

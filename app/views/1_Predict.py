"""Predict: type a sentence (or a pair) and see every picked checkpoint's prediction as
you type; or upload a CSV and download the predictions."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

from app.common import (PRETRAINED, QUORA_CAPTION, STARTER_RECIPE, TASK_TITLES, MinbertError, checkpoint_key,
                        checkpoint_tasks, default_models, fmt_duration, job_manager, latest_job, load_model,
                        model_choices, page_setup, serving_fast, serving_toggle, trained_checkpoints)
from app.content import EXAMPLES, SENTIMENT_LABELS, sentiment_frame
from core.inputs import MAX_BATCH_ROWS, MAX_TEXT_CHARS, guess_columns, read_csv_upload
from core.predict import predict_frame, predict_one

page_setup("Predict", ":material/online_prediction:")
serving_toggle()
st.title(":material/online_prediction: Predict")
st.caption("Sentiment of a sentence (5 classes), paraphrase probability and similarity (0–5) of a pair. "
           f"Texts up to {MAX_TEXT_CHARS:,} characters.")


# ------------------------------------------------------------ starter model
@st.fragment(run_every=2)
def starter_progress(job_id: int) -> None:
    """Live progress of the starter job; a full rerun when it ends (new checkpoint)."""
    jm = job_manager()
    jm.refresh()
    job = jm.get(job_id)
    if not job.active:
        st.rerun(scope="app")
    p = job.progress()
    eta = f", about {fmt_duration(p.eta_s)} left" if p.eta_s else ""
    label = {"preparing": "encoding the training sentences once", "evaluating": "dev evaluation"}.get(
        p.phase, f"step {p.step}/{p.total_steps or '?'}")
    st.progress(p.fraction, text=f"Training the starter model (job {job.id}, {job.state}): {label}{eta}")
    if st.button("Cancel starter training", key="cancel_starter"):
        with st.spinner("Stopping…"):
            jm.cancel(job.id, grace_s=5)
        st.rerun(scope="app")


def starter_panel(trained: list[str]) -> None:
    """Without a trained checkpoint: say so, offer the starter job, show its progress."""
    job = latest_job(STARTER_RECIPE)
    if job is not None and job.active:
        starter_progress(job.id)
    if trained:
        return
    st.info("No trained checkpoint yet: predictions come from the **zero-shot pretrained** encoder "
            "(cosine similarity of sentence embeddings), which scores similarity and paraphrase but has "
            "no sentiment head. Train heads on the frozen encoder in a few minutes on CPU:",
            icon=":material/lightbulb:")
    if job is not None and job.state in ("failed", "cancelled"):
        reason = job.message.splitlines()[0] if job.message else ""
        st.warning(f"The last starter job ({job.id}) {job.state}. {reason} The Train page shows its log.")
    if job is None or not job.active:
        if st.button("Train a starter model", icon=":material/rocket_launch:", type="primary",
                     help="configs/starter.yaml: task heads on the frozen encoder, a few minutes on CPU"):
            try:
                job_manager().submit(STARTER_RECIPE, name="starter")
            except MinbertError as e:
                st.error(f"Could not start the starter job: {e}")
            else:
                st.rerun()


choices = model_choices()
trained = trained_checkpoints()
starter_panel(trained)

models = st.multiselect("Checkpoints", choices, default=default_models(choices), max_selections=4,
                        help="Pick one or several to see them side by side. 'pretrained' is the zero-shot encoder.")
if not models:
    st.info("Pick at least one checkpoint above.")
    st.stop()

live_tab, batch_tab = st.tabs([":material/keyboard: Type", ":material/table: Batch (CSV)"])


# ------------------------------------------------------------------- live
# One example list for the live panel: sentences (sentiment) and pairs (all three tasks).
LIVE_EXAMPLES = [*EXAMPLES["sst"], *EXAMPLES["qqp"], *EXAMPLES["sts"]]


def _use_example() -> None:
    choice = st.session_state.get("example_live")
    if not choice:
        return
    a, b = (choice, "") if isinstance(choice, str) else choice
    st.session_state["text_a"], st.session_state["text_b"] = a, b


def _predict_all(task: str, names: list[str], a: str, b: str | None) -> dict[str, dict]:
    """Each model's prediction for one task; models without that task are skipped,
    and a bad input is shown once as an error."""
    results = {}
    for name in names:
        if task not in checkpoint_tasks(name):
            continue
        try:
            results[name] = predict_one(load_model(name, serving=True), task, a, b)
        except MinbertError as e:
            st.error(f"{name}: {e}")
            break
    return results


def read_note(r: dict) -> str:
    """How much of the input the model read: all of it, in windows when it is longer
    than the length the model was trained on (core.model.MultitaskBert.predict_task)."""
    note = f"Read all {r['tokens']:,} tokens"
    if r.get("windows", 1) > 1:
        note += f" in {r['windows']} windows of {r['max_len']} tokens"
    return note + "."


def show_sentiment(names: list[str], a: str) -> None:
    st.markdown("##### :material/sentiment_satisfied: Sentiment of the sentence")
    skipped = [n for n in names if "sst" not in checkpoint_tasks(n)]
    if skipped:
        st.caption(f"No sentiment head: {', '.join(skipped)}"
                   + (" (the zero-shot model scores pairs only)." if PRETRAINED in skipped else "."))
    results = _predict_all("sst", names, a, None)
    if not results:
        return
    quiet = dict(delta_color="off", delta_arrow="off", border=True)
    cols = st.columns(max(len(results), 2))
    for col, (name, r) in zip(cols, results.items()):
        col.metric(name, r["label"], f"{max(r['probs']):.0%} confident", **quiet)
        col.caption(read_note(r))
    frame = sentiment_frame({n: r["probs"] for n, r in results.items()})
    fig = px.bar(frame, x="label", y="probability", color="model", barmode="group",
                 category_orders={"label": SENTIMENT_LABELS}, range_y=[0, 1], height=280,
                 title="Sentiment distribution")
    fig.update_layout(margin=dict(t=40, b=10), legend_title_text="")
    st.plotly_chart(fig, width="stretch")


def show_pair(names: list[str], a: str, b: str) -> None:
    st.markdown("##### :material/compare_arrows: The pair: paraphrase and similarity")
    para = _predict_all("qqp", names, a, b)
    sim = _predict_all("sts", names, a, b)
    quiet = dict(delta_color="off", delta_arrow="off", border=True)
    shown = [n for n in names if n in para or n in sim]
    cols = st.columns(max(len(shown), 2))
    for col, name in zip(cols, shown):
        with col:
            if name in para:
                st.metric(name, f"{para[name]['prob']:.0%}", "paraphrase probability", **quiet)
                st.progress(para[name]["prob"])
            if name in sim:
                st.metric(f"{name} ", f"{sim[name]['score']:.2f} / 5", "similarity", **quiet)
                st.progress(sim[name]["score"] / 5)
            st.caption(read_note(para.get(name) or sim[name]))
    st.caption(QUORA_CAPTION)


@st.fragment
def live_panel(names: list[str]) -> None:
    st.selectbox("Start from an example", [None, *LIVE_EXAMPLES], key="example_live",
                 format_func=lambda e: "—" if e is None else (e if isinstance(e, str) else f"{e[0]}  ↔  {e[1]}"),
                 on_change=_use_example)
    a = st.text_input("Sentence", key="text_a", live=True, placeholder="Type a sentence…")
    b = st.text_input("Second sentence (optional: paraphrase and similarity of the pair)", key="text_b",
                      live=True, placeholder="Type a second sentence or question to compare with…")
    a, b = (a or "").strip(), (b or "").strip()
    if not a:
        st.caption("Predictions appear as you type: the sentiment of the sentence, and with a second "
                   "sentence the paraphrase probability and similarity of the pair.")
        return
    too_long = [t for t in (a, b) if len(t) > MAX_TEXT_CHARS]
    if too_long:
        st.error(f"That text is {len(too_long[0]):,} characters long; the limit is {MAX_TEXT_CHARS:,} "
                 "characters. Shorten it (the models read at most a few hundred words).")
        return
    show_sentiment(names, a)
    if b:
        show_pair(names, a, b)


with live_tab:
    live_panel(models)


# ------------------------------------------------------------------ batch
def _predict_batch(df: pd.DataFrame, task: str, names: list[str], col_a: str, col_b: str | None) -> pd.DataFrame:
    loaded = {n: load_model(n, serving=True) for n in names}
    chunk = 128
    bar = st.progress(0.0, text="Predicting…")
    parts = []
    for start in range(0, len(df), chunk):
        parts.append(predict_frame(loaded, task, df.iloc[start:start + chunk], col_a, col_b))
        done = min(len(df), start + chunk)
        bar.progress(done / len(df), text=f"Predicting… {done:,}/{len(df):,} rows")
    bar.empty()
    out = pd.concat(parts)
    tokens = [t for part in parts for t in part.attrs.get("tokens_read", [])]
    if "note" in out:
        out["note"] = out["note"].fillna("")
    return out.assign(**{"tokens read": tokens}) if tokens else out


@st.cache_data(max_entries=8, show_spinner=False)
def batch_predictions(file_sha: str, task: str, col_a: str, col_b: str | None, names: tuple[str, ...],
                      contents: tuple[str, ...], fast: bool, _df: pd.DataFrame) -> pd.DataFrame:
    """The prediction table of an uploaded file, computed once per (file content, task,
    columns, checkpoint contents, serving path): reruns and other sessions read it."""
    return _predict_batch(_df, task, list(names), col_a, col_b)


with batch_tab:
    task = st.radio("Task", list(TASK_TITLES), format_func=TASK_TITLES.get, horizontal=True, key="task")
    usable = [m for m in models if task in checkpoint_tasks(m)]
    for name in models:
        if name not in usable:
            st.caption(f"**{name}** has no {TASK_TITLES[task].lower()} head"
                       + (" (the zero-shot model only does similarity and paraphrase)." if name == PRETRAINED
                          else "."))
    need = "two text columns (one pair per row, e.g. sentence1,sentence2)" if task != "sst" else \
        "one text column (e.g. sentence)"
    max_mb = st.get_option("server.maxUploadSize")   # .streamlit/config.toml
    st.write(f"Upload a CSV with {need}; up to {max_mb} MB and {MAX_BATCH_ROWS:,} rows. "
             "Predictions are added as columns, one set per checkpoint.")
    upload = st.file_uploader("CSV file", type=["csv", "tsv", "txt"], key="batch_file")
    if upload is not None:
        raw = upload.getvalue()
        try:
            upload.seek(0)
            df = read_csv_upload(upload, max_mb=max_mb)   # limits enforced while reading
            guess = guess_columns(df, task)
        except MinbertError as e:
            st.error(f"{upload.name}: {e}")
        else:
            for warning in df.attrs.get("warnings", []):
                st.warning(f"{upload.name}: {warning}")
            cols = list(df.columns)
            c1, c2 = st.columns(2)
            col_a = c1.selectbox("Text column" if task == "sst" else "First text column", cols,
                                 index=cols.index(guess[0]))
            col_b = c2.selectbox("Second text column", cols, index=cols.index(guess[1])) if task != "sst" else None
            st.caption(f"{len(df):,} rows, columns: {', '.join(cols)}")
            if not usable:
                st.warning("None of the picked checkpoints can predict this task.")
            else:
                try:
                    result = batch_predictions(hashlib.sha256(raw).hexdigest(), task, col_a, col_b, tuple(usable),
                                               tuple(checkpoint_key(n) for n in usable), serving_fast(), df)
                except MinbertError as e:
                    st.error(str(e))
                    result = None
                if result is not None:
                    st.dataframe(result, width="stretch", height=360)
                    st.download_button("Download predictions (CSV)", result.to_csv(index=False).encode(),
                                       file_name=f"{Path(upload.name).stem}-{task}-predictions.csv",
                                       mime="text/csv", icon=":material/download:")
                    if task == "qqp":
                        st.caption(QUORA_CAPTION)

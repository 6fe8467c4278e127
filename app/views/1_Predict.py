"""Predict: type a sentence (or a pair) and see every picked checkpoint's prediction as
you type; or upload a CSV and download the predictions."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

from app.common import (PRETRAINED, QUORA_CAPTION, STARTER_RECIPE, TASK_TITLES, MinbertError, checkpoint_key,
                        checkpoint_tasks, default_models, eta_text, job_manager, latest_job, load_model,
                        page_setup, picker_choices, serving_fast, serving_toggle, trained_checkpoints)
from app.content import (EXAMPLES, SENTIMENT_LABELS, keep_input_columns, paraphrase_reading, sentiment_frame,
                         sentiment_reading)
from app.exports import CSV_HELP
from core.data.inputs import csv_export_bytes
from app.links import PAGES, example_params, linked_example, model_params, page_link, show_query
from core.data.inputs import MAX_BATCH_ROWS, MAX_TEXT_CHARS, guess_columns, read_csv_upload
from core.serving.predict import predict_frame, predict_one

APP_DIR = Path(__file__).resolve().parents[1]
SHORT, LONG = "Sentence or pair", "Long text"

page_setup("Predict", ":material/online_prediction:")
serving_toggle()
st.title(":material/online_prediction: Predict")
st.caption("Sentiment of a sentence or a review; paraphrase and similarity of a pair. Texts up to "
           f"{MAX_TEXT_CHARS:,} characters, read whole.",
           help="5 sentiment classes; paraphrase probability; similarity on 0–5. A text longer than the model's "
                "input length is read in windows of that length.")


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
    eta = f", {eta_text(p)}" if eta_text(p) else ""
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


choices = picker_choices(need_weights=True)   # results-only runs could only say "weights not available"
trained = trained_checkpoints()
starter_panel(trained)

linked = linked_example(choices)   # a link (app/links.py) that opens an example here, once per link
if linked:
    st.session_state["input_mode"] = SHORT
    st.session_state["text_a"], st.session_state["text_b"] = linked.text_a, linked.text_b or ""
    if linked.models:
        st.session_state["models"] = list(linked.models)
models = st.multiselect("Checkpoints", choices, default=None if "models" in st.session_state else
                        default_models(choices), max_selections=4, key="models",
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
    st.session_state["input_mode"] = SHORT
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
    than the length the model was trained on (core/model/windows.py, the windowing rule)."""
    note = f"Read all {r['tokens']:,} tokens"
    if r.get("windows", 1) > 1:
        note += f" in {r['windows']} windows of {r['max_len']} tokens"
    return note + "."


def calibration_link(name: str, task: str) -> None:
    """A link to how well this checkpoint's confidences match its accuracy on dev
    (the Calibration page, when this checkout has it)."""
    if not (APP_DIR / PAGES["calibration"][0]).is_file():
        return
    try:
        page_link("calibration", "How far to trust this confidence", model_params([name], task=task),
                  icon=":material/tune:", help=f"{name}'s calibration on the {TASK_TITLES[task].lower()} dev set")
    except MinbertError:
        pass


QUIET = dict(delta_color="off", delta_arrow="off", border=True)


def sentiment_cards(results: dict[str, dict], chart: bool) -> None:
    cols = st.columns(max(len(results), 2))
    for col, (name, r) in zip(cols, results.items()):
        reading = sentiment_reading(r["probs"])
        with col:
            st.metric(name, reading["value"], reading["note"], **QUIET)
            st.caption(read_note(r))
            calibration_link(name, "sst")
    frame = sentiment_frame({n: r["probs"] for n, r in results.items()})
    fig = px.bar(frame, x="label", y="probability", color="model", barmode="group",
                 category_orders={"label": SENTIMENT_LABELS}, range_y=[0, 1], height=260 if chart else 220,
                 title="Sentiment distribution")
    fig.update_layout(margin=dict(t=40, b=10), legend_title_text="", legend=dict(orientation="h", y=-0.3))
    if chart:
        st.plotly_chart(fig, width="stretch")
    else:
        with st.expander("Sentiment distribution"):
            st.plotly_chart(fig, width="stretch")


def show_sentiment(names: list[str], a: str, of_pair: bool = False) -> None:
    st.markdown("##### :material/sentiment_satisfied: Sentiment of the " + ("first sentence" if of_pair else "text"))
    skipped = [n for n in names if "sst" not in checkpoint_tasks(n)]
    if skipped:
        st.caption(f"No sentiment head: {', '.join(skipped)}"
                   + (" (the zero-shot model scores pairs only)." if PRETRAINED in skipped else "."))
    results = _predict_all("sst", names, a, None)
    if results:
        sentiment_cards(results, chart=not of_pair)


def pair_cards(name: str, para: dict | None, sim: dict | None, side_by_side: bool) -> None:
    """One model's paraphrase and similarity cards (side by side when there is room)."""
    left, right = st.columns(2) if side_by_side else (st.container(), st.container())
    if para is not None:
        reading = paraphrase_reading(para["prob"])
        left.metric(name, reading["value"], f"paraphrase probability: {reading['note']}", **QUIET)
        left.progress(para["prob"])
    if sim is not None:
        right.metric(f"{name} ", f"{sim['score']:.2f} / 5", "similarity", **QUIET)
        right.progress(sim["score"] / 5)
    st.caption(read_note(para or sim))
    if para is not None:
        calibration_link(name, "qqp")


def show_pair(names: list[str], a: str, b: str) -> None:
    st.markdown("##### :material/compare_arrows: The pair: paraphrase and similarity")
    para = _predict_all("qqp", names, a, b)
    sim = _predict_all("sts", names, a, b)
    shown = [n for n in names if n in para or n in sim]
    for col, name in zip(st.columns(max(len(shown), 1)), shown):
        with col:
            pair_cards(name, para.get(name), sim.get(name), side_by_side=len(shown) <= 2)
    st.caption(QUORA_CAPTION)


def keep_in_url(names: list[str], a: str, b: str) -> None:
    """The address bar links to what the page shows (app/links.py), when it can."""
    try:
        show_query(example_params("qqp" if b else "sst", a, b or None, names if len(names) <= 2 else ()))
    except MinbertError:
        pass   # a text a link cannot carry: the page works without it


def text_boxes() -> tuple[str, str]:
    """The input boxes: a sentence and a second one side by side, updated as you type,
    or one multi-line box for a review or any long text."""
    left, right = st.columns([1, 2])
    mode = left.segmented_control("Input", [SHORT, LONG], key="input_mode", default=SHORT,
                                  help="Long texts are read whole, in windows of the length the model was "
                                       "trained on.") or SHORT
    if mode == LONG:
        a = st.text_area("Review or long text", key="text_long", height=200,
                         placeholder="Paste a review… (Ctrl+Enter to predict)")
        return (a or "").strip(), ""
    right.selectbox("Start from an example", [None, *LIVE_EXAMPLES], key="example_live",
                    format_func=lambda e: "—" if e is None else (e if isinstance(e, str) else f"{e[0]}  ↔  {e[1]}"),
                    on_change=_use_example)
    c1, c2 = st.columns(2)
    a = c1.text_input("Sentence", key="text_a", live=True, placeholder="Type a sentence…")
    b = c2.text_input("Second sentence (optional: paraphrase and similarity of the pair)", key="text_b",
                      live=True, placeholder="A second sentence or question…")
    return (a or "").strip(), (b or "").strip()


@st.fragment
def live_panel(names: list[str]) -> None:
    a, b = text_boxes()
    if not a:
        st.caption("Predictions appear as you type: the sentiment of the sentence, and with a second "
                   "sentence the paraphrase probability and similarity of the pair.")
        return
    too_long = [t for t in (a, b) if len(t) > MAX_TEXT_CHARS]
    if too_long:
        st.error(f"That text is {len(too_long[0]):,} characters long; the limit is {MAX_TEXT_CHARS:,} "
                 "characters (what the models read through windows). Shorten it.")
        return
    if b:   # a pair: its results first, then the first sentence's sentiment
        show_pair(names, a, b)
        show_sentiment(names, a, of_pair=True)
    else:
        show_sentiment(names, a)
    keep_in_url(names, a, b)


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
             "Every column of the file is kept as it is, and the predictions are added as columns, one set "
             "per checkpoint, row for row (so they join back to the file).")
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
                if result is not None:   # every uploaded column as it came, then the predictions: joins back
                    result = keep_input_columns(df, result, [c for c in (col_a, col_b) if c])
                    st.dataframe(result, width="stretch", height=360)
                    st.download_button("Download predictions (CSV)", csv_export_bytes(result), help=CSV_HELP,
                                       file_name=f"{Path(upload.name).stem}-{task}-predictions.csv",
                                       mime="text/csv", icon=":material/download:")
                    if task == "qqp":
                        st.caption(QUORA_CAPTION)

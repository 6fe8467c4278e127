"""Train: pick a recipe, edit it in a form, launch it as a background job; watch jobs."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

from app.common import QUORA_CAPTION, MinbertError, eta_text, fmt_duration, job_manager, page_setup
from app.content import recipe_time, recipes_by_time
from core.config.schema import Config
from core.jobs.access import access_mode, check_access, check_app_overrides
from core.config.recipes import FieldSpec, list_recipes, parse_override_lines, recipe_fields, to_overrides

page_setup("Train", ":material/model_training:")
st.title(":material/model_training: Train")
st.caption("Jobs run as background processes on this machine or as Slurm jobs: they keep going when you close "
           "this tab or stop the app. Same operations on the command line: "
           "`python -m core.jobs submit|list|status|cancel|resume`.")

# Fields shown at the top of the form; the rest sit in one expander per section.
MAIN_FIELDS = ["train.tasks", "train.epochs", "train.steps_per_epoch", "train.batch_size", "train.lr",
               "train.head_lr", "train.freeze_encoder", "data.limit", "data.eval_limit", "train.max_steps",
               "model.pooling", "model.max_len"]
# The job name and the device selector replace name and train.device; model.encoder,
# data.dir (paths on the server) and stages are not settable from the app
# (core.jobs.access.check_app_overrides refuses them in extra overrides too).
HIDDEN_FIELDS = {"name", "train.device", "model.encoder", "data.dir", "stages"}
MODE = access_mode()


def allowed(action: str) -> bool:
    """Whether this session may submit / cancel / resume: shows why not."""
    try:
        check_access(st.session_state.get("access_secret"))
    except MinbertError as e:
        st.error(f"Not {action}: {e}")
        return False
    return True


@st.cache_data(ttl=60, show_spinner=False)
def gpu_count() -> int:
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def field_widget(spec: FieldSpec, prefix: str):
    key, label = f"{prefix}:{spec.key}", spec.key
    help_ = spec.help or None
    if spec.kind == "bool":
        return st.checkbox(label, value=bool(spec.value), key=key, help=help_)
    if spec.kind == "int":
        return st.number_input(label, value=int(spec.value), step=1, key=key, help=help_)
    if spec.kind == "choice":
        return st.selectbox(label, spec.choices, index=spec.choices.index(spec.value), key=key, help=help_)
    if spec.kind == "multichoice":
        return st.multiselect(label, spec.choices, default=list(spec.value), key=key, help=help_)
    if spec.kind == "float":
        return st.text_input(label, value=repr(float(spec.value)), key=key, help=help_)
    if spec.kind == "str":
        return st.text_input(label, value=spec.value, key=key, help=help_)
    return st.text_input(label, value=spec.text(), key=key, help=(help_ or "") + " (YAML; blank = none)")


def _float_values(fields: list[FieldSpec], values: dict) -> dict:
    """Float text boxes -> numbers (a clear message for text that is not a number)."""
    out = dict(values)
    for spec in fields:
        if spec.kind == "float" and spec.key in out:
            try:
                out[spec.key] = float(str(out[spec.key]).strip())
            except ValueError:
                raise MinbertError(f"{spec.key} must be a number, got {out[spec.key]!r}") from None
    return out


# ------------------------------------------------------------------ launch
if MODE == "read-only":
    st.info("This deployment is read-only (MINBERT_READ_ONLY): jobs can be watched here, not started, "
            "cancelled or resumed.", icon=":material/lock:")
elif MODE == "secret":
    st.text_input("Access secret", type="password", key="access_secret",
                  help="This deployment asks for its shared secret (MINBERT_SECRET) before a job is started, "
                       "cancelled or resumed.")
st.subheader("New job")
recipes = recipes_by_time(list_recipes())   # quickest first: the page opens on it
if not recipes:
    st.error("No recipes found in configs/: add a YAML recipe there (see configs/quick.yaml in the repository).")
    st.stop()
recipe = st.selectbox("Recipe", recipes, key="recipe",
                      format_func=lambda p: f"{p.name} · {recipe_time(p)[1] or 'time not stated'}",
                      help="Quickest first, by the expected time each recipe's header states (2 CPU cores).")
try:
    base = Config.from_yaml(recipe)
except MinbertError as e:
    st.error(f"This recipe does not load, fix the file first: {e}")
    st.stop()
if base.description:
    st.caption(base.description)

fields = [f for f in recipe_fields(base) if f.key not in HIDDEN_FIELDS]
by_key = {f.key: f for f in fields}
prefix = recipe.stem
n_gpus = gpu_count()
try:
    cluster = job_manager().cluster()
except MinbertError as e:
    st.error(f"The cluster settings do not load, fix them first: {e}")
    st.stop()
backend = st.radio("Run on", ["local", "slurm"], index=["local", "slurm"].index(cluster.backend), horizontal=True,
                   key="backend", format_func={"local": "This machine", "slurm": "Slurm cluster"}.get,
                   help=f"Defaults from {cluster.source}. Slurm jobs are submitted with sbatch from this machine.")
with st.form(f"job_form:{prefix}"):
    c1, c2, c3 = st.columns([2, 2, 1])
    name = c1.text_input("Job name", value=recipe.stem, key=f"{prefix}:job_name",
                         help="The checkpoint is saved as checkpoints/NAME (NAME-2, -3 … if taken).")
    device = c2.radio("Device", ["auto", "cpu", "cuda"], horizontal=True, key=f"{prefix}:device",
                      format_func={"auto": "Auto", "cpu": "CPU", "cuda": "GPU"}.get,
                      help="Auto uses a GPU when one is visible" + ("" if n_gpus else " (none is visible here)."))
    if backend == "local":
        gpus = c3.number_input("Processes", min_value=1, max_value=max(2, n_gpus), value=1, step=1,
                               key=f"{prefix}:gpus",
                               help="GPUs to use (more than one launches torchrun), or CPU processes (gloo) "
                                    "with Device CPU.")
        resources = None
    else:
        gpus = c3.number_input("Processes per node", min_value=1, max_value=64, value=1, step=1,
                               key=f"{prefix}:procs",
                               help="One per GPU when GPUs per node is set; CPU processes (gloo) with Device CPU.")
        r = cluster.resources
        s1, s2, s3 = st.columns(3)
        resources = {
            "nodes": s1.number_input("Nodes", min_value=1, max_value=1024, value=r.nodes, step=1, key="slurm:nodes",
                                     help="More than one runs torchrun on every node, rendezvous on the first."),
            "gpus_per_node": s2.number_input("GPUs per node", min_value=0, max_value=64, value=r.gpus_per_node,
                                             step=1, key="slurm:gpus_per_node"),
            "cpus_per_task": s3.number_input("CPUs per node", min_value=1, max_value=1024, value=r.cpus_per_task,
                                             step=1, key="slurm:cpus_per_task"),
            "mem": s1.text_input("Memory per node", value=r.mem or "", key="slurm:mem", placeholder="e.g. 32G",
                                 help="Blank: the partition's default."),
            "time": s2.text_input("Time limit", value=r.time or "", key="slurm:time", placeholder="e.g. 4:00:00",
                                  help="Blank: the partition's default. D-HH:MM:SS, HH:MM:SS or minutes."),
            "partition": s3.text_input("Partition", value=r.partition or "", key="slurm:partition",
                                       placeholder="cluster default"),
        }
    auto_resume = st.checkbox("Resume automatically if the run dies", key=f"{prefix}:auto_resume",
                              help=f"A killed worker, or a Slurm time-out, preemption or node failure, resubmits "
                                   f"the job from its last resume state (at most {cluster.max_requeues} times).")
    values = {}
    cols = st.columns(3)
    for i, key in enumerate(k for k in MAIN_FIELDS if k in by_key):
        with cols[i % 3]:
            values[key] = field_widget(by_key[key], prefix)
    sections: dict[str, list[FieldSpec]] = {}
    for spec in fields:
        if spec.key not in MAIN_FIELDS:
            sections.setdefault(spec.section.split(".")[0], []).append(spec)
    for section, specs in sections.items():
        with st.expander(f"All {section} fields" if section != "general" else "Description"):
            cols = st.columns(3)
            for i, spec in enumerate(specs):
                with cols[i % 3]:
                    values[spec.key] = field_widget(spec, prefix)
    extra = st.text_area("Extra overrides, one key=value per line", key=f"{prefix}:extra", height=80,
                         placeholder="train.lr=3e-5\ndata.limit=200")
    submitted = st.form_submit_button("Validate and launch", type="primary", disabled=MODE == "read-only")

if submitted and allowed("launched"):
    try:
        overrides = to_overrides(fields, _float_values(fields, values)) + parse_override_lines(extra)
        check_app_overrides(overrides)
        job = job_manager().submit(recipe, overrides, name=name.strip(), device=device, gpus=int(gpus),
                                   backend=backend, resources=resources, auto_resume=bool(auto_resume))
    except MinbertError as e:
        st.error(f"Not launched: {e}")
    else:
        where = f" as Slurm job {job.cluster_id}" if job.cluster_id else ""
        st.success(f"Job {job.id} ({job.name}) launched{where}; its progress is below. Overrides: "
                   + (", ".join(f"`{o}`" for o in job.overrides) or "none"))
        st.session_state["job_pick"] = job.id


# -------------------------------------------------------------------- jobs
def jobs_frame(jobs) -> pd.DataFrame:
    rows = []
    for job in jobs:
        d = job.to_dict()
        rows.append({"id": job.id, "Slurm job": job.cluster_id or "", "state": job.state, "name": job.name,
                     "progress": d["progress"], "step": f"{d['step']}/{d['total_steps'] or '?'}",
                     "ETA": "" if d["eta_s"] is None else fmt_duration(d["eta_s"]) + (
                         "" if d.get("eval_s") is not None else " + dev evaluation"),
                     "time": fmt_duration(d["duration_s"]), "recipe": Path(job.recipe).name,
                     "device": job.device + (f" ×{job.gpus}" if job.gpus > 1 else "")
                     + (f" · {job.resources.get('nodes', 1)} node(s)" if job.backend == "slurm" else ""),
                     "checkpoint": job.checkpoint})
    return pd.DataFrame(rows)


def job_details(job) -> None:
    p = job.progress()
    st.markdown(f"**Job {job.id} · {job.name}** — {job.state}")
    if job.backend == "slurm":
        st.caption(f"Slurm job {job.cluster_id or '–'}" + (f" · attempt {job.attempt + 1}" if job.attempt else "")
                   + " · " + ", ".join(f"{k} {v}" for k, v in job.resources.items() if v not in (None, "")))
    elif job.attempt:
        st.caption(f"attempt {job.attempt + 1}")
    text = {"preparing": "preparing (loading data and model)", "evaluating": "dev evaluation"}.get(
        p.phase, f"step {p.step}/{p.total_steps or '?'}, epoch {p.epoch}/{p.epochs or '?'}")
    if job.state == "running" and eta_text(p):
        text += f", {eta_text(p)}"
    st.progress(1.0 if job.state == "succeeded" else p.fraction, text=text)
    if MODE != "read-only" and job.active and st.button("Cancel this job", key=f"cancel:{job.id}"):
        if allowed("cancelled"):
            try:
                with st.spinner("Stopping…"):
                    job_manager().cancel(job.id, grace_s=5)
            except MinbertError as e:
                st.error(str(e))
            st.rerun()
    if MODE != "read-only" and job.resumable and st.button(
            "Resume this job", key=f"resume:{job.id}",
            help="Runs it again in its checkpoint, from its last resume state (python -m core.jobs resume ID)."):
        if allowed("resumed"):
            try:
                job_manager().resume(job.id)
            except MinbertError as e:
                st.error(str(e))
            else:
                st.rerun()
    if job.message and job.state in ("failed", "cancelled"):
        (st.error if job.state == "failed" else st.info)(job.message.splitlines()[0])
    left, right = st.columns(2)
    with left:
        if p.losses:
            losses = pd.DataFrame(p.losses)
            fig = px.line(losses, x="step", y="loss", color="task", height=300, title="Training loss per task")
            fig.update_layout(margin=dict(t=40, b=10))
            st.plotly_chart(fig, width="stretch", key=f"loss:{job.id}")
        else:
            st.caption("Loss curves appear with the first logged steps.")
    with right:
        if p.evals:
            evals = pd.DataFrame(p.evals)
            keep = [c for c in ["epoch", "step", "score", "sst_acc", "sst_macro_f1", "qqp_acc", "qqp_f1",
                                "sts_pearson", "sts_spearman"] if c in evals]
            st.markdown("Dev metrics per epoch")
            st.dataframe(evals[keep], hide_index=True, width="stretch")
            if {"qqp_acc", "qqp_f1"} & set(keep):
                st.caption(QUORA_CAPTION)
        else:
            st.caption("Dev metrics appear after each epoch.")
    st.markdown("Log (last lines)")
    st.code(job.log_tail(25) or "(empty)", language=None)
    with st.expander("Command and overrides"):
        st.code(" ".join(job.command) or "(not started yet)", language="bash")
        st.write(job.overrides)


@st.fragment(run_every=2)
def jobs_panel() -> None:
    jm = job_manager()
    jobs = jm.refresh()
    if not jobs:
        st.info("No jobs yet: launch one above.")
        return
    st.dataframe(jobs_frame(jobs), hide_index=True, width="stretch", key="jobs_table",
                 column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0.0,
                                                                            max_value=1.0, format="percent"),
                                "state": st.column_config.TextColumn("state", width=100),
                                "checkpoint": st.column_config.TextColumn("checkpoint", width="large")})
    ids = [j.id for j in jobs]
    if st.session_state.get("job_pick") not in ids:
        st.session_state["job_pick"] = ids[0]
    pick = st.selectbox("Job details", ids, key="job_pick",
                        format_func=lambda i: next(f"{j.id} · {j.name} ({j.state})" for j in jobs if j.id == i))
    job_details(next(j for j in jobs if j.id == pick))


st.subheader("Jobs")
jobs_panel()

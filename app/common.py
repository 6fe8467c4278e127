"""What every page of the app shares: paths, cached models, checkpoint choices, messages.

Pages stay thin: the work happens in ``core/`` and ``analysis/``; this module only adds
Streamlit caching and presentation. Every cache of a model or of its outputs is keyed
by the checkpoint's content (:func:`checkpoint_key`, a hash of its files), never by its
name alone, so a checkpoint that a training job rewrites is loaded and computed afresh.

``streamlit run app/main.py`` puts only app/ on ``sys.path``; app/main.py adds the
repository root, once, before any page imports ``core`` or ``analysis``.

Environment: ``MINBERT_CHECKPOINTS`` (where checkpoints live, default ``checkpoints/``)
and ``MINBERT_JOBS_ROOT`` (job database and job checkpoints, default the same).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import streamlit as st

from analysis.checkpoints import (PRETRAINED, SHIPPED, checkpoint_hash, checkpoints_root, has_weights,
                                  list_checkpoints, resolve_checkpoint, results_tasks, weights_missing)
from core.paths import REPO
from core.tasks import QUORA_NOTE, TASK_NAMES, TASK_TITLES
from core.errors import MinbertError
from core.jobs import Job, JobManager, fmt_duration  # fmt_duration: the one duration format, core's
from core.model.checkpoint import checkpoint_tasks as _served_by_checkpoint
from core.experiments.study import STUDY_PLAN, load_plan

ROOT = REPO   # the repository root: core.paths owns it
STARTER_RECIPE = ROOT / "configs" / "starter.yaml"
QUORA_CAPTION = f":material/info: {QUORA_NOTE}"

__all__ = ["PRETRAINED", "ROOT", "SHIPPED", "STARTER_RECIPE", "TASK_NAMES", "TASK_TITLES",
           "QUORA_CAPTION", "MinbertError", "page_setup", "checkpoints_root", "jobs_root", "job_manager",
           "load_model", "checkpoint_key", "serving_fast", "serving_int8", "serving_mode", "serving_toggle", "preload_default_model", "model_choices", "default_models", "checkpoint_tasks", "has_weights", "weights_missing", "results_only_checkpoints", "offered_tasks", "served_tasks", "trained_checkpoints",
           "fmt_duration", "latest_job", "resolve_checkpoint", "STUDY_PLAN", "study_plan", "study_texts",
           "picker_choices", "runs_signature", "run_tables", "pick_run", "eta_text"]


@st.cache_resource(show_spinner=False, max_entries=2)
def study_plan(plan_text: str):
    """The repository's study plan (configs/study.yaml), checked; cached by its content
    (checking builds every row's recipe: seconds)."""
    return load_plan(STUDY_PLAN)


def study_texts() -> tuple[str, str] | None:
    """The study plan's text and its results.jsonl's text (empty before any run): the
    cache keys of whatever a page derives from the study. None without a plan."""
    if not STUDY_PLAN.is_file():
        return None
    plan_text = STUDY_PLAN.read_text()
    results = study_plan(plan_text).out / "results.jsonl"
    return plan_text, results.read_text() if results.is_file() else ""


def page_setup(title: str, icon: str = ":material/psychology:") -> None:
    """Tab title and wide layout (the navigation in app/main.py sets them too)."""
    st.set_page_config(page_title=f"{title} · minBERT Studio", page_icon=icon, layout="wide")


# ----------------------------------------------------------------- jobs
def jobs_root() -> Path:
    return Path(os.environ.get("MINBERT_JOBS_ROOT") or checkpoints_root())


def job_manager() -> JobManager:
    """A manager on the jobs root (cheap: the state lives in SQLite, not here)."""
    return JobManager(jobs_root())


def eta_text(progress) -> str:
    """What is left of a running job, the final dev evaluation included: core.jobs.manager'
    ``Progress.eta_s`` adds the last dev evaluation's duration, or (before the run has
    timed one, ``eval_estimated``) its estimate from the start event's sizes."""
    eval_s, estimated = getattr(progress, "eval_s", None), getattr(progress, "eval_estimated", False)
    if progress.phase == "evaluating":
        if progress.eta_s is None or eval_s is None:
            return "final dev evaluation running"
        return (f"final dev evaluation, about {fmt_duration(progress.eta_s)} left"
                + (" (estimated)" if estimated else ""))
    if progress.eta_s is None:
        return ""
    if eval_s is not None:
        how = f"estimated {fmt_duration(eval_s)}" if estimated else f"{fmt_duration(eval_s)} last time"
        return f"about {fmt_duration(progress.eta_s)} left, dev evaluation included ({how})"
    return f"about {fmt_duration(progress.eta_s)} of training left, then the final dev evaluation"


def latest_job(recipe: Path) -> Job | None:
    """The newest job started from ``recipe``, if any."""
    recipe = recipe.resolve()
    for job in job_manager().list():
        if Path(job.recipe) == recipe:
            return job
    return None


# --------------------------------------------------------------- models
@st.cache_resource(max_entries=6, show_spinner=False)
def _load_model(path: str, content: str, quantize: str | None = None):
    from core.model.multitask import MultitaskBert
    return MultitaskBert.load(path, quantize=quantize)


def checkpoint_key(name: str) -> str:
    """The content hash of a checkpoint choice (its weights, config and tokenizer files;
    core/evaluation/cache.py): the key of every cache of a model or of its outputs, so that a
    retrained checkpoint under the same name is never served stale. Cheap after the
    first call (file hashes are memoized while a file's size and times stay the same)."""
    return checkpoint_hash(resolve_checkpoint(name))


def load_model(name: str, serving: bool = False):
    """The model behind a checkpoint choice (``"pretrained"``, a name under the
    checkpoints root, or a path), cached across reruns and sessions.

    ``serving=True`` (the Predict page) loads it int8-quantized for fast CPU inference
    unless the sidebar's "int8 CPU inference" toggle is off (``core/model/precision.py``; every
    dev metric within 1 point of fp32, see README). Analysis pages need gradients and
    exact attention maps, so they keep the fp32 model."""
    path = resolve_checkpoint(name)
    quantize = serving_mode() if serving and serving_fast() else None
    with st.spinner(f"Loading {name}{f' ({quantize})' if quantize else ''}…"):
        return _load_model(path, checkpoint_key(name), quantize)


def serving_mode() -> str:
    """The fast serving path of this machine, by the rule training uses (core.model.precision):
    bf16 autocast where bf16 is native (AVX-512 BF16 / AMX, CUDA), int8 elsewhere."""
    from core.model.precision import resolve_mode
    return resolve_mode("auto")


def serving_fast() -> bool:
    """Whether predictions use the fast path (the sidebar toggle; on by default)."""
    return bool(st.session_state.get("serving_fast", True))


serving_int8 = serving_fast   # the earlier name


def serving_toggle() -> None:
    """Sidebar switch between the fast path (bf16 or int8) and exact fp32 predictions,
    with the path in use named under it."""
    from core.model.precision import describe_precision
    on = st.sidebar.toggle("Fast CPU inference", value=True, key="serving_fast",
                           help="bf16 autocast where the CPU runs bf16 natively (every dev metric within "
                                "0.02 points of fp32), else int8 dynamic quantization of the encoder's Linear "
                                "layers (within 1 point). Off: exact fp32.")
    st.sidebar.caption("Serving: " + (describe_precision(serving_mode()) if on else "fp32 (exact)"))


@st.cache_resource(show_spinner=False)
def preload_default_model() -> str:
    """Load (and quantize) the default model and run one prediction per task through it,
    once per server process, so the first prediction a user asks for is as fast as later
    ones. Called at the top of app/main.py on every page's first run."""
    from core.serving.predict import warm_up
    choices = model_choices()
    name = default_models(choices)[0]
    warm_up(_load_model(resolve_checkpoint(name), checkpoint_key(name), serving_mode()))
    return name


def checkpoint_tasks(name: str) -> list[str]:
    """Tasks a checkpoint choice serves, read without loading it (the model's rule,
    :func:`core.model.multitask.checkpoint_tasks`); a results-only run: the tasks it has results
    for; none for a checkpoint that cannot be read."""
    try:
        if not has_weights(name):
            return results_tasks(name)
        return _served_by_checkpoint(resolve_checkpoint(name))
    except MinbertError:
        return []


def offered_tasks(names: list[str]) -> list[str]:
    """Tasks a page offers for the picked checkpoints: those every one of them serves
    (so no page offers work a model cannot do), or, when they share none, those any
    serves."""
    per_model = [set(checkpoint_tasks(n)) for n in names]
    common = set.intersection(*per_model) if per_model else set(TASK_TITLES)
    chosen = common or set().union(*per_model)
    return [t for t in TASK_TITLES if t in chosen]


served_tasks = offered_tasks   # the earlier name (the model's own is MultitaskBert.served_tasks)


def _mean_score(name: str) -> float:
    try:
        score = json.loads((Path(resolve_checkpoint(name)) / "metrics.json").read_text()).get("mean_score")
        return float(score) if score is not None else float("-inf")
    except (MinbertError, OSError, json.JSONDecodeError, TypeError, ValueError):
        return float("-inf")


def trained_checkpoints() -> list[str]:
    """Names of checkpoints with trained heads and weights, best mean dev score first."""
    names = [n for n in list_checkpoints()
             if n != PRETRAINED and (Path(resolve_checkpoint(n)) / "model.safetensors").is_file()]
    return sorted(names, key=lambda n: (n != SHIPPED, -_mean_score(n), n))


def results_only_checkpoints() -> list[str]:
    """Runs kept without their weights (analysis.checkpoints): the analysis pages show
    their files (predictions, embedding sample) and say what needs the weights."""
    return [n for n in list_checkpoints() if n != PRETRAINED and not has_weights(n)]


def model_choices() -> list[str]:
    """Every checkpoint to pick from: trained ones (shipped one first), then pretrained."""
    return trained_checkpoints() + [PRETRAINED]


def default_models(choices: list[str]) -> list[str]:
    """The shipped checkpoint when present, else the best trained one, else pretrained."""
    return [choices[0]] if choices else [PRETRAINED]


def picker_choices(need_weights: bool) -> list[str]:
    """The checkpoint choices of a picker, in one order for every page: the shipped model,
    the user's own runs (best mean dev score first), then, unless the page needs the
    weights (Predict, attention, saliency: a results-only run could only answer "weights
    not available"), the runs kept without weights (the studies'), then ``pretrained``."""
    trained = model_choices()
    if need_weights:
        return trained
    return trained[:-1] + results_only_checkpoints() + trained[-1:]


# ------------------------------------------------------------ run groups
def runs_signature(root: Path | None = None) -> tuple:
    """Changes whenever a run's metrics or dev predictions change (the cache key of every
    table built from them)."""
    from analysis.compare import checkpoint_dirs
    root = checkpoints_root() if root is None else root
    sig = []
    for d in checkpoint_dirs(root):
        for f in [d / "metrics.json", d / "model.safetensors", *sorted((d / "predictions").glob("*-dev.csv"))]:
            if f.is_file():
                sig.append((str(f), f.stat().st_mtime_ns))
    return tuple(sig)


@st.cache_data(show_spinner="Reading checkpoints…", max_entries=8)
def _run_tables(root: str, signature: tuple):
    from analysis.compare import checkpoint_table
    from app.content import group_table, task_mean
    table = checkpoint_table(root)
    if len(table):   # one mean everywhere: of the primary dev figures a run has (a staged run's own can cover one)
        table["mean_score"] = [task_mean(r) for r in table.to_dict("records")]
    return table, group_table(table)


def run_tables(root: Path | None = None):
    """``(table, groups, signature)`` of the checkpoints root: ``table`` is
    ``analysis.compare.checkpoint_table`` (one row per run); ``groups`` the same runs one
    line per study row (``app.content.group_table``: mean ± sd over seeds, full-dev
    figures first, dev-subset ones after them, marked); both cached by ``signature``
    (:func:`runs_signature`)."""
    root = checkpoints_root() if root is None else root
    signature = runs_signature(root)
    table, groups = _run_tables(str(root), signature)
    return table, groups, signature


def pick_run(label: str, groups, key: str, default: str | None = None, container=None) -> str:
    """One run, picked in two steps where it belongs to a study row: the row (or a lone
    run), then its seed. ``groups``: a :func:`grouped_runs` frame; ``default``: a run name."""
    from app.content import run_group
    where = container or st
    names = list(groups["name"])
    runs = dict(zip(groups["name"], groups["runs"]))
    first = run_group(default)[0] if default else None
    group = where.selectbox(label, names, index=names.index(first) if first in names else 0, key=key,
                            format_func=lambda g: runs[g][0] if len(runs[g]) == 1 else f"{g} ({len(runs[g])} seeds)")
    members = list(runs[group])
    if len(members) == 1:
        return members[0]
    seeds = {m: run_group(m)[1] for m in members}
    pick = default if default in members else members[0]
    return where.selectbox(f"{label}: seed", members, index=members.index(pick), key=f"{key}:seed:{group}",
                           format_func=lambda m: f"seed {seeds[m]}")

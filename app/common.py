"""What every page of the app shares: paths, cached models, checkpoint choices, messages.

Pages stay thin: the work happens in ``core/`` and ``analysis/``; this module only adds
Streamlit caching and presentation. Models are cached with ``st.cache_resource`` keyed
by the checkpoint path and the mtime of its weights, so a checkpoint that a training job
rewrites is loaded afresh.

Environment: ``MINBERT_CHECKPOINTS`` (where checkpoints live, default ``checkpoints/``)
and ``MINBERT_JOBS_ROOT`` (job database and job checkpoints, default the same).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run app/main.py` puts only app/ on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from analysis.checkpoints import PRETRAINED, SHIPPED, checkpoints_root, list_checkpoints, resolve_checkpoint  # noqa: E402
from core.data import TASK_NAMES  # noqa: E402
from core.errors import MinbertError  # noqa: E402
from core.jobs import Job, JobManager  # noqa: E402

STARTER_RECIPE = ROOT / "configs" / "starter.yaml"
TASK_TITLES = {"sst": "Sentiment", "qqp": "Paraphrase", "sts": "Similarity"}
QUORA_CAPTION = ":material/info: all-MiniLM-L6-v2 was contrastively pre-trained on data that includes Quora duplicates."

__all__ = ["PRETRAINED", "ROOT", "SHIPPED", "STARTER_RECIPE", "TASK_NAMES", "TASK_TITLES",
           "QUORA_CAPTION", "MinbertError", "page_setup", "checkpoints_root", "jobs_root", "job_manager",
           "load_model", "serving_fast", "serving_int8", "serving_mode", "serving_toggle", "preload_default_model", "model_choices", "default_models", "checkpoint_tasks", "served_tasks", "trained_checkpoints",
           "fmt_duration", "latest_job", "resolve_checkpoint"]


def page_setup(title: str, icon: str = ":material/psychology:") -> None:
    """Tab title and wide layout (the navigation in app/main.py sets them too)."""
    st.set_page_config(page_title=f"{title} · minBERT Studio", page_icon=icon, layout="wide")


# ----------------------------------------------------------------- jobs
def jobs_root() -> Path:
    return Path(os.environ.get("MINBERT_JOBS_ROOT") or checkpoints_root())


def job_manager() -> JobManager:
    """A manager on the jobs root (cheap: the state lives in SQLite, not here)."""
    return JobManager(jobs_root())


def latest_job(recipe: Path) -> Job | None:
    """The newest job started from ``recipe``, if any."""
    recipe = recipe.resolve()
    for job in job_manager().list():
        if Path(job.recipe) == recipe:
            return job
    return None


# --------------------------------------------------------------- models
@st.cache_resource(max_entries=6, show_spinner=False)
def _load_model(path: str, stamp: float, quantize: str | None = None):
    from core.model import MultitaskBert
    return MultitaskBert.load(path, quantize=quantize)


def _stamp(path: str) -> float:
    weights = Path(path) / "model.safetensors"
    return weights.stat().st_mtime if weights.is_file() else 0.0


def load_model(name: str, serving: bool = False):
    """The model behind a checkpoint choice (``"pretrained"``, a name under the
    checkpoints root, or a path), cached across reruns and sessions.

    ``serving=True`` (the Predict page) loads it int8-quantized for fast CPU inference
    unless the sidebar's "int8 CPU inference" toggle is off (``core/quantize.py``; every
    dev metric within 1 point of fp32, see README). Analysis pages need gradients and
    exact attention maps, so they keep the fp32 model."""
    path = resolve_checkpoint(name)
    quantize = serving_mode() if serving and serving_fast() else None
    with st.spinner(f"Loading {name}{f' ({quantize})' if quantize else ''}…"):
        return _load_model(path, _stamp(path), quantize)


def serving_mode() -> str:
    """The fast serving path of this machine, by the rule training uses (core.precision):
    bf16 autocast where bf16 is native (AVX-512 BF16 / AMX, CUDA), int8 elsewhere."""
    from core.quantize import resolve_mode
    return resolve_mode("auto")


def serving_fast() -> bool:
    """Whether predictions use the fast path (the sidebar toggle; on by default)."""
    return bool(st.session_state.get("serving_fast", True))


serving_int8 = serving_fast   # the earlier name


def serving_toggle() -> None:
    """Sidebar switch between the fast path (bf16 or int8) and exact fp32 predictions,
    with the path in use named under it."""
    from core.quantize import describe_precision
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
    from core.quantize import warm_up
    choices = model_choices()
    name = default_models(choices)[0]
    path = resolve_checkpoint(name)
    warm_up(_load_model(path, _stamp(path), serving_mode()))
    return name


def _meta(name: str) -> dict:
    try:
        return json.loads((Path(resolve_checkpoint(name)) / "config.json").read_text())
    except (MinbertError, OSError, json.JSONDecodeError):
        return {}


def checkpoint_tasks(name: str) -> list[str]:
    """Tasks a checkpoint predicts without loading it: its trained heads (zero-shot
    similarity and paraphrase for ``pretrained``)."""
    if name == PRETRAINED:
        return ["qqp", "sts"]
    tasks = _meta(name).get("tasks") or []
    return [t for t in ("sst", "qqp", "sts") if t in tasks]


def served_tasks(names: list[str]) -> list[str]:
    """Tasks to offer for the picked checkpoints: those every one of them serves (so no
    page offers work a model cannot do), or, when they share none, those any serves."""
    per_model = [set(checkpoint_tasks(n)) for n in names]
    common = set.intersection(*per_model) if per_model else set(TASK_TITLES)
    chosen = common or set().union(*per_model)
    return [t for t in TASK_TITLES if t in chosen]


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


def model_choices() -> list[str]:
    """Every checkpoint to pick from: trained ones (shipped one first), then pretrained."""
    return trained_checkpoints() + [PRETRAINED]


def default_models(choices: list[str]) -> list[str]:
    """The shipped checkpoint when present, else the best trained one, else pretrained."""
    return [choices[0]] if choices else [PRETRAINED]


# ----------------------------------------------------------- formatting
def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m" if h else (f"{m}m {s:02d}s" if m else f"{s}s")

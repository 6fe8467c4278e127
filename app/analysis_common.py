"""Helpers shared by the analysis pages (4 Attention & saliency, 5 Errors, 6 Embeddings,
7 Calibration, 8 Behaviour tests).

Thin Streamlit glue over ``analysis/``: the checkpoint picker (reusing ``app.common``),
the example hand-over to the saliency view (a link: app/links.py owns the URL scheme;
the older session-state hand-over still works), and error display. Downloads are
app/exports.py.
"""
from __future__ import annotations

import streamlit as st

from core.paths import DATA_DIR
from app.common import (PRETRAINED, TASK_TITLES, MinbertError, default_models, has_weights, load_model,
                        model_choices, picker_choices, results_only_checkpoints, weights_missing)

SALIENCY_PAGE = "views/4_Attention_and_saliency.py"
EXAMPLE_KEY = "analysis_example"  # {"task", "text_a", "text_b", "checkpoint"} handed to page 4

__all__ = ["DATA_DIR", "EXAMPLE_KEY", "PRETRAINED", "TASK_TITLES", "MinbertError", "has_weights", "load_model",
           "weights_missing", "checkpoint_choices", "pick_checkpoints", "open_in_saliency", "run_safely"]


def checkpoint_choices(weights_only: bool = False) -> list[str]:
    """What the analysis pages' pickers offer, in the app's one order
    (:func:`app.common.picker_choices`): trained checkpoints (shipped first), runs kept
    without weights (results-only; left out with ``weights_only``), then ``pretrained``."""
    return picker_choices(need_weights=weights_only)


PICK_HELP = ("Run directories under the checkpoints folder{results}, plus the zero-shot pretrained encoder.")


def pick_checkpoints(key: str, label: str = "Checkpoints", max_selections: int = 2,
                     preferred: str | list[str] | None = None, weights_only: bool = False) -> list[str]:
    """A multiselect of :func:`checkpoint_choices`. ``preferred`` (a name or a list,
    e.g. from a link) replaces the selection when given; ``weights_only`` pages (those
    that run the model) offer no results-only runs and say how many they leave out."""
    choices = checkpoint_choices(weights_only)
    wanted = [preferred] if isinstance(preferred, str) else list(preferred or [])
    wanted = [c for c in wanted if c in choices][:max_selections]
    default = wanted or default_models(model_choices())
    if wanted:
        st.session_state[key] = wanted
    elif key in st.session_state:  # keep only still-existing picks across reruns
        st.session_state[key] = [c for c in st.session_state[key] if c in choices][:max_selections] or default
    hidden = len(results_only_checkpoints()) if weights_only else 0
    help_text = PICK_HELP.format(results="" if weights_only else " (results-only runs too)") + (
        f" {hidden} results-only run(s) are not offered here: this page needs the weights." if hidden else "")
    if key in st.session_state:
        return st.multiselect(label, choices, key=key, max_selections=max_selections, help=help_text)
    return st.multiselect(label, choices, default=default, key=key, max_selections=max_selections, help=help_text)


def open_in_saliency(task: str, text_a: str, text_b: str | None, checkpoint: str | None) -> None:
    """Hand an example to the Attention & saliency page and go there."""
    st.session_state[EXAMPLE_KEY] = {"task": task, "text_a": text_a, "text_b": text_b,
                                     "checkpoint": checkpoint}
    try:
        st.switch_page(SALIENCY_PAGE)
    except st.errors.StreamlitAPIException:  # page run on its own (tests): no navigation
        st.info("Open the **Attention and saliency** page: the example is filled in there.")


def run_safely(fn, *args, what: str = "", **kwargs):
    """``fn(*args, **kwargs)``, showing a MinbertError as ``st.error`` (never a traceback).
    Returns ``None`` after an error."""
    try:
        return fn(*args, **kwargs)
    except MinbertError as e:
        st.error(f"{what}: {e}" if what else str(e))
        return None

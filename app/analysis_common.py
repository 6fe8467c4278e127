"""Helpers shared by the analysis pages (4 Attention & saliency, 5 Errors, 6 Embeddings).

Thin Streamlit glue over ``analysis/``: the checkpoint picker (reusing ``app.common``),
the example hand-over from the Errors page to the saliency view, and error display.
"""
from __future__ import annotations

import streamlit as st

from app.common import (PRETRAINED, ROOT, TASK_TITLES, MinbertError, default_models, has_weights, load_model,
                        model_choices, results_only_checkpoints, weights_missing)

DATA_DIR = ROOT / "data"
SALIENCY_PAGE = "views/4_Attention_and_saliency.py"
EXAMPLE_KEY = "analysis_example"  # {"task", "text_a", "text_b", "checkpoint"} handed to page 4

__all__ = ["DATA_DIR", "EXAMPLE_KEY", "PRETRAINED", "TASK_TITLES", "MinbertError", "has_weights", "load_model", "weights_missing",
           "pick_checkpoints", "open_in_saliency", "run_safely"]


def pick_checkpoints(key: str, label: str = "Checkpoints", max_selections: int = 2,
                     preferred: str | None = None) -> list[str]:
    """A multiselect of checkpoint choices: trained ones, runs kept without weights
    (results-only), then ``pretrained``."""
    trained = model_choices()
    choices = trained[:-1] + results_only_checkpoints() + trained[-1:]
    default = [preferred] if preferred in choices else default_models(trained)
    if key in st.session_state:  # keep only still-existing picks across reruns
        st.session_state[key] = [c for c in st.session_state[key] if c in choices] or default
        return st.multiselect(label, choices, key=key, max_selections=max_selections,
                              help="Run directories under the checkpoints folder (results-only runs too), "
                                   "plus the zero-shot pretrained encoder.")
    return st.multiselect(label, choices, default=default, key=key, max_selections=max_selections,
                          help="Run directories under the checkpoints folder (results-only runs too), "
                               "plus the zero-shot pretrained encoder.")


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

"""The app's one URL query-parameter scheme: links that open an example (or a checkpoint)
on another page, and the reading of such a link back, every parameter checked.

A link is a page's URL path plus query parameters, so it can be bookmarked and shared:

    Attention_and_saliency?task=sst&a=A+gorgeous+movie.&m1=minbert-multitask&m2=study/000-mt-s0
    Predict?task=qqp&a=How+do+I+learn+Python%3F&b=What+is+the+fastest+way...&m1=minbert-multitask
    Calibration?m1=minbert-multitask&task=sst

========  ==========================================================================
``task``  a task: ``sst`` / ``qqp`` / ``sts`` (or sentiment, paraphrase, similarity)
``a``     the sentence (the first one of a pair)
``b``     the second sentence; required for pair tasks, refused for sentiment
``m1``    the first checkpoint (a name from the page's checkpoint picker)
``m2``    the second checkpoint (optional; "both models side by side")
``view``  which view of a page to open (page-specific, e.g. ``saliency`` / ``attention``)
========  ==========================================================================

Parameters this module does not know are left alone (other pages may add their own).

Building (plain functions, no Streamlit; what tests call):

    example_params("sst", text, models=("minbert-multitask",))   -> {"task": "sst", "a": ..., "m1": ...}
    example_url("saliency", "sst", text, models=(a, b))          -> "Attention_and_saliency?task=sst&a=..."

Reading (``params``: a mapping such as ``st.query_params``; ``choices``: the checkpoint
names the page offers):

    parse_example(params, choices)   -> LinkedExample | None   (None: the URL carries no example)
    parse_models(params, choices)    -> tuple of checkpoint names (m1, m2), checked
    parse_selection(params, choices, tasks) -> (checkpoint names, task or None)

Any bad parameter - an unknown checkpoint, a task that does not exist, an over-long or
empty text, a missing second sentence - raises :class:`LinkError` (a
:class:`core.errors.MinbertError`) whose message names the parameter and what to do.

In a page (Streamlit):

    example = linked_example(choices, views=("saliency", "attention"))
    if example:             # a link was opened (once per distinct link: later edits stay)
        st.session_state["my_text_key"] = example.text_a ...
    models, task = linked_selection(choices, tasks=("sst", "qqp"))   # ?m1=&m2=&task= (no text)
    page_link("saliency", "Open in Attention & saliency", task, a, b, models=(m1, m2))
    open_page("predict", task, a, b, models=(m1,))   # st.switch_page with the query
    show_query(task, a, b, models)   # keep this page's own URL in step with what it shows
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence
from urllib.parse import urlencode

from core.tasks import PAIR_TASKS, canonical_task
from core.errors import MinbertError

# page key -> (page file for st.page_link / st.switch_page, URL path Streamlit gives it)
PAGES = {
    "predict": ("views/1_Predict.py", "Predict"),
    "compare": ("views/3_Compare.py", "Compare"),
    "saliency": ("views/4_Attention_and_saliency.py", "Attention_and_saliency"),
    "errors": ("views/5_Errors.py", "Errors"),
    "embeddings": ("views/6_Embeddings.py", "Embeddings"),
    "calibration": ("views/7_Calibration.py", "Calibration"),
    "behaviour": ("views/8_Behaviour_tests.py", "Behaviour_tests"),
}
KEYS = ("task", "a", "b", "m1", "m2", "view")
MAX_MODELS = 2
MAX_NAME_CHARS = 300
_APPLIED = "_links_applied_query"


class LinkError(MinbertError):
    """A link's query parameters are not valid (the message names which and why)."""


@dataclass(frozen=True)
class LinkedExample:
    """An example a link opens: the task, its text(s), the checkpoints to show it with
    (zero, one or two) and the page view (or None)."""
    task: str
    text_a: str
    text_b: str | None
    models: tuple[str, ...] = ()
    view: str | None = None


def _max_chars() -> int:
    from core.data.inputs import MAX_TEXT_CHARS   # read at call time: the Predict limit may change
    return int(MAX_TEXT_CHARS)


def _check_text(value, key: str) -> str:
    from core.data.inputs import check_text
    if not isinstance(value, str):
        raise LinkError(f"link parameter {key!r} must be text, got {type(value).__name__}")
    try:
        return check_text(value, f"text in link parameter {key!r}", max_chars=_max_chars())
    except MinbertError as e:
        raise LinkError(str(e)) from None


def _check_task(value) -> str:
    try:
        return canonical_task(str(value))
    except MinbertError as e:
        raise LinkError(f"link parameter 'task': {e}") from None


def _check_models(models: Sequence[str], choices: Sequence[str] | None) -> tuple[str, ...]:
    models = tuple(str(m) for m in models if m not in (None, ""))
    if len(models) > MAX_MODELS:
        raise LinkError(f"a link names at most {MAX_MODELS} checkpoints (m1, m2), got {len(models)}")
    if len(set(models)) != len(models):
        raise LinkError(f"link parameters m1 and m2 name the same checkpoint {models[0]!r}: name two different ones")
    for key, name in zip(("m1", "m2"), models):
        if len(name) > MAX_NAME_CHARS:
            raise LinkError(f"link parameter {key!r} is {len(name):,} characters long: not a checkpoint name")
        if choices is not None and name not in choices:
            shown = ", ".join(list(choices)[:8]) + (", ..." if len(choices) > 8 else "")
            raise LinkError(f"link parameter {key!r}: unknown checkpoint {name!r}; this app has {len(choices)} "
                            f"to choose from ({shown})")
    return models


def _check_view(view, views: Sequence[str] | None) -> str | None:
    if view in (None, ""):
        return None
    if views is None or str(view) not in views:
        allowed = ", ".join(views) if views else "none on this page"
        raise LinkError(f"link parameter 'view': unknown view {view!r} (allowed: {allowed})")
    return str(view)


def example_params(task: str, text_a: str, text_b: str | None = None, models: Sequence[str] = (),
                   view: str | None = None, choices: Sequence[str] | None = None,
                   views: Sequence[str] | None = None) -> dict[str, str]:
    """The query parameters of a link to an example, checked as :func:`parse_example`
    checks them (so a link this builds always opens)."""
    task = _check_task(task)
    params = {"task": task, "a": _check_text(text_a, "a")}
    if task in PAIR_TASKS:
        params["b"] = _check_text(text_b, "b")
    elif text_b not in (None, ""):
        raise LinkError("link parameter 'b' (a second sentence) is only for pair tasks (qqp, sts)")
    params.update(zip(("m1", "m2"), _check_models(models, choices)))
    view = _check_view(view, views if views is not None else ([view] if view else None))
    if view:
        params["view"] = view
    return params


def model_params(models: Sequence[str], task: str | None = None) -> dict[str, str]:
    """Query parameters naming checkpoints only (and a task), e.g. for the Calibration page."""
    params = dict(zip(("m1", "m2"), _check_models(models, None)))
    if task:
        params["task"] = _check_task(task)
    return params


def page_url(page: str, params: Mapping[str, str]) -> str:
    """A page's URL path with ``params`` as its query string (relative to the app's root)."""
    if page not in PAGES:
        raise LinkError(f"unknown page {page!r}; pages with links: {', '.join(PAGES)}")
    return PAGES[page][1] + ("?" + urlencode(dict(params)) if params else "")


def example_url(page: str, task: str, text_a: str, text_b: str | None = None, models: Sequence[str] = (),
                view: str | None = None) -> str:
    """A shareable link (relative URL) that opens an example on ``page``."""
    return page_url(page, example_params(task, text_a, text_b, models, view))


def _get(params: Mapping, key: str):
    value = params.get(key)
    if isinstance(value, (list, tuple)):   # a repeated key: the last one, as st.query_params does
        value = value[-1] if value else None
    return value


def parse_models(params: Mapping, choices: Sequence[str] | None) -> tuple[str, ...]:
    """The checkpoints a link names (m1, m2), each one of ``choices``."""
    return _check_models([_get(params, k) for k in ("m1", "m2")], choices)


def parse_example(params: Mapping, choices: Sequence[str] | None = None,
                  views: Sequence[str] | None = None) -> LinkedExample | None:
    """The example a link carries, every parameter checked (:class:`LinkError`); None
    when the query has neither ``task`` nor ``a`` (the page was opened without one)."""
    if _get(params, "task") is None and _get(params, "a") is None:
        return None
    if _get(params, "a") is None:
        raise LinkError("the link has a 'task' but no text: add the parameter 'a' (the sentence)")
    task = _check_task(_get(params, "task") if _get(params, "task") is not None else "sst")
    text_a = _check_text(_get(params, "a"), "a")
    text_b = _get(params, "b")
    if task in PAIR_TASKS:
        if text_b is None:
            raise LinkError(f"task {task} is a sentence pair: the link needs the second sentence as parameter 'b'")
        text_b = _check_text(text_b, "b")
    elif text_b not in (None, ""):
        raise LinkError("link parameter 'b' (a second sentence) is only for pair tasks (qqp, sts)")
    else:
        text_b = None
    return LinkedExample(task, text_a, text_b, parse_models(params, choices), _check_view(_get(params, "view"), views))


# ------------------------------------------------------------------ Streamlit
def _query_signature(params: Mapping) -> str:
    return urlencode(sorted((k, str(_get(params, k))) for k in KEYS if _get(params, k) is not None))


def linked_example(choices: Sequence[str] | None, views: Sequence[str] | None = None) -> LinkedExample | None:
    """The example in this page's URL, the first time the page runs with that URL (so
    edits made afterwards are not overwritten on every rerun); None otherwise. A bad
    link is shown as one ``st.error`` naming the parameter, and the page goes on without it."""
    import streamlit as st
    params = st.query_params
    signature = _query_signature(params)
    if not signature or st.session_state.get(_APPLIED) == signature:
        return None
    st.session_state[_APPLIED] = signature
    try:
        return parse_example(params, choices, views)
    except LinkError as e:
        st.error(f"This link could not be opened: {e}", icon=":material/link_off:")
        return None


def linked_models(choices: Sequence[str] | None) -> tuple[str, ...]:
    """The checkpoints (m1, m2) in this page's URL, the first time the page runs with it;
    () otherwise or after a bad link (shown as one ``st.error``)."""
    import streamlit as st
    signature = _query_signature(st.query_params)
    if not signature or st.session_state.get(_APPLIED) == signature:
        return ()
    st.session_state[_APPLIED] = signature
    try:
        return parse_models(st.query_params, choices)
    except LinkError as e:
        st.error(f"This link could not be opened: {e}", icon=":material/link_off:")
        return ()


def parse_selection(params: Mapping, choices: Sequence[str] | None,
                    tasks: Sequence[str] | None = None) -> tuple[tuple[str, ...], str | None]:
    """(checkpoints, task) of a link that names checkpoints and optionally a task (the
    Calibration page's ``?m1=&task=``); the task must be one of ``tasks`` when given."""
    models = parse_models(params, choices)
    task = _get(params, "task")
    if task is None:
        return models, None
    task = _check_task(task)
    if tasks is not None and task not in tasks:
        raise LinkError(f"link parameter 'task': this page shows {', '.join(tasks)}, not {task}")
    return models, task


def linked_selection(choices: Sequence[str] | None,
                     tasks: Sequence[str] | None = None) -> tuple[tuple[str, ...], str | None]:
    """:func:`parse_selection` of this page's URL, the first time the page runs with it;
    ((), None) otherwise or after a bad link (shown as one ``st.error``)."""
    import streamlit as st
    signature = _query_signature(st.query_params)
    if not signature or st.session_state.get(_APPLIED) == signature:
        return (), None
    st.session_state[_APPLIED] = signature
    try:
        return parse_selection(st.query_params, choices, tasks)
    except LinkError as e:
        st.error(f"This link could not be opened: {e}", icon=":material/link_off:")
        return (), None


def show_query(params: Mapping[str, str]) -> None:
    """Put ``params`` (from :func:`example_params` / :func:`model_params`) in this page's
    URL, so the address bar always links to what the page shows; marks them as applied."""
    import streamlit as st
    params = {k: v for k, v in params.items() if v is not None}
    current = {k: _get(st.query_params, k) for k in KEYS if _get(st.query_params, k) is not None}
    st.session_state[_APPLIED] = _query_signature(params)
    if current != params:
        for key in [k for k in KEYS if k in st.query_params and k not in params]:
            del st.query_params[key]
        st.query_params.update(params)


def page_link(page: str, label: str, params: Mapping[str, str], icon: str | None = ":material/open_in_new:",
              help: str | None = None) -> None:
    """``st.page_link`` to ``page`` with ``params`` as its query (a real link: it can be
    opened in a new tab and shared)."""
    import streamlit as st
    if page not in PAGES:
        raise LinkError(f"unknown page {page!r}; pages with links: {', '.join(PAGES)}")
    try:
        st.page_link(PAGES[page][0], label=label, icon=icon, help=help, query_params=dict(params))
    except st.errors.StreamlitAPIException:   # a page run on its own (tests): no navigation, a plain link
        st.markdown(f"[{label}]({page_url(page, params)})", help=help)


def open_page(page: str, params: Mapping[str, str]) -> None:
    """Go to ``page`` now (``st.switch_page``) with ``params`` as its query; a page run on
    its own (tests, no navigation) gets an info line with the link instead."""
    import streamlit as st
    if page not in PAGES:
        raise LinkError(f"unknown page {page!r}; pages with links: {', '.join(PAGES)}")
    try:
        st.switch_page(PAGES[page][0], query_params=dict(params))
    except st.errors.StreamlitAPIException:
        st.info(f"Open [{PAGES[page][1].replace('_', ' ')}]({page_url(page, params)}) with this example.")


def example_links(task: str, text_a: str, text_b: str | None, models: Sequence[str],
                  pages: Sequence[str] = ("saliency", "predict")) -> None:
    """Links that open one example on the Attention & saliency and Predict pages with the
    given checkpoints (both side by side when two); a text the link cannot carry (too
    long) is said once instead."""
    import streamlit as st
    titles = {"saliency": "Attention & saliency", "predict": "Predict", "errors": "Errors"}
    try:
        params = example_params(task, text_a, text_b, models)
    except LinkError as e:
        st.caption(f"No link for this example: {e}")
        return
    cols = st.columns(len(pages))
    for col, page in zip(cols, pages):
        with col:
            page_link(page, f"Open in {titles.get(page, page)}", params)

"""app/links.py: the URL query scheme builds links that read back, and refuses bad ones
with one clear message naming the parameter."""
from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from app import links as L
from core.errors import MinbertError
from core.data.inputs import MAX_TEXT_CHARS

CHOICES = ["minbert-multitask", "study/000-mt-s0", "pretrained"]


def _query(url: str) -> dict:
    return dict(parse_qsl(urlsplit(url).query))


def test_a_link_reads_back_as_the_same_example():
    url = L.example_url("saliency", "paraphrase", "How do I cook rice?", "What's the best way to cook rice & beans?",
                        models=("minbert-multitask", "study/000-mt-s0"), view="attention")
    assert url.startswith("Attention_and_saliency?")
    params = _query(url)
    assert params == {"task": "qqp", "a": "How do I cook rice?", "b": "What's the best way to cook rice & beans?",
                      "m1": "minbert-multitask", "m2": "study/000-mt-s0", "view": "attention"}
    example = L.parse_example(params, CHOICES, views=("saliency", "attention"))
    assert example == L.LinkedExample("qqp", "How do I cook rice?", "What's the best way to cook rice & beans?",
                                      ("minbert-multitask", "study/000-mt-s0"), "attention")


def test_no_example_in_the_url_is_none_and_a_repeated_key_takes_the_last():
    assert L.parse_example({}, CHOICES) is None
    assert L.parse_example({"other": "x"}, CHOICES) is None      # parameters of other pages are left alone
    example = L.parse_example({"task": ["sst", "sts"], "a": "x", "b": "y"}, CHOICES)
    assert example.task == "sts"


@pytest.mark.parametrize("params, message", [
    ({"task": "poetry", "a": "x"}, "link parameter 'task': Unknown task 'poetry'"),
    ({"task": "sst", "a": "x" * (MAX_TEXT_CHARS + 1)}, f"the limit is {MAX_TEXT_CHARS:,} characters"),
    ({"task": "sst", "a": "   "}, "'a' is empty"),
    ({"task": "sst"}, "no text: add the parameter 'a'"),
    ({"task": "qqp", "a": "x"}, "needs the second sentence as parameter 'b'"),
    ({"task": "sst", "a": "x", "b": "y"}, "'b' (a second sentence) is only for pair tasks"),
    ({"task": "sst", "a": "x", "m1": "nope"}, "'m1': unknown checkpoint 'nope'; this app has 3"),
    ({"task": "sst", "a": "x", "m1": "pretrained", "m2": "pretrained"}, "name the same checkpoint"),
    ({"task": "sst", "a": "x", "m1": "y" * 400}, "not a checkpoint name"),
    ({"task": "sst", "a": "x", "view": "3d"}, "unknown view '3d'"),
])
def test_bad_links_are_one_clear_error(params, message):
    with pytest.raises(L.LinkError, match=message.replace("(", r"\(").replace(")", r"\)")):
        L.parse_example(params, CHOICES, views=("saliency", "attention"))
    assert issubclass(L.LinkError, MinbertError)


def test_building_a_bad_link_fails_the_same_way():
    with pytest.raises(L.LinkError, match="unknown page"):
        L.page_url("nowhere", {})
    with pytest.raises(L.LinkError, match="pair tasks"):
        L.example_params("sst", "x", "y")
    with pytest.raises(L.LinkError, match="at most 2"):
        L.example_params("sst", "x", models=("a", "b", "c"))


def test_selection_links_for_the_calibration_page():
    params = L.model_params(["minbert-multitask"], task="sentiment")
    assert params == {"m1": "minbert-multitask", "task": "sst"}
    assert L.page_url("calibration", params) == "Calibration?m1=minbert-multitask&task=sst"
    assert L.parse_selection(params, CHOICES, tasks=("sst", "qqp")) == (("minbert-multitask",), "sst")
    with pytest.raises(L.LinkError, match="shows sst, qqp, not sts"):
        L.parse_selection({"m1": "pretrained", "task": "sts"}, CHOICES, tasks=("sst", "qqp"))


def test_every_linked_page_exists(repo):
    for key, (path, url_path) in L.PAGES.items():
        assert (repo / "app" / path).is_file(), key
        assert url_path == path.split("/", 1)[1].split("_", 1)[1].removesuffix(".py")   # Streamlit's URL of the file

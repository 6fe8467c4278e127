"""A fresh clone's first minute, in a real headless Chromium.

* Every page's address opened as the *first* request after a server start (a bookmark,
  a reload) shows the app's own navigation (Studio / Analysis sections, "Home"), never
  Streamlit's automatic page list.
* The Predict page serves the shipped model (checkpoints/minbert-multitask) with no
  training: a typed sentence gets its sentiment, a typed pair its paraphrase probability
  and similarity.

The servers read the repository's own checkpoints/ (as a fresh clone does); jobs go to
a temporary folder. Skips with the reason when Chromium or Playwright is missing.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from app.serve import start_server, stop_server
from conftest import CHROMIUM, type_a_sentence
from core.errors import MinbertError
from core.model.checkpoint import SHIPPED, SHIPPED_DIR

# url path of each page (st.navigation derives it from the file name) and a text it shows
PAGES = {"": "minBERT Studio", "Predict": "Predict", "Train": "Train", "Compare": "Compare checkpoints",
         "Attention_and_saliency": "Attention & saliency", "Errors": "Errors", "Embeddings": "Embeddings"}

pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
if not Path(CHROMIUM).is_file():
    pytest.skip(f"{CHROMIUM} is missing: run .ci/install-browser.sh (apt-get install -y chromium)",
                allow_module_level=True)


def _fresh_server(tmp_path: Path):
    try:
        return start_server(tmp_path, tmp_path / "streamlit.log", checkpoints=None)
    except MinbertError as e:
        pytest.fail(str(e))


@pytest.mark.parametrize("path", list(PAGES))
def test_a_deep_link_as_first_visit_shows_our_navigation(path, browser, tmp_path):
    proc, url = _fresh_server(tmp_path)
    try:
        pg = browser.new_page()
        pg.set_default_timeout(90_000)
        pg.goto(f"{url}/{path}")
        pg.get_by_text(PAGES[path]).first.wait_for()
        nav = pg.locator('[data-testid="stSidebarNav"]')
        nav.wait_for()
        text = nav.inner_text()
        # app/main.py's sections and Home page; Streamlit's automatic list would start with "main"
        assert "Studio" in text and "Analysis" in text and "Home" in text, text
        assert "main" not in text.split(), text
        pg.close()
    finally:
        stop_server(proc)


@pytest.mark.skipif(not (SHIPPED_DIR / "model.safetensors").is_file(), reason="the shipped checkpoint is missing")
def test_predict_serves_all_three_tasks_from_the_shipped_model(browser, tmp_path):
    proc, url = _fresh_server(tmp_path)
    try:
        pg = browser.new_page()
        pg.set_default_timeout(120_000)
        first = type_a_sentence(pg, url, "A gorgeous, witty, seductive movie.")
        assert SHIPPED in first and any(w in first for w in ("negative", "neutral", "positive")), first
        other = pg.get_by_role("textbox", name="Second sentence (optional: paraphrase and similarity of the pair)")
        other.click()
        other.type("What a charming, clever and sexy film.", delay=10)
        pg.get_by_text("paraphrase probability").first.wait_for()
        pg.get_by_text("/ 5").first.wait_for()
        # the pair's results come first and the first sentence's sentiment card after them
        # (issue 26), in the same script run: wait until it is drawn too
        pg.wait_for_function("document.querySelectorAll('[data-testid=\"stMetric\"]').length >= 3")
        metrics = pg.locator('[data-testid="stMetric"]').all_inner_texts()
        assert len(metrics) == 3 and all(SHIPPED in m for m in metrics), metrics
        assert not pg.locator('[data-testid="stException"]').count()
        assert not pg.locator('[data-testid="stAlertContentError"]').count()
        pg.close()
    finally:
        stop_server(proc)

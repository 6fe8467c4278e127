"""Linked views and downloads in a real headless Chromium: a click on a UMAP/PCA point of
the Embeddings page opens that sentence in Attention & saliency with both models (through
the URL, app/links.py), a shared link opens the same view, and figures / tables download
as PNG, SVG and CSV (app/exports.py).

Needs Debian's ``chromium`` and Playwright for Python; skips with the reason otherwise.
"""
from __future__ import annotations

import shutil
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from app.serve import start_server, stop_server
from conftest import CHROMIUM
from core.errors import MinbertError

playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
expect = playwright_api.expect
if not Path(CHROMIUM).is_file():
    pytest.skip(f"{CHROMIUM} is missing: run .ci/install-browser.sh (apt-get install -y chromium)",
                allow_module_level=True)

CHART = '[data-testid="stPlotlyChart"]'


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("e2e-linked")
    shutil.copytree(tiny_checkpoint, root / "tiny")
    shutil.copytree(tiny_checkpoint, root / "other")
    try:
        proc, url = start_server(root, root / "streamlit.log")
    except MinbertError as e:
        pytest.fail(str(e))
    yield url
    stop_server(proc)


def _no_exception(pg) -> None:
    assert not pg.locator('[data-testid="stException"]').count()


def _click_first_point(pg) -> None:
    """Click the first point of the first chart (its pixel position from plotly's axes)."""
    chart = pg.locator(CHART).first
    chart.scroll_into_view_if_needed()
    time.sleep(1)
    pos = pg.evaluate("""() => {
      const gd = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
      const fl = gd._fullLayout, tr = gd._fullData[0], r = gd.getBoundingClientRect();
      return {x: fl.xaxis.l2p(tr.x[0]) + fl._size.l + r.left, y: fl.yaxis.l2p(tr.y[0]) + fl._size.t + r.top};
    }""")
    pg.mouse.click(pos["x"], pos["y"])


def _download(pg, name: str, tmp_path: Path) -> bytes:
    with pg.expect_download() as info:
        pg.get_by_role("button", name=name, exact=True).first.click()
    target = tmp_path / info.value.suggested_filename
    info.value.save_as(target)
    return target.read_bytes()


def test_a_clicked_point_opens_its_sentence_for_both_models(server, browser, tmp_path):
    url = server
    pg = browser.new_page()
    pg.set_default_timeout(180_000)
    pg.goto(url)                                    # the entry point first (the app's navigation)
    pg.get_by_text("minBERT Studio").first.wait_for()

    pg.goto(f"{url}/Embeddings?m1=tiny&m2=other")  # a link picks both checkpoints
    pg.get_by_text("PCA", exact=True).click()
    size = pg.get_by_role("spinbutton", name="Sample size")
    size.fill("20")
    size.press("Enter")
    pg.get_by_text("tiny: PCA of 20 sentences").first.wait_for()
    pg.get_by_text("other: PCA of 20 sentences").first.wait_for()
    _no_exception(pg)
    _click_first_point(pg)
    selected = pg.locator('[data-testid="stMarkdownContainer"]', has_text="Selected:").first
    selected.wait_for()
    sentence = selected.inner_text().split("Selected:", 1)[1].strip()
    assert sentence
    pg.get_by_text("Nearest neighbours of the selected sentence among the 20 sampled").first.wait_for()

    png = _download(pg, "PNG", tmp_path)           # the projection as a picture
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pg.get_by_role("link", name="Open in Attention & saliency").first.click()
    pg.wait_for_url("**/Attention_and_saliency?**")
    query = parse_qs(urlsplit(pg.url).query)
    assert query["m1"] == ["tiny"] and query["m2"] == ["other"] and query["a"] == [sentence]
    pg.get_by_text("Blue raises the explained output").first.wait_for()
    expect(pg.get_by_role("textbox", name="Sentence")).to_have_value(sentence, timeout=60_000)
    _no_exception(pg)

    svg = _download(pg, "SVG", tmp_path)           # the saliency figure, both models on one scale
    texts = " ".join(t.text or "" for t in ET.fromstring(svg).iter() if t.tag.endswith("text"))
    assert "tiny" in texts and "other" in texts
    csv = _download(pg, "CSV", tmp_path).decode("utf-8")
    assert csv.startswith("checkpoint,") and "tiny" in csv and "other" in csv

    shared = pg.url                                 # the address opens the same view in a new tab
    again = browser.new_page()
    again.set_default_timeout(180_000)
    again.goto(shared)
    again.get_by_text("Blue raises the explained output").first.wait_for()
    expect(again.get_by_role("textbox", name="Sentence")).to_have_value(sentence, timeout=60_000)
    _no_exception(again)
    again.close()
    pg.close()

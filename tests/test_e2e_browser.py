"""End to end, in a real headless Chromium: start `streamlit run app/main.py`, type a
sentence and see a prediction, launch a tiny training job and see it finish, look at
the comparison. Screenshots (of this test's tiny checkpoint, for looking into a failure)
go to a temporary folder: a test run never writes into the tree. The README's pictures,
of the shipped model and the real study runs, come from ``python docs/screenshots.py``,
which no test runs.

Needs Debian's ``chromium`` (``.ci/install-browser.sh``) and Playwright for Python;
skips with the reason when either is missing.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest

from app.serve import start_server, stop_server
from conftest import CHROMIUM, TINY, type_a_sentence
from core.errors import MinbertError
from core.jobs.manager import JobManager

SHOTS = Path(tempfile.mkdtemp(prefix="minbert-shots-"))

pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
if not Path(CHROMIUM).is_file():
    pytest.skip(f"{CHROMIUM} is missing: run .ci/install-browser.sh (apt-get install -y chromium)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("e2e")
    shutil.copytree(tiny_checkpoint, root / "tiny")
    try:
        proc, url = start_server(root, root / "streamlit.log")
    except MinbertError as e:
        pytest.fail(str(e))
    yield url, root
    jm = JobManager(root)
    for job in jm.list(["queued", "running"]):
        jm.cancel(job.id, grace_s=5)
    stop_server(proc)


def screenshot(pg, name: str, height: int) -> None:
    """The whole page: Streamlit scrolls inside its own container, so grow the viewport."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.set_viewport_size({"width": 1400, "height": height})
    pg.evaluate("document.querySelectorAll('*').forEach(e => { if (e.scrollTop) e.scrollTop = 0; })")
    time.sleep(1.5)
    pg.screenshot(path=str(SHOTS / name))
    pg.set_viewport_size({"width": 1400, "height": 1000})


def test_predict_train_compare_in_a_browser(server, browser):
    url, root = server
    pg = browser.new_page()
    pg.set_default_timeout(120_000)

    # --- Home first, as a person would (a fresh server serves deep links with the
    # plain pages/ navigation until the entry point has run once)
    pg.goto(url)
    pg.get_by_text("minBERT Studio").first.wait_for()
    pg.locator('[data-testid="stDataFrame"]').first.wait_for()   # the checkpoints table
    pg.get_by_role("link", name="Predict").first.wait_for()      # the navigation built by app/main.py

    # --- Predict: type a sentence, see its sentiment
    metric = type_a_sentence(pg, url, "A gorgeous, witty, seductive movie.", delay=15)
    assert "tiny" in metric and any(label in metric for label in ("negative", "neutral", "positive", "uncertain"))
    screenshot(pg, "predict.png", 1150)

    # --- Train: launch a tiny job from the form, watch it finish
    pg.goto(f"{url}/Train")
    pg.get_by_role("textbox", name="Job name").fill("browser-job")
    pg.get_by_role("textbox", name="Extra overrides, one key=value per line").fill("\n".join(TINY))
    pg.get_by_role("button", name="Validate and launch").click()
    pg.get_by_text("Job 1 (browser-job) launched").wait_for()
    pg.get_by_text("browser-job — succeeded").wait_for(timeout=300_000)
    job = JobManager(root).get(1)
    assert job.state == "succeeded", job.message
    # .first: while the live fragment reruns, its stale copy can still be in the page
    pg.get_by_text("Dev metrics per epoch").first.wait_for()
    screenshot(pg, "train.png", 2450)

    # --- Compare: the shipped-in-test checkpoint and the one just trained
    pg.goto(f"{url}/Compare")
    pg.get_by_text("Two checkpoints side by side").wait_for()
    pg.get_by_text("Quora duplicates").first.wait_for()
    pg.locator('[data-testid="stVegaLiteChart"] svg').nth(2).wait_for()   # the overview, two confusion matrices
    screenshot(pg, "compare.png", 1550)
    assert not pg.locator('[data-testid="stException"]').count()

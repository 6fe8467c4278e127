"""The app at the scale the project itself produces (a hundred runs), in a real headless
Chromium:

* Compare with every run shown: one chart line per study row (the row's seeds as dots
  beside its mean ± sd), a legend of run kinds only, the Quora caveat printed once, no
  exception; on a 390-px-wide screen the chart fits the screen (the page does not
  scroll sideways). The server reads a temporary checkpoints folder: the shipped model and
  the repository's study runs, each copied under as many row names as make 100 runs at
  least (the study at its largest had 107), so the check does not depend on how many runs
  a checkout keeps.
* Predict, on the repository's own checkpoints, reads a 3,000-character review through
  windows and says how much it read.

How long Compare takes to open is measured by ``python docs/page_timing.py`` (a figure,
not a test: it depends on the machine's load). Skips with the reason when Chromium or
Playwright is missing.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from app.serve import start_server, stop_server, wait_settled
from conftest import CHROMIUM, REPO
from core.errors import MinbertError
from core.data.inputs import MAX_TEXT_CHARS

pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
if not Path(CHROMIUM).is_file():
    pytest.skip(f"{CHROMIUM} is missing: run .ci/install-browser.sh (apt-get install -y chromium)",
                allow_module_level=True)

CHECKPOINTS = REPO / "checkpoints"
SCALE = 100   # runs at least: the study at its largest had 107
KEPT = ("metrics.json", "config.json", "predictions")


def scaled_root(root: Path) -> Path:
    """The shipped model (a link) and each repository study run under as many row names
    as make ``SCALE`` runs at least."""
    import math
    import shutil
    root.mkdir()
    (root / "minbert-multitask").symlink_to(CHECKPOINTS / "minbert-multitask", target_is_directory=True)
    runs = sorted(r for r in (CHECKPOINTS / "study").glob("*-s*") if (r / "metrics.json").is_file())
    for run in runs:
        row, seed = run.name.rsplit("-s", 1)
        for k in range(math.ceil(SCALE / len(runs))):
            dest = root / "study" / f"{row}-c{k}-s{seed}"
            dest.mkdir(parents=True)
            for name in KEPT:
                src = run / name
                if src.is_dir():
                    shutil.copytree(src, dest / name)
                elif src.is_file():
                    shutil.copy(src, dest / name)
    return root


def expected(root: Path) -> tuple[int, int]:
    """(chart lines, runs), counted from the directories: a study folder's
    ``<row>-s<seed>`` runs are one line per row; any other run is a line of its own."""
    lines, runs = set(), 0
    for d in sorted(root.iterdir()):
        if (d / "metrics.json").is_file():
            lines.add(d.name)
            runs += 1
        elif d.is_dir() and not d.name.startswith("."):
            names = [r.name for r in d.iterdir() if (r / "metrics.json").is_file()]
            lines |= {f"{d.name}/{n.rsplit('-s', 1)[0]}" for n in names}
            runs += len(names)
    return len(lines), runs


def start(root: Path, checkpoints):
    try:
        return start_server(root, root / "streamlit.log", checkpoints=checkpoints)
    except MinbertError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    if not any((CHECKPOINTS / "study").glob("*/metrics.json")):
        pytest.skip("no study runs in this checkout's checkpoints/study")
    jobs = tmp_path_factory.mktemp("scale")
    root = scaled_root(jobs / "checkpoints")
    proc, url = start(jobs, root)
    yield url, root
    stop_server(proc)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    jobs = tmp_path_factory.mktemp("repo")
    proc, url = start(jobs, None)
    yield url
    stop_server(proc)


CHART = '[data-testid="stVegaLiteChart"]'


def open_compare(pg, url: str) -> None:
    pg.goto(url)
    pg.get_by_text("minBERT Studio").first.wait_for()
    pg.goto(f"{url}/Compare")
    pg.locator(f"{CHART} svg").first.wait_for()
    wait_settled(pg)


def axis_labels(pg) -> list[int]:
    """How many labels each axis of the overview chart has."""
    return pg.locator(CHART).first.evaluate(
        "c => Array.from(c.querySelectorAll('g.role-axis')).map(a => a.querySelectorAll('.role-axis-label text').length)")


def test_compare_shows_every_run_readably(scaled, browser):
    url, root = scaled
    lines, runs = expected(root)
    assert runs >= 100
    pg = browser.new_page()
    pg.set_default_timeout(180_000)
    open_compare(pg, url)
    pg.locator(".st-key-cmp_all").get_by_text("All", exact=False).click()
    pg.locator(".st-key-cmp_seeds").get_by_text("Every seed").click()
    wait_settled(pg)
    pg.get_by_text(f"{lines} lines, {runs} runs").wait_for()
    assert lines in axis_labels(pg), (axis_labels(pg), lines)      # one label per line, none per run
    legend = pg.locator(CHART).first.locator(".role-legend-label text").all_inner_texts()
    assert 1 <= len(legend) <= 7, legend                          # kinds of run: never one entry per run
    assert pg.get_by_text("Quora duplicates").count() == 1
    assert not pg.locator('[data-testid="stException"]').count()
    pg.close()


def test_compare_fits_a_phone_screen(scaled, browser):
    url, _ = scaled
    pg = browser.new_page()
    pg.set_viewport_size({"width": 390, "height": 844})
    pg.set_default_timeout(180_000)
    open_compare(pg, url)
    assert pg.evaluate("document.documentElement.scrollWidth") <= 390
    box = pg.locator(f"{CHART} svg").first.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390 and box["width"] >= 300, box
    assert not pg.locator('[data-testid="stException"]').count()
    pg.close()


@pytest.mark.skipif(MAX_TEXT_CHARS < 3_000, reason=f"core.data.inputs.MAX_TEXT_CHARS is {MAX_TEXT_CHARS:,}: a 3,000-"
                    "character review is refused until it is raised to the windowed path's bound (issue 26)")
def test_a_3000_character_review_gets_a_prediction(server, browser):
    pg = browser.new_page()
    pg.set_default_timeout(180_000)
    pg.goto(f"{server}/Predict")
    pg.get_by_role("textbox", name="Sentence", exact=True).wait_for()
    pg.get_by_text("Long text", exact=True).click()
    box = pg.get_by_role("textbox", name="Review or long text")
    review = ("The acting is superb and the story moves me every single time. " * 48)[:3000]
    box.fill(review)
    box.press("Control+Enter")
    pg.locator('[data-testid="stMetric"]').first.wait_for()
    pg.get_by_text("windows of").first.wait_for()
    wait_settled(pg)
    note = pg.get_by_text("Read all").first.inner_text()
    assert "windows" in note, note
    assert pg.locator('[data-testid="stMetric"]').count() == 1
    assert not pg.locator('[data-testid="stAlertContentError"]').count()
    assert not pg.locator('[data-testid="stException"]').count()
    pg.close()

"""How long the app's pages take to open, in a real headless Chromium, on the
repository's own checkpoints (the shipped model and every study run, as a clone has them).

    python docs/page_timing.py [--runs 3] [--pages Compare Predict ...] [--json]
    python docs/page_timing.py --study-at a67b9b4     # with the study's runs as of a commit

Starts ``streamlit run app/main.py`` (app/serve.py; jobs in a temporary folder), opens
Home once (a fresh server serves deep links after the entry point has run), then opens
each page ``--runs`` times in the same browser tab, as a person clicking through would.
A page counts as open when its title is shown, no script run is in progress, no
placeholder (skeleton) is left in the main column and every chart on it is drawn; the
time is measured from the navigation to the first moment all of that holds (polled every
50 ms). The first open of a page after the server start pays its cold caches (files read,
tables built); later ones are what a user meets afterwards.

``--study-at COMMIT`` serves a temporary checkpoints folder instead: the repository's own
(the shipped model, ``study-best/``, ``reproduce/``, ...) with ``checkpoints/study`` as it
was at COMMIT (``git archive``; e.g. a67b9b4, the last commit before 69 of its runs were
retired: 87 study runs, 107 runs in all).

Printed with the machine's load average and CPU model: timings depend on both. Not a
test: these are measurements, never assertions.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.serve import start_server, stop_server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAGES = ("Compare", "Predict", "Train", "")
READY = """() => {
    const main = document.querySelector('[data-testid="stMain"]');
    if (!main || !main.querySelector('h1')) return false;
    if (document.querySelector('[data-testid="stStatusWidget"]')) return false;
    if (main.querySelector('[data-testid="stSkeleton"]')) return false;
    const plotly = main.querySelectorAll('[data-testid="stPlotlyChart"]');
    const vega = main.querySelectorAll('[data-testid="stVegaLiteChart"]');
    return Array.from(plotly).every(c => c.querySelector('.main-svg'))
        && Array.from(vega).every(c => c.querySelector('svg, canvas'));
}"""


def open_time(pg, url: str, stable_s: float = 0.6, timeout_s: float = 120.0) -> float:
    """Seconds from navigating to ``url`` until the page is open (see the module
    docstring) and stays so for ``stable_s`` (a rerun that starts right away restarts
    the wait; the time reported is when it became open for good)."""
    start = time.perf_counter()
    pg.goto(url)
    ready_at = None
    while time.perf_counter() - start < timeout_s:
        if pg.evaluate(READY):
            ready_at = ready_at or time.perf_counter()
            if time.perf_counter() - ready_at >= stable_s:
                return ready_at - start
        else:
            ready_at = None
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not open within {timeout_s:.0f} s")


def machine() -> dict:
    from core.model.precision import cpu_model
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()]}


def checkpoints_with_study_at(commit: str, tmp: Path) -> Path:
    """The repository's checkpoints folder (symlinked) with ``study/`` as it was at ``commit``."""
    root = tmp / "checkpoints"
    root.mkdir()
    for p in (REPO / "checkpoints").iterdir():
        if p.name != "study" and not p.name.startswith("jobs"):
            (root / p.name).symlink_to(p, target_is_directory=p.is_dir())
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "checkpoints/study"], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tmp / "at", filter="data")
    (tmp / "at" / "checkpoints" / "study").rename(root / "study")
    return root


def measure(pages: list[str], runs: int, study_at: str | None = None) -> dict:
    from analysis.checkpoints import list_checkpoints
    from playwright.sync_api import sync_playwright
    out: dict = {"machine_before": machine(), "pages": {}}
    with tempfile.TemporaryDirectory(prefix="minbert-timing-") as tmp:
        tmp = Path(tmp)
        root = checkpoints_with_study_at(study_at, tmp) if study_at else None
        out["runs"] = len(list_checkpoints(root))   # the zero-shot "pretrained" counts: its dev predictions are a run
        out["study_at"] = study_at
        proc, url = start_server(tmp, tmp / "streamlit.log", checkpoints=root)
        try:
            with sync_playwright() as pw:
                ctx = pw.chromium.launch_persistent_context(str(tmp / "profile"), executable_path=CHROMIUM,
                                                            headless=True, args=ARGS,
                                                            viewport={"width": 1280, "height": 800})
                pg = ctx.new_page()
                out["home_first_s"] = round(open_time(pg, url), 2)
                for page in pages:
                    times = [round(open_time(pg, f"{url}/{page}"), 2) for _ in range(runs)]
                    out["pages"][page or "Home"] = {"first_s": times[0], "later_s": times[1:],
                                                    "later_median_s": statistics.median(times[1:]) if runs > 1
                                                    else None}
                ctx.close()
        finally:
            stop_server(proc)
    out["machine_after"] = machine()
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3, help="opens of each page (the first one is cold)")
    p.add_argument("--pages", nargs="+", default=list(PAGES), help='URL paths ("" is Home)')
    p.add_argument("--study-at", metavar="COMMIT", help="serve checkpoints/study as it was at COMMIT")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not Path(CHROMIUM).is_file():
        sys.exit(f"{CHROMIUM} is missing: run .ci/install-browser.sh (apt-get install -y chromium)")
    result = measure(args.pages, max(1, args.runs), args.study_at)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"machine: {result['machine_before']}")
    print(f"runs served: {result['runs']}" + (f" (checkpoints/study as at {result['study_at']})"
                                                  if result["study_at"] else " (the repository's checkpoints)"))
    print(f"Home (first visit after the server start): {result['home_first_s']} s")
    for page, t in result["pages"].items():
        print(f"{page:>8}: first open {t['first_s']} s, later {t['later_s']} s")
    print(f"load average after: {result['machine_after']['load_average_1_5_15']}")


if __name__ == "__main__":
    main()

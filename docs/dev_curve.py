"""The README's plot of a run's dev metrics over training time, as a PNG.

    python docs/dev_curve.py checkpoints/minbert-multitask docs/dev_curve.png

Builds the plotly figure (``analysis.plots.dev_curve_figure``) from the run's
``train_log.jsonl`` and renders it in Debian's headless ``/usr/bin/chromium`` through
Playwright for Python (the browser the tests use), so no extra image-export package is
needed.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from analysis.plots import dev_curve_figure  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint directory with train_log.jsonl")
    p.add_argument("png", help="where to write the PNG")
    p.add_argument("--title", default=None)
    args = p.parse_args(argv)
    log = Path(args.checkpoint) / "train_log.jsonl"
    events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    fig = dev_curve_figure(events, title=args.title or f"{Path(args.checkpoint).name}: dev metrics during training")
    html = fig.to_html(include_plotlyjs=True, full_html=True, config={"staticPlot": True})
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 840, "height": 440})
        page.set_default_timeout(180_000)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "figure.html"
            path.write_text(html)
            page.goto(path.as_uri(), wait_until="domcontentloaded")
            page.locator(".plot-container").first.wait_for()
        page.locator(".plot-container").first.screenshot(path=args.png)
        browser.close()
    print(args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())

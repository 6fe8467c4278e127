"""How long a fresh server makes its first user wait, in a real headless Chromium.

    python docs/first_prediction.py [--runs 3] [--json]

Each run starts the app (`app/serve.start_server`, the repository's own checkpoints: what
a fresh clone serves), opens the Predict page as the first visit, and times

* ``page_s``: from the request until the Predict page's text box is usable (the default
  model is loaded, quantized and warmed up during this first script run: app/main.py
  calls ``app.common.preload_default_model``);
* ``first_prediction_s``: typing a sentence (Enter) until its sentiment is shown;
* ``later_prediction_s``: the same for a second, different sentence.

Printed with the CPU flags (timings depend on the machine). Not a test: timings are
measurements, never assertions.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.serve import start_server, stop_server  # noqa: E402
from core.model.precision import cpu_flags, cpu_model  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
SENTENCES = ("A gorgeous, witty, seductive movie.", "The plot is thin and the jokes fall flat.")


def _predict(page, text: str) -> float:
    """Type ``text`` into the Sentence box, press Enter, and return the seconds until the
    sentiment metric shows a value different from before (the two sentences above are
    one clearly positive, one clearly negative, so their labels differ)."""
    metric = page.locator('[data-testid="stMetric"]').first
    before = metric.inner_text() if metric.count() else None
    box = page.get_by_role("textbox", name="Sentence", exact=True)
    box.fill(text)
    start = time.perf_counter()
    box.press("Enter")
    while time.perf_counter() - start < 120:
        if metric.count():
            shown = metric.inner_text()
            if shown and shown != before:
                return time.perf_counter() - start
        time.sleep(0.02)
    raise TimeoutError(f"no prediction for {text!r} within 120 s")


def one_run(playwright) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(tmp, Path(tmp) / "streamlit.log", checkpoints=None)
        try:
            context = playwright.chromium.launch_persistent_context(
                str(Path(tmp) / "profile"), executable_path=CHROMIUM, headless=True, args=ARGS)
            page = context.new_page()
            page.set_default_timeout(180_000)
            start = time.perf_counter()
            page.goto(f"{url}/Predict")
            page.get_by_role("textbox", name="Sentence", exact=True).wait_for()
            page_s = time.perf_counter() - start
            first = _predict(page, SENTENCES[0])
            later = _predict(page, SENTENCES[1])
            context.close()
            return {"page_s": round(page_s, 2), "first_prediction_s": round(first, 3),
                    "later_prediction_s": round(later, 3)}
        finally:
            stop_server(proc)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        runs = [one_run(p) for _ in range(args.runs)]
    summary = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    out = {"cpu": cpu_model(), "cpu_flags": cpu_flags(), "runs": runs, "median": summary}
    print(json.dumps(out, indent=2) if args.json else
          f"{cpu_model()} {' '.join(cpu_flags())}\n" + "\n".join(map(str, runs)) + f"\nmedian {summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

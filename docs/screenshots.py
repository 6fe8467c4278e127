"""The README's and docs/'s screenshots, taken in a real headless browser: one command.

    python docs/screenshots.py                       # every page, on the shipped model and the real study runs
    python docs/screenshots.py --pages predict compare phone
    python docs/screenshots.py --checkpoint pretrained --pages attention errors embeddings

Starts ``streamlit run app/main.py`` (headless, on a free localhost port) on the
repository's own checkpoints folder, as a fresh clone serves it: the shipped model
(``checkpoints/minbert-multitask``) is every page's default, and the studies' results-only
runs (``checkpoints/study*/``, ``checkpoints/reproduce/``) are the runs Compare groups;
jobs go to a temporary folder. It drives Debian's ``/usr/bin/chromium`` with Playwright for
Python and writes PNGs to ``docs/screenshots/``:

    predict.png              Predict, the shipped model, a typed pair: paraphrase and
                             similarity first, then the first sentence's sentiment
    predict_review.png       Predict, the shipped model, a long review in the multi-line
                             box: its sentiment and how many tokens / windows it read
    train.png                Train as it opens: the quickest recipe, the jobs list
    compare.png              Compare as it opens: the shipped model beside the best study
                             row (mean ± sd over seeds), the two side by side below
    compare_all.png          Compare with every run shown and every seed (a hundred runs)
    compare_phone.png        Compare on a 390-px-wide screen
    compare_scale.png        (``scale``) every run and seed of the study at its largest:
                             ``checkpoints/study`` as it was at ``--study-at`` (a67b9b4: 87
                             study runs, 107 runs in all; docs/page_timing.py's folder)
    compare_reproduction.png  (``reproduction``) the recipe panel on report 004's recipe
                             re-run at a new seed (checkpoints/reproduce/): does it
                             reproduce its study row (``core.study --check``)?
    compare_claim.png        (``reproduction``) the same panel on a study row: the report's
                             claim beside our mean ± sd over seeds and the verdict
    attention_saliency.png   Integrated Gradients saliency of an example, with the attention
                             heatmap of the same input (last layer, head 0) below it
    errors.png               Errors: dev metrics, confusion, worst predictions, slices
    embeddings.png           Embeddings: a UMAP of a small dev sample and the alignment /
                             uniformity / kNN purity / STS Spearman numbers
    embeddings_objectives.png  (``objectives``) Embeddings after its "Show ... side by side"
                             button: the study's training objectives (plain, triplet,
                             SimCSE, MNRL), from the runs' kept embedding samples

``--checkpoint`` other than the shipped model: the analysis shots (attention, errors,
embeddings) are taken on a server whose checkpoints folder holds only that checkpoint (a
symlink), so it is those pages' default. The geometry cache is shared with
``checkpoints/.cache``. A checkpoint still being trained (``metrics.json`` without
``"finished": true``) is waited for (``--wait`` seconds at most). No test runs this
script; every shot fails loudly rather than save a picture of an error.

Needs Debian's ``chromium`` (``.ci/install-browser.sh``) and Playwright for Python
(requirements.txt); no ``playwright install``.
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.serve import start_server, stop_server, wait_settled  # noqa: E402
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDTH = 1400
PRETRAINED = "pretrained"
SHIPPED = "minbert-multitask"
PHONE = 390
STUDIO_PAGES = ("predict", "train", "compare", "phone", "scale", "reproduction", "objectives")
# the study at its largest, for the "scale" shot: the last commit before 69 runs were retired (107 runs in all)
STUDY_AT = "a67b9b4"
ANALYSIS_PAGES = ("attention", "errors", "embeddings")
PAIR = ("How do I learn Python quickly?", "What is the fastest way to learn Python?")
REVIEW = (  # an invented review, long enough to be read in several windows of the model's 64 tokens
    "I went in expecting another tired heist picture and came out grinning. The first half hour is slow, and "
    "the dialogue in the opening scenes is stiff enough that I checked my watch twice. But once the crew is "
    "assembled the film finds its rhythm: the jokes land, the plan is clever without being smug, and the "
    "lead gives a warm, funny performance that holds the whole thing together. The score is a little loud "
    "and one subplot about a rival gang goes nowhere, yet the final act is so well staged, so tense and so "
    "generous to every character, that I forgave it everything. It is not a masterpiece, but it is the most "
    "fun I have had at the cinema this year, and I would happily watch it again with friends.")
# What the saliency / attention shot explains: the page's own examples for these tasks.
PAIR_TASK = "Paraphrase"      # the pretrained encoder has no sentiment head
SENTENCE_TASK = "Sentiment"
# the Compare page's reproduction shot: report 004's own recipe re-run at a new seed (README)
REPRODUCTION_RUN = "reproduce/004-e6-s3"
# the Compare page's claim shot: the study row with the most seeds (the first by name among equals)


def claim_row() -> str | None:
    """How the Compare page's picker names the study row with the most runs here, or None."""
    runs: dict[str, list[str]] = {}
    for d in sorted((REPO / "checkpoints" / "study").glob("*-s*")):
        if (d / "metrics.json").is_file():
            runs.setdefault(d.name.rsplit("-s", 1)[0], []).append(d.name)
    if not runs:
        return None
    row = max(runs, key=lambda r: (len(runs[r]), [-ord(c) for c in r]))
    return f"study/{row} ({len(runs[row])} seeds)" if len(runs[row]) > 1 else f"study/{runs[row][0]}"


# ------------------------------------------------------------------ checkpoint
def finished(ckpt: Path) -> bool:
    """A trainer's checkpoint is final once metrics.json says ``"finished": true``."""
    try:
        return bool(json.loads((ckpt / "metrics.json").read_text()).get("finished"))
    except (OSError, json.JSONDecodeError):
        return False


def wait_until_finished(ckpt: Path, wait_s: float, poll_s: float = 15.0) -> None:
    deadline = time.time() + wait_s
    while not finished(ckpt):
        if time.time() > deadline:
            sys.exit(f"{ckpt} is not finished after {wait_s:.0f} s ({ckpt / 'metrics.json'} lacks "
                     '"finished": true); wait longer with --wait, or pick --checkpoint pretrained')
        print(f"waiting for training to finish ({ckpt / 'metrics.json'})…", flush=True)
        time.sleep(poll_s)


def checkpoint_root(name: str, tmp: Path) -> Path:
    """A checkpoints folder holding only ``name`` (a symlink) and the shared geometry cache."""
    root = tmp / "checkpoints"
    root.mkdir()
    if name != PRETRAINED:
        (root / name).symlink_to(REPO / "checkpoints" / name, target_is_directory=True)
    cache = REPO / "checkpoints" / ".cache"
    cache.mkdir(parents=True, exist_ok=True)
    (root / ".cache").symlink_to(cache, target_is_directory=True)
    return root


# ----------------------------------------------------------------------- server
# ---------------------------------------------------------------------- browser
def settle(pg, quiet_s: float = 2.0, timeout_s: float = 600.0) -> None:
    """Wait until the script run is over (app.serve.wait_settled, 2 s quiet by default)."""
    wait_settled(pg, quiet_s, timeout_s)


def no_exception(pg, page: str) -> None:
    """Fail loudly rather than save a screenshot of a traceback or an error box."""
    for testid in ("stException", "stAlertContentError"):
        box = pg.locator(f'[data-testid="{testid}"]')
        if box.count():
            sys.exit(f"{page}: the page shows an error:\n{box.first.inner_text()[:2000]}")


def css_key(key: str) -> str:
    """A widget key as it appears in its ``st-key-…`` CSS class, escaped for a selector."""
    return "".join(c if c.isalnum() or c in "-_" else "\\" + c for c in key)


def choose(pg, key: str, option: str) -> None:
    """Pick ``option`` in the selectbox with widget key ``key``."""
    box = pg.locator(f".st-key-{key}")
    if box.get_by_role("combobox").input_value() == option:
        return
    box.get_by_role("button", name="Open").click()
    pg.keyboard.type(option)     # filters the list: a long one renders only its first options
    pg.get_by_role("option", name=option, exact=True).click()


def radio(pg, key: str, option: str) -> None:
    pg.locator(f".st-key-{key}").get_by_text(option, exact=True).click()


def page_height(pg) -> int:
    """Height of the whole page: Streamlit scrolls inside its main container."""
    return int(pg.evaluate("""() => {
        const main = document.querySelector('[data-testid="stMain"]');
        return Math.max(main ? main.scrollHeight : 0, document.documentElement.scrollHeight);
    }"""))


def content_bottom(pg) -> int:
    """The lowest edge of any visible element in the main column, in page pixels (the
    contents of a collapsed expander are laid out but not shown: they don't count)."""
    return int(pg.evaluate("""() => Math.max(0, ...Array.from(
        document.querySelectorAll('[data-testid="stMain"] :is([data-testid="stElementContainer"], '
                                  + '[data-testid="stExpander"])'),
        e => e.closest('details:not([open])') || !e.checkVisibility() ? 0 : e.getBoundingClientRect().bottom))"""))


def full_page(pg, margin: int = 40, width: int = WIDTH):
    """The whole page as a PIL image: grow the viewport to the content (twice, since
    plots re-layout when the viewport changes), scroll to the top, shoot, cut the empty
    space below the last element, shrink the viewport back."""
    from PIL import Image
    for _ in range(2):
        pg.set_viewport_size({"width": width, "height": page_height(pg) + 40})
        time.sleep(1.5)
    settle(pg, quiet_s=1.0)
    pg.evaluate("document.querySelectorAll('*').forEach(e => { if (e.scrollTop) e.scrollTop = 0; })")
    pg.mouse.move(width - 1, 1)  # no hover toolbar over a plot
    time.sleep(0.5)
    img = Image.open(io.BytesIO(pg.screenshot())).convert("RGB")
    bottom = min(img.height, content_bottom(pg) + margin)
    pg.set_viewport_size({"width": WIDTH, "height": 1000})
    return img.crop((0, 0, img.width, bottom))


def save(img, path: Path) -> None:
    """Write ``img`` as a PNG: an optimised 256-colour palette one when that is smaller
    (the screenshots are flat UI colours and plots, so it loses nothing visible)."""
    from PIL import Image
    full, small = io.BytesIO(), io.BytesIO()
    img.save(full, format="PNG", optimize=True)
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        small, format="PNG", optimize=True)
    data = min(full.getvalue(), small.getvalue(), key=len)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path} "
          f"({img.width}x{img.height}, {len(data) / 1024:.0f} KiB)", flush=True)


def open_page(pg, url: str, path: str, title: str) -> None:
    pg.goto(f"{url}/{path}")
    pg.get_by_role("heading", name=title).first.wait_for()


# ------------------------------------------------------------------------ pages
def shoot_attention_saliency(pg, url: str, checkpoint: str, out: Path) -> None:
    """Saliency (Integrated Gradients) of the page's example, then the attention heatmap
    of the same input; the attention part is pasted under the saliency page."""
    from PIL import Image
    open_page(pg, url, "Attention_and_saliency", "Attention & saliency")
    settle(pg)
    choose(pg, "as_task", SENTENCE_TASK if checkpoint != PRETRAINED else PAIR_TASK)
    settle(pg)
    pg.locator(".st-key-as_saliency_fig .js-plotly-plot").wait_for()
    settle(pg)
    no_exception(pg, "Attention and saliency (saliency)")
    top = full_page(pg, margin=24)

    radio(pg, "as_view", "Attention")
    pg.locator(".st-key-as_att_fig_0 .js-plotly-plot").wait_for()
    settle(pg)
    no_exception(pg, "Attention and saliency (attention)")
    bottom = full_page(pg)
    # The attention part: from the view switch down, right of the sidebar.
    x0 = int(pg.locator('[data-testid="stMain"]').bounding_box()["x"])
    y0 = max(0, int(pg.locator(".st-key-as_view").bounding_box()["y"]) - 16)
    part = bottom.crop((x0, y0, bottom.width, bottom.height))
    canvas = Image.new("RGB", (top.width, top.height + part.height), (255, 255, 255))
    canvas.paste(top, (0, 0))
    if x0 > 0:  # carry the sidebar's background on down
        canvas.paste(top.crop((0, top.height - 1, x0, top.height)).resize((x0, part.height)), (0, top.height))
    canvas.paste(part, (x0, top.height))
    save(canvas, out / "attention_saliency.png")


def shoot_errors(pg, url: str, checkpoint: str, out: Path) -> None:
    """The Errors page for the sentiment dev set (similarity for the pretrained encoder);
    computes the dev predictions first when the checkpoint has none."""
    open_page(pg, url, "Errors", "Errors")
    settle(pg)
    if checkpoint == PRETRAINED:
        choose(pg, "er_task", "Similarity")
        settle(pg)
    compute = pg.get_by_role("button", name="Compute")
    if compute.count():
        compute.first.click()
        settle(pg, timeout_s=900)
    pg.locator(".st-key-er_slice_fig .js-plotly-plot").wait_for()
    settle(pg)
    no_exception(pg, "Errors")
    save(full_page(pg), out / "errors.png")


def shoot_embeddings(pg, url: str, checkpoint: str, out: Path, n: int) -> None:
    """The Embeddings page with a small sample: set the size first, then wait for the
    UMAP and the geometry numbers."""
    pg.goto(f"{url}/Embeddings")
    size = pg.locator(".st-key-em_n input")
    size.wait_for()
    # The page starts embedding its default sample at once; setting the size now makes
    # Streamlit stop that run at its next element and rerun with the small sample.
    size.fill(str(n))
    size.press("Enter")
    size.evaluate("e => e.blur()")  # no focus ring in the picture
    if checkpoint == PRETRAINED:
        settle(pg, timeout_s=900)
        choose(pg, "em_task", "Similarity")
    settle(pg, timeout_s=900)
    pg.locator(".st-key-em_fig_0 .js-plotly-plot").wait_for()
    # the picture of the small sample, not of the default one
    pg.wait_for_function("n => (document.querySelector('.st-key-em_fig_0') || {}).textContent"
                         "?.includes(`of ${n} sentences`)", arg=n)
    no_exception(pg, "Embeddings")
    save(full_page(pg), out / "embeddings.png")


def shoot_embedding_objectives(pg, url: str, out: Path) -> None:
    """The Embeddings page showing the study's training objectives side by side (its
    button), on a server whose checkpoints folder holds the study's runs."""
    pg.goto(f"{url}/Embeddings")
    pg.locator(".st-key-em_objectives button").wait_for()
    settle(pg, timeout_s=900)       # the default checkpoint's picture first
    pg.locator(".st-key-em_objectives button").click()
    settle(pg, timeout_s=900)
    pg.locator(".st-key-em_fig_0 .js-plotly-plot").wait_for()
    no_exception(pg, "Embeddings")
    save(full_page(pg), out / "embeddings_objectives.png")


def shoot_predict(pg, url: str, out: Path) -> None:
    """The shipped model on Predict: a typed pair (its results come first), then a long
    review in the multi-line box."""
    open_page(pg, url, "Predict", "Predict")
    settle(pg)
    for name, text in zip(("Sentence", "Second sentence (optional: paraphrase and similarity of the pair)"), PAIR):
        box = pg.get_by_role("textbox", name=name, exact=True)
        box.click()
        box.type(text, delay=5)
    pg.locator('[data-testid="stMetric"]').filter(has_text="/ 5").first.wait_for()
    settle(pg)
    pg.locator('[data-testid="stMetric"]').nth(2).wait_for()      # the first sentence's sentiment below
    settle(pg)
    no_exception(pg, "Predict (pair)")
    save(full_page(pg), out / "predict.png")
    pg.get_by_text("Long text", exact=True).click()
    box = pg.get_by_role("textbox", name="Review or long text")
    box.wait_for()
    box.fill(REVIEW)
    box.press("Control+Enter")
    pg.get_by_text("windows of").first.wait_for()
    settle(pg)
    box.evaluate("e => e.blur()")
    no_exception(pg, "Predict (review)")
    save(full_page(pg), out / "predict_review.png")


def shoot_train(pg, url: str, out: Path) -> None:
    open_page(pg, url, "Train", "Train")
    settle(pg)
    pg.get_by_text("No jobs yet").first.wait_for()
    no_exception(pg, "Train")
    save(full_page(pg), out / "train.png")


def _compare_open(pg, url: str) -> None:
    open_page(pg, url, "Compare", "Compare checkpoints")
    pg.locator('[data-testid="stVegaLiteChart"] svg').first.wait_for()
    settle(pg)


def shoot_compare(pg, url: str, out: Path) -> None:
    """Compare as it opens (the default selection), then with every run and seed."""
    _compare_open(pg, url)
    no_exception(pg, "Compare")
    save(full_page(pg), out / "compare.png")
    every_run(pg, out / "compare_all.png")


def shoot_scale(pg, url: str, out: Path) -> None:
    """Compare with every run and seed of the study at its largest (``--study-at``)."""
    _compare_open(pg, url)
    every_run(pg, out / "compare_scale.png")


def every_run(pg, path: Path) -> None:
    """Compare with "All lines" and "Every seed" on: the selection and the chart."""
    pg.locator(".st-key-cmp_all").get_by_text("All", exact=False).click()
    settle(pg)
    pg.locator(".st-key-cmp_seeds").get_by_text("Every seed").click()
    settle(pg)
    no_exception(pg, "Compare (every run)")
    chart = pg.locator('[data-testid="stVegaLiteChart"]').first
    pg.set_viewport_size({"width": WIDTH, "height": page_height(pg) + 40})
    time.sleep(1.5)
    settle(pg, quiet_s=1.0)
    pg.evaluate("document.querySelectorAll('*').forEach(e => { if (e.scrollTop) e.scrollTop = 0; })")
    from PIL import Image
    img = Image.open(io.BytesIO(pg.screenshot())).convert("RGB")
    top = pg.locator(".st-key-cmp_shown").bounding_box()
    box = chart.bounding_box()
    x0 = int(pg.locator('[data-testid="stMain"]').bounding_box()["x"])
    save(img.crop((x0, max(0, int(top["y"]) - 60), img.width, int(box["y"] + box["height"] + 16))), path)
    pg.set_viewport_size({"width": WIDTH, "height": 1000})


def shoot_phone(pg, url: str, out: Path) -> None:
    """Compare on a phone-sized screen (390 px wide)."""
    pg.set_viewport_size({"width": PHONE, "height": 844})
    _compare_open(pg, url)
    no_exception(pg, "Compare (390 px)")
    save(full_page(pg, width=PHONE), out / "compare_phone.png")


def shoot_compare_reproduction(pg, url: str, out: Path, run: str = REPRODUCTION_RUN) -> None:
    """The Compare page's recipe panel on ``run``: the study row trained with its settings
    and whether it reproduces that row (every dev figure within 2 sd of the row's seeds)."""
    if not (REPO / "checkpoints" / run).is_dir():
        sys.exit(f"{run} is not in checkpoints/: the reproduction shot needs it")
    open_page(pg, url, "Compare", "Compare checkpoints")
    settle(pg, timeout_s=900)
    panel = pg.locator(".st-key-recipe_panel")
    panel.locator("summary").click()       # the panel runs when it is opened
    settle(pg, timeout_s=900)
    group, seed = run.rsplit("-s", 1)
    choose(pg, "recipe_pick", run)         # a row (here a re-run: a group of one, shown by its name), then its seed
    settle(pg)
    seed_key = css_key(f"recipe_pick:seed:{group}")
    if pg.locator(f".st-key-{seed_key}").count():
        choose(pg, seed_key, f"seed {seed}")
        settle(pg)
    try:
        panel.get_by_text("Study row").wait_for(timeout=60_000)
    except Exception:   # playwright's TimeoutError: the study keeps no run of the row this one re-ran
        print(f"{run}: no study row trained like it in checkpoints/study (core.study --check finds none): "
              "compare_reproduction.png not taken", flush=True)
        return
    no_exception(pg, "Compare")
    from PIL import Image
    pg.set_viewport_size({"width": WIDTH, "height": page_height(pg) + 40})   # no inner scrolling
    time.sleep(1.5)
    pg.evaluate("document.querySelectorAll('*').forEach(e => { if (e.scrollTop) e.scrollTop = 0; })")
    top = panel.bounding_box()
    end = panel.get_by_text("Within = |value").bounding_box()    # the check's caption, above the config
    img = Image.open(io.BytesIO(pg.screenshot())).convert("RGB")
    save(img.crop((int(top["x"]), int(top["y"]), int(top["x"] + top["width"]), int(end["y"] + end["height"] + 16))),
         out / "compare_reproduction.png")
    pg.set_viewport_size({"width": WIDTH, "height": 1000})



def shoot_compare_claim(pg, url: str, out: Path) -> None:
    """The recipe panel on a study row: the report's claim beside our mean ± sd and the verdict."""
    from PIL import Image
    open_page(pg, url, "Compare", "Compare checkpoints")
    settle(pg, timeout_s=900)
    panel = pg.locator(".st-key-recipe_panel")
    panel.locator("summary").click()       # the panel runs when it is opened
    settle(pg, timeout_s=900)
    row = claim_row()
    if row is None:
        print("no study run in checkpoints/study: compare_claim.png not taken", flush=True)
        return
    choose(pg, "recipe_pick", row)
    settle(pg)
    panel.get_by_text("Verdict", exact=True).wait_for()
    no_exception(pg, "Compare (claim)")
    pg.set_viewport_size({"width": WIDTH, "height": page_height(pg) + 40})
    time.sleep(1.5)
    pg.evaluate("document.querySelectorAll('*').forEach(e => { if (e.scrollTop) e.scrollTop = 0; })")
    top = panel.bounding_box()
    end = panel.locator('[data-testid="stCode"]').first.bounding_box()     # the claim sits above the config
    img = Image.open(io.BytesIO(pg.screenshot())).convert("RGB")
    save(img.crop((int(top["x"]), int(top["y"]), int(top["x"] + top["width"]), int(end["y"] - 8))),
         out / "compare_claim.png")
    pg.set_viewport_size({"width": WIDTH, "height": 1000})


# ------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=SHIPPED,
                   help=f'the analysis shots\' checkpoint: a name under checkpoints/ or "pretrained" (default {SHIPPED})')
    p.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots", help="where the PNGs go")
    p.add_argument("--sample-size", type=int, default=200, help="dev sentences on the Embeddings page (20..2000)")
    p.add_argument("--wait", type=float, default=3600, help="seconds to wait for an unfinished checkpoint")
    p.add_argument("--study-at", default=STUDY_AT, metavar="COMMIT",
                   help=f"the scale shot's checkpoints/study, as at COMMIT (default {STUDY_AT})")
    p.add_argument("--pages", nargs="+", choices=[*STUDIO_PAGES, *ANALYSIS_PAGES],
                   default=[*STUDIO_PAGES, *ANALYSIS_PAGES])
    args = p.parse_args(argv)

    if not Path(CHROMIUM).is_file():
        sys.exit(f"{CHROMIUM} is missing: run .ci/install-browser.sh (apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401  (present? the shots below import it)
    except ImportError:
        sys.exit("Playwright for Python is missing: pip install -r requirements.txt")
    name, out = args.checkpoint, args.out.resolve()
    if name != PRETRAINED:
        ckpt = REPO / "checkpoints" / name
        if not ckpt.is_dir():
            sys.exit(f"no checkpoint {ckpt}: train one (python -m core.train configs/quick.yaml) "
                     "or pass --checkpoint pretrained")
        wait_until_finished(ckpt, args.wait)
    studio = {"predict": shoot_predict, "train": shoot_train, "compare": shoot_compare, "phone": shoot_phone,
              "reproduction": lambda pg, url, out: (shoot_compare_reproduction(pg, url, out),
                                                    shoot_compare_claim(pg, url, out)),
              "objectives": shoot_embedding_objectives}
    analysis = {"attention": lambda pg, url: shoot_attention_saliency(pg, url, name, out),
                "errors": lambda pg, url: shoot_errors(pg, url, name, out),
                "embeddings": lambda pg, url: shoot_embeddings(pg, url, name, out, args.sample_size)}
    here = [lambda pg, url, f=studio[page]: f(pg, url, out) for page in args.pages if page in studio]
    if "scale" in args.pages:
        with tempfile.TemporaryDirectory(prefix="minbert-scale-") as tmp:
            from page_timing import checkpoints_with_study_at
            try:
                root = checkpoints_with_study_at(args.study_at, Path(tmp))
            except subprocess.CalledProcessError as e:
                sys.exit(f"--study-at {args.study_at}: not in this clone's history ({e.stderr.decode().strip()})")
            _browse(root, lambda pg, url: shoot_scale(pg, url, out))
    if name == SHIPPED:   # the repository's own folder: the shipped model is every page's default
        here += [analysis[page] for page in args.pages if page in analysis]
    print(f"analysis shots on: {name}", flush=True)
    if here:
        _browse(None, lambda pg, url: [shot(pg, url) for shot in here])
    rest = [analysis[page] for page in args.pages if page in analysis and name != SHIPPED]
    if rest:
        with tempfile.TemporaryDirectory(prefix="minbert-root-") as tmp:
            _browse(checkpoint_root(name, Path(tmp)), lambda pg, url: [shot(pg, url) for shot in rest])


def _browse(root: Path | None, shoot) -> None:
    """Start a server on the checkpoints folder ``root`` (None: the repository's own, as a
    fresh clone serves it, with the jobs in a temporary folder), open Home once (deep links
    work after it), then ``shoot(pg, url)``."""
    from playwright.sync_api import sync_playwright
    with tempfile.TemporaryDirectory(prefix="minbert-shots-") as tmp:
        tmp = Path(tmp)
        proc, url = (start_server(tmp, tmp / "streamlit.log", checkpoints=None) if root is None
                     else start_server(root, tmp / "streamlit.log"))
        try:
            with sync_playwright() as pw:
                context = pw.chromium.launch_persistent_context(
                    str(tmp / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                    viewport={"width": WIDTH, "height": 1000})
                try:
                    pg = context.new_page()
                    pg.set_default_timeout(600_000)
                    # Home first: a fresh server serves deep links only after the entry point ran once.
                    pg.goto(url)
                    pg.get_by_text("minBERT Studio").first.wait_for()
                    shoot(pg, url)
                finally:
                    context.close()
        except Exception:
            print("streamlit log (tail):\n" + (tmp / "streamlit.log").read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            stop_server(proc)


if __name__ == "__main__":
    main()

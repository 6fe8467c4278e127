"""The comparison report of two checkpoints, written to a folder (what the app shows, offline).

    python -m analysis.compare A B --out DIR [--format md|html] [--no-behaviour] [--resamples N]

    write_report("minbert-multitask", "study/000-mt-s0", "reports/shipped-vs-000", fmt="html")

``DIR`` gets ``report.md`` (or ``report.html``), ``figures/*.png`` and ``*.svg`` (drawn
offline, analysis/figure_export.py) and ``tables/*.csv`` (formula cells neutralised,
core.data.inputs.csv_export_bytes). Sections, each from the module the app uses:

1. dev metrics of both (analysis/compare.py);
2. the paired comparison: A - B per metric with its 95 % paired-bootstrap interval, the
   verdict, exact McNemar for accuracies, each study run's seed sd (analysis/significance.py),
   and the same per slice, with the slice's size;
3. calibration: ECE with its interval and the reliability diagrams for sentiment and
   Quora (analysis/calibration.py);
4. behaviour tests: pass rates per test (analysis/behaviour.py), for checkpoints whose
   weights are here (a results-only run is named as needing them).

Only stored dev predictions are read for sections 1-3 (results-only study runs work).
Every text from a file (checkpoint names, sentences) is escaped in HTML. No Streamlit here.
"""
from __future__ import annotations

import datetime as _dt
import html
import os
from pathlib import Path

import pandas as pd

from analysis import calibration as C
from analysis import significance as S
from analysis.checkpoints import has_weights, resolve_checkpoint, weights_missing
from core.data.inputs import csv_export_bytes
from analysis.records import METRIC_COLUMNS, checkpoint_record
from analysis.figure_export import to_png, to_svg
from core.errors import MinbertError
from core.tasks import QUORA_NOTE, TASK_TITLES

FORMATS = ("md", "html")


class Report:
    """Blocks of a report (headings, paragraphs, tables, figures) and the files beside it."""

    def __init__(self, out: Path):
        self.out, self.blocks = out, []
        (out / "figures").mkdir(parents=True, exist_ok=True)
        (out / "tables").mkdir(parents=True, exist_ok=True)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("h", level, text))

    def text(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, df: pd.DataFrame, name: str, digits: int = 3) -> None:
        (self.out / "tables" / f"{name}.csv").write_bytes(csv_export_bytes(df))
        self.blocks.append(("table", df.round(digits) if len(df) else df, f"tables/{name}.csv"))

    def figure(self, fig, name: str, caption: str) -> None:
        (self.out / "figures" / f"{name}.png").write_bytes(to_png(fig))
        (self.out / "figures" / f"{name}.svg").write_bytes(to_svg(fig))
        self.blocks.append(("figure", f"figures/{name}", caption))


# ------------------------------------------------------------------ rendering
def _cell(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    return str(value)


def _md_table(df: pd.DataFrame) -> str:
    esc = lambda v: _cell(v).replace("|", "\\|").replace("\n", " ")
    head = "| " + " | ".join(esc(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    return "\n".join([head, rule] + ["| " + " | ".join(esc(v) for v in row) + " |" for row in df.itertuples(index=False)])


def to_markdown(blocks) -> str:
    parts = []
    for block in blocks:
        if block[0] == "h":
            parts.append("#" * block[1] + " " + block[2])
        elif block[0] == "p":
            parts.append(block[1])
        elif block[0] == "table":
            parts.append(_md_table(block[1]) + f"\n\n([CSV]({block[2]}))" if len(block[1]) else "(no rows)")
        else:
            parts.append(f"![{block[2]}]({block[1]}.png)\n\n*{block[2]}* ([PNG]({block[1]}.png), [SVG]({block[1]}.svg))")
    return "\n\n".join(parts) + "\n"


def _html_inline(text: str) -> str:
    """Escaped text with the report's own markup: **bold** and `code`."""
    import re
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def to_html(blocks, title: str) -> str:
    body = []
    for block in blocks:
        if block[0] == "h":
            body.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
        elif block[0] == "p":
            body.append(f"<p>{_html_inline(block[1])}</p>")
        elif block[0] == "table":
            df = block[1]
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in r) + "</tr>"
                           for r in df.itertuples(index=False))
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
                        f"<p class=small><a href=\"{html.escape(block[2])}\">CSV</a></p>")
        else:
            src, caption = html.escape(block[1]), html.escape(block[2])
            body.append(f"<figure><img src=\"{src}.svg\" alt=\"{caption}\"><figcaption>{caption} "
                        f"(<a href=\"{src}.png\">PNG</a>, <a href=\"{src}.svg\">SVG</a>)</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}table{border-collapse:"
             "collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}"
             "img{max-width:100%}.small{font-size:12px}")
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


# ------------------------------------------------------------------- sections
def _metrics_section(r: Report, names, paths) -> None:
    rows = []
    for name, path in zip(names, paths):
        rec = checkpoint_record(path, name)
        rows.append({"checkpoint": name, **{k: rec.get(k) for k in METRIC_COLUMNS}, "weights here": rec["weights"],
                     "dev examples": ", ".join(f"{t} {n}" for t, n in (rec["dev_examples"] or {}).items())})
    r.heading("Dev metrics")
    r.table(pd.DataFrame(rows), "dev-metrics")
    r.text(f"Quora*: {QUORA_NOTE}")


def _paired_section(r: Report, names, paths, n_resamples: int) -> None:
    from analysis.plots import difference_figure
    table, notes = S.compare_runs(*paths, names=names, n_resamples=n_resamples)
    table = S.with_seed_noise(table, S.seed_spread(paths[0]), S.seed_spread(paths[1]))
    r.heading(f"Is the difference real? {names[0]} − {names[1]}")
    r.text(f"A − B per metric with a 95 % paired-bootstrap interval ({n_resamples:,} resamples of the shared dev "
           f"examples, the same resampled examples for both, seed {S.SEED}); **no difference** when the interval "
           "contains 0. Accuracies also get the exact McNemar test (binomial on the examples exactly one of the two "
           "gets right). The seed sd (study runs with several seeds) is training noise: how far the same recipe "
           "lands when retrained; the interval is dev-sampling noise. They answer different questions.")
    for note in notes:
        r.text(note)
    if table.empty:
        r.text("The two share no task with stored dev predictions: nothing to compare.")
        return
    columns = {"task": "task", "slice": "slice", "value": "value", "metric": "metric", "n": "n", "a": names[0],
               "b": names[1], "diff": "A − B", "low": "low", "high": "high", "verdict": "verdict",
               "only_a_right": f"only {names[0]} right", "only_b_right": f"only {names[1]} right",
               "p_value": "McNemar p", "seed_sd_a": f"seed sd {names[0]}", "seed_sd_b": f"seed sd {names[1]}"}
    table = table.assign(p_value=table["p_value"].map(S.format_p),
                         only_a_right=table["only_a_right"].astype("Int64"),
                         only_b_right=table["only_b_right"].astype("Int64"))
    shown = table[list(columns)].rename(columns=columns)
    overall = table["slice"] == "all"
    r.table(shown[overall].drop(columns=["slice", "value"]).dropna(axis=1, how="all"), "paired-overall", digits=4)
    r.figure(difference_figure(table[overall], names, title=f"{names[0]} − {names[1]}, 95 % intervals"),
             "paired-overall", "A − B on every metric with its 95 % paired-bootstrap interval")
    r.heading("Per slice", 3)
    r.text("Length: words in the input; negation: a negation word present; overlap: word overlap of a pair; "
           "label: the gold label (accuracy only: a one-label slice has no macro-F1; STS label bins: mean absolute "
           "error, lower is better). Each row's interval is 95 % on its own: among many slices about 1 in 20 "
           "excludes 0 by chance when nothing differs.")
    r.table(shown[~overall].drop(columns=[c for c in shown.columns if c.startswith("seed sd")]), "paired-slices",
            digits=4)


def _calibration_section(r: Report, names, paths) -> None:
    from analysis.plots import reliability_figure
    from analysis.predictions import load_predictions
    r.heading("Calibration")
    rows, bins = [], []
    for task in C.CALIBRATION_TASKS:
        reports = {}
        for name, path in zip(names, paths):
            df = load_predictions(path, task, missing_ok=True)
            if df is None:
                r.text(f"{name}: no stored {task} dev predictions (`python -m core.evaluate` writes them; it needs "
                       "the weights).")
                continue
            rep = reports[name] = C.calibration_report(df, task)
            rows.append({"task": task, "checkpoint": name, "ECE": rep["ece"], "ECE low": rep["ece_low"],
                         "ECE high": rep["ece_high"], "MCE": rep["mce"], "n": rep["n"], "reading": rep["reading"]})
            bins.append(rep["bins"].assign(task=task, checkpoint=name))
        if reports:
            r.figure(reliability_figure(reports, title=f"{TASK_TITLES[task]}: reliability"), f"reliability-{task}",
                     f"{TASK_TITLES[task]}: observed frequency against mean confidence per bin ({C.READING[task]})")
    if rows:
        r.table(pd.DataFrame(rows), "calibration")
        (r.out / "tables" / "calibration-bins.csv").write_bytes(csv_export_bytes(pd.concat(bins, ignore_index=True)))
        r.text(f"ECE = Σ (bin size / n) · |observed − mean confidence| over {C.N_BINS} equal-width, right-closed bins "
               "(Guo et al. 2017), with a 95 % bootstrap interval; the bins of both are in tables/calibration-bins.csv.")


def _behaviour_section(r: Report, names, paths) -> None:
    from analysis import behaviour as B
    from analysis.checkpoints import load_model
    suite = B.load_suite()
    r.heading("Behaviour tests")
    r.text(f"Suite **{suite.name}**, version {suite.version} (sha256 {suite.sha256[:12]}), {len(suite.tests)} tests "
           "in the style of CheckList (Ribeiro et al. 2020): MFT, INV and DIR.")
    results = {}
    for name, path in zip(names, paths):
        if not has_weights(path):
            r.text(f"{name}: not run: {weights_missing(name)}.")
            continue
        results[name] = B.run_suite(load_model(path), suite)
    if not results:
        return
    r.table(B.summary_frame(results).drop(columns=["description"]), "behaviour-pass-rates", digits=2)
    for name, got in results.items():
        fails = B.failures_frame(got)
        r.text(f"**{name}**: {len(fails)} failed case(s); all of them in tables/behaviour-failures-"
               f"{_stem(name)}.csv.")
        (r.out / "tables" / f"behaviour-failures-{_stem(name)}.csv").write_bytes(
            csv_export_bytes(fails.drop(columns=["first", "last"])))


def _stem(name: str) -> str:
    import re
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "checkpoint"


def write_report(a: str, b: str, out: str | os.PathLike, fmt: str = "md", behaviour: bool = True,
                 n_resamples: int = S.N_RESAMPLES) -> Path:
    """Write the comparison report of checkpoints ``a`` and ``b`` (names or directories)
    into ``out``; returns the report file's path."""
    if fmt not in FORMATS:
        raise MinbertError(f"unknown report format {fmt!r}; choose md or html")
    if n_resamples < 100:
        raise MinbertError(f"use at least 100 resamples for a 95 % interval (got {n_resamples})")
    names = (str(a), str(b))
    paths = tuple(resolve_checkpoint(n) for n in names)
    if "pretrained" in paths:
        paths = tuple(str(Path(resolve_checkpoint("pretrained")).resolve()) if p == "pretrained" else p for p in paths)
    if Path(paths[0]).resolve() == Path(paths[1]).resolve():
        raise MinbertError("give two different checkpoints to compare")
    out = Path(out)
    r = Report(out)
    title = f"{names[0]} vs {names[1]}"
    r.heading(title, 1)
    r.text(f"Written by `python -m analysis.compare {names[0]} {names[1]} --out {out}` on "
           f"{_dt.date.today().isoformat()}. Checkpoints: `{paths[0]}` and `{paths[1]}`.")
    _metrics_section(r, names, paths)
    _paired_section(r, names, paths, n_resamples)
    _calibration_section(r, names, paths)
    if behaviour:
        _behaviour_section(r, names, paths)
    path = out / f"report.{fmt}"
    path.write_text(to_markdown(r.blocks) if fmt == "md" else to_html(r.blocks, title), encoding="utf-8")
    return path

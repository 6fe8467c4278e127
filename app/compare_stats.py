"""The Compare page's paired comparison of two checkpoints, with uncertainty (Streamlit).

    from app.compare_stats import render_paired_comparison
    table = render_paired_comparison("minbert-multitask", "study/000-mt-s0")

renders, for every task both checkpoints have stored dev predictions for: A − B on each
metric with its 95 % paired-bootstrap interval, the verdict ("no difference" when the
interval contains 0, else who is better), the exact McNemar p-value for accuracies, the
same per slice (length, negation, overlap, label) with the slice's size, and, for study
runs with several seeds, each model's seed sd beside the interval. Controls filter by
task, slice and verdict and sort by the size of the difference, the p-value or the
slice size; a forest plot and CSV / PNG / SVG downloads come with it. It returns the
full table (a DataFrame of :data:`analysis.significance.COLUMNS` plus ``seed_sd_a`` /
``seed_sd_b``), or None when there is nothing to compare.

``model_a`` / ``model_b``: checkpoint names as the pickers give them (a name under the
checkpoints root, ``study/<row>-s<seed>``, or a path). Only the stored prediction files
are read (no weights: results-only study runs work); the statistics are cached by the
content of those files and of the study's results.jsonl, so a page with a hundred runs
computes only the pair it shows, once.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from analysis import significance as S
from analysis.plots import difference_figure
from app.exports import show_figure, show_table
from core.errors import MinbertError
from core.tasks import TASK_TITLES, TASKS

SORTS = {"natural": "task, slice, value (natural order)", "diff": "largest |A − B| first",
         "p": "smallest McNemar p first", "n": "largest slice first"}
VERDICTS = {"all": "every row", "differs": "a real difference (interval excludes 0)",
            "same": "no difference (interval contains 0)"}
NOISE_NOTE = ("The interval is **dev-sampling noise**: would the difference hold on another dev sample of this "
              "size, for these two trained models? The **seed sd** is **training noise**: how far the same recipe "
              "lands when trained again with another seed (a study row's runs). They answer different questions; "
              "a difference can be beyond dev noise and still within what a reseed moves.")


def _content_key(path: str) -> tuple:
    """What the statistics of one run depend on: its prediction files and its study's
    results.jsonl, by content hash (core/evaluation/cache.py; memoized by file stat)."""
    from core.evaluation.cache import file_fingerprint
    directory = Path(path)
    files = [directory / "predictions" / f"{t}-dev.csv" for t in TASKS] + [directory.parent / "results.jsonl"]
    return tuple((f.name, file_fingerprint(f)) for f in files if f.is_file())


@st.cache_data(show_spinner=False, max_entries=16)
def _table(path_a: str, path_b: str, names: tuple[str, str], key_a: tuple, key_b: tuple,
           n_resamples: int) -> tuple[pd.DataFrame, list[str], dict | None, dict | None]:
    table, notes = S.compare_runs(path_a, path_b, names=names, n_resamples=n_resamples)
    spread_a, spread_b = S.seed_spread(path_a), S.seed_spread(path_b)
    return S.with_seed_noise(table, spread_a, spread_b), notes, spread_a, spread_b


def paired_table(model_a: str, model_b: str, n_resamples: int = S.N_RESAMPLES):
    """(table, notes, seed spread of A, of B) for two checkpoint choices, cached by content."""
    from app.common import resolve_checkpoint
    path_a, path_b = resolve_checkpoint(model_a), resolve_checkpoint(model_b)
    if Path(path_a).resolve() == Path(path_b).resolve():
        raise MinbertError("pick two different checkpoints to compare")
    return _table(path_a, path_b, (model_a, model_b), _content_key(path_a), _content_key(path_b), n_resamples)


def _interval(row) -> str:
    return f"{row['diff']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}]"


def shown_table(table: pd.DataFrame, names: tuple[str, str], short: bool = False) -> pd.DataFrame:
    """The table as the page shows it: the interval as text and the verdict first, then
    the values; columns named by checkpoint, or "A" / "B" (``short``: the page says
    which is which, so the verdict stays in view on a laptop screen)."""
    a, b = ("A", "B") if short else names
    out = pd.DataFrame({
        "task": table["task"].map(TASK_TITLES), "slice": table["slice"], "value": table["value"],
        "metric": table["metric"], "n": table["n"],
        "A − B [95 % interval]": table.apply(_interval, axis=1) if len(table) else [],
        "verdict": table["verdict"], a: table["a"], b: table["b"], "McNemar p": table["p_value"].map(S.format_p),
        f"only {a} right": table["only_a_right"].astype("Int64"), f"only {b} right": table["only_b_right"].astype("Int64"),
        f"seed sd {a}": table["seed_sd_a"], f"seed sd {b}": table["seed_sd_b"]})
    return out.dropna(axis=1, how="all")


def filter_table(table: pd.DataFrame, tasks, slices, verdict: str, sort: str) -> pd.DataFrame:
    """Rows of ``tasks`` and ``slices`` (``"all"`` = whole dev set), kept by ``verdict``
    (:data:`VERDICTS`) and ordered by ``sort`` (:data:`SORTS`)."""
    out = table[table["task"].isin(tasks) & table["slice"].isin(slices)]
    same = out["verdict"] == S.NO_DIFFERENCE
    out = out[~same] if verdict == "differs" else out[same] if verdict == "same" else out
    if sort == "diff":
        out = out.assign(_k=out["diff"].abs()).sort_values("_k", ascending=False, kind="stable").drop(columns="_k")
    elif sort == "p":
        out = out.sort_values("p_value", na_position="last", kind="stable")
    elif sort == "n":
        out = out.sort_values("n", ascending=False, kind="stable")
    return out


def _controls(table: pd.DataFrame, key: str) -> tuple:
    tasks = [t for t in TASKS if t in set(table["task"])]
    slices = list(dict.fromkeys(table["slice"]))
    c1, c2, c3, c4 = st.columns([2, 3, 2, 2])
    chosen_tasks = c1.multiselect("Tasks", tasks, default=tasks, format_func=TASK_TITLES.get, key=f"{key}_tasks")
    chosen_slices = c2.multiselect("Rows", slices, default=["all"], key=f"{key}_slices",
                                   format_func=lambda s: "whole dev set" if s == "all" else f"per {s} slice",
                                   help="length: words in the input; negation: a negation word present; overlap: "
                                        "word overlap of a pair; label: the gold label (accuracy only there: a "
                                        "one-label slice has no macro-F1).")
    verdict = c3.selectbox("Show", list(VERDICTS), format_func=VERDICTS.get, key=f"{key}_verdict")
    sort = c4.selectbox("Sort by", list(SORTS), format_func=SORTS.get, key=f"{key}_sort")
    return chosen_tasks, chosen_slices, verdict, sort


def _seed_lines(names: tuple[str, str], spreads) -> list[str]:
    lines = []
    for name, spread in zip(names, spreads):
        if spread and len(spread["seeds"]) > 1:
            lines.append(f"**{name}** is one of study row `{spread['row']}`'s runs (seeds "
                         f"{', '.join(map(str, spread['seeds']))}): its seed sd is beside each whole-dev row.")
        elif spread:
            lines.append(f"**{name}**: study row `{spread['row']}` has one seed so far: no seed sd.")
    return lines


def render_paired_comparison(model_a: str, model_b: str, key: str = "pc",
                             n_resamples: int = S.N_RESAMPLES) -> pd.DataFrame | None:
    """Render the paired comparison of two checkpoints (see the module docstring) and
    return its full table; a user error (same checkpoint twice, data that do not match)
    is shown as one ``st.error`` and returns None."""
    names = (str(model_a), str(model_b))
    st.markdown(f"**Is the difference real?** {names[0]} − {names[1]} on every metric, with a 95 % "
                f"paired-bootstrap interval ({n_resamples:,} resamples of the shared dev examples, the same "
                f"resampled examples for both, seed {S.SEED}) and, for accuracies, the exact McNemar test.")
    try:
        with st.spinner("Resampling the dev sets…"):
            table, notes, spread_a, spread_b = paired_table(model_a, model_b, n_resamples)
    except MinbertError as e:
        st.error(str(e))
        return None
    for note in notes:
        st.caption(f":material/info: {note}")
    if table.empty:
        st.info("The two checkpoints share no task with stored dev predictions: nothing to compare.")
        return None
    tasks, slices, verdict, sort = _controls(table, key)
    rows = filter_table(table, tasks, slices, verdict, sort)
    if rows.empty:
        st.info("No row matches these choices.")
        return table
    shown = shown_table(rows, names, short=True)
    st.caption(f"A = **{names[0]}**, B = **{names[1]}**.")
    fmt = {c: st.column_config.NumberColumn(c, format="%.3f") for c in shown.columns
           if c in ("A", "B") or c.startswith("seed sd")}
    fmt["McNemar p"] = st.column_config.TextColumn("McNemar p",
                                                    help="Exact two-sided binomial test on the examples exactly "
                                                         "one of the two gets right (accuracies only).")
    fmt["metric"] = st.column_config.TextColumn("metric", help="Higher is better, except mae (mean absolute "
                                                "error of STS label slices): lower is better.")
    fmt["verdict"] = st.column_config.TextColumn("verdict", help="'no difference' when the interval contains 0.")
    show_table(shown, f"paired-{names[0]}-vs-{names[1]}", key=f"{key}_table", column_config=fmt,
               export=shown_table(table, names))
    overall = rows[rows["slice"] == "all"] if "all" in slices else rows
    if len(overall):
        fig = difference_figure(overall.head(40), names, title=f"{names[0]} − {names[1]}, 95 % intervals")
        show_figure(fig, f"paired-{names[0]}-vs-{names[1]}", key=f"{key}_fig")
    lines = _seed_lines(names, (spread_a, spread_b))
    st.caption(" ".join(lines + [NOISE_NOTE]) + " Each row's interval is 95 % on its own: among many slices a few "
               "will exclude 0 by chance (about 1 in 20 when nothing differs).")
    return table

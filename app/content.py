"""What only the app shows, as plain data: the Predict page's examples and readings, the
run groups of the Compare and Home pages, dev-subset marks, recipes' expected times.

No Streamlit calls here (plain data and pandas), so the pages stay short and this
content can be read, tested and edited on its own.

    sentiment_reading(probs)     label, confidence note, low-confidence flag (near-uniform)
    paraphrase_reading(prob)     the same for a paraphrase probability
    run_group(name)              "study/000-mt-s1" -> ("study/000-mt", 1); a lone run: (name, None)
    run_kind(name)               shipped | zero-shot | your run | study | reproduction | <folder>
    dev_subset(record)           the tasks a run was scored on part of the dev set (core.evaluation.evaluator's rule)
    group_table(table)           analysis.compare.checkpoint_table, one line per study row
    recipe_time(path)            a recipe's expected time as its header states it
    keep_input_columns(...)      batch predictions joined back to every input column
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from core.tasks import METRIC_NAMES, TASKS, TASK_LABELS
from core.model.checkpoint import PRETRAINED, SHIPPED

SENTIMENT_LABELS = TASK_LABELS["sst"]

EXAMPLES: dict[str, list] = {
    "sst": [
        "A gorgeous, witty, seductive movie.",
        "The plot is paper-thin and the jokes fall flat.",
        "It's not a masterpiece, but it's an enjoyable way to spend two hours.",
        "An utterly joyless, interminable slog.",
        "The performances are fine; the script is merely adequate.",
    ],
    "qqp": [
        ("How do I learn Python quickly?", "What is the fastest way to learn Python?"),
        ("How do I lose weight fast?", "How can I gain weight in a healthy way?"),
        ("What is the capital of Australia?", "Which city is Australia's capital?"),
        ("Why is the sky blue?", "Why do cats purr?"),
    ],
    "sts": [
        ("A man is playing a guitar.", "A person plays the guitar."),
        ("A woman is slicing an onion.", "A woman is cutting an onion."),
        ("A dog runs across the field.", "A cat is sleeping on the sofa."),
        ("The stock market fell sharply today.", "Shares dropped steeply on Monday."),
    ],
}


def sentiment_frame(results: Mapping[str, Sequence[float]]) -> pd.DataFrame:
    """Long table (model, label, probability) for a grouped bar chart."""
    rows = [{"model": name, "label": SENTIMENT_LABELS[k], "probability": float(p)}
            for name, probs in results.items() for k, p in enumerate(probs)]
    return pd.DataFrame(rows, columns=["model", "label", "probability"])


# ------------------------------------------------------------ readings
# A distribution is "near-uniform" when its entropy is at least this share of the
# largest possible (log k for k classes): 0.9 holds for 5 classes at [.3 .25 .2 .15 .1]
# and for a paraphrase probability between about 0.32 and 0.68.
NEAR_UNIFORM = 0.9
# Below this top-class probability a sentiment is called "low confidence": most of the
# probability mass lies on the other classes.
CONFIDENT = 0.5


def normalized_entropy(probs: Sequence[float]) -> float:
    """Entropy of a distribution divided by log(k): 0 for one certain class, 1 for uniform."""
    k = len(probs)
    h = -sum(p * math.log(p) for p in probs if p > 0)
    return h / math.log(k) if k > 1 else 0.0


def sentiment_reading(probs: Sequence[float]) -> dict:
    """What the Predict page says about a 5-class sentiment distribution: ``value`` (the
    card's big text), ``note`` (under it) and ``low`` (True when it is not a clear call)."""
    order = sorted(range(len(probs)), key=lambda k: -probs[k])
    top, second = order[0], order[1]
    p1, p2 = float(probs[top]), float(probs[second])
    if normalized_entropy(probs) >= NEAR_UNIFORM:
        return {"value": "uncertain", "low": True,
                "note": f"not confident: near-uniform (top {SENTIMENT_LABELS[top]} {p1:.0%})"}
    if p1 < CONFIDENT:
        return {"value": SENTIMENT_LABELS[top], "low": True,
                "note": f"only {p1:.0%} confident ({SENTIMENT_LABELS[second]} {p2:.0%})"}
    return {"value": SENTIMENT_LABELS[top], "low": False, "note": f"{p1:.0%} confident"}


def paraphrase_reading(prob: float) -> dict:
    """The same for a paraphrase probability: ``undecided`` when it is near 50/50."""
    if normalized_entropy([prob, 1 - prob]) >= NEAR_UNIFORM:
        return {"value": f"{prob:.0%}", "low": True, "note": "undecided: near 50/50"}
    return {"value": f"{prob:.0%}", "low": False,
            "note": "paraphrase" if prob >= 0.5 else "not a paraphrase"}


# ---------------------------------------------------------------- runs
_SEEDED = re.compile(r"^(?P<group>.+/[^/]+)-s(?P<seed>\d+)$")
KIND_ORDER = ("shipped", "your run", "study", "study-best", "reproduce", "zero-shot")


def run_group(name: str) -> tuple[str, int | None]:
    """The group a run belongs to: a study's runs (``<folder>/<row>-s<seed>``, how
    core/experiments/study.py names them) group by row; any other run is a group of its own."""
    m = _SEEDED.match(name)
    return (m["group"], int(m["seed"])) if m else (name, None)


def run_kind(name: str) -> str:
    """Where a run comes from: the shipped model, the zero-shot encoder, a study folder
    (``study``, ``study-best``, ``reproduce``: its folder's name), or the user's own."""
    if name == SHIPPED:
        return "shipped"
    if name == PRETRAINED:
        return "zero-shot"
    return name.split("/", 1)[0] if "/" in name else "your run"


def dev_subset(record: Mapping) -> dict[str, dict]:
    """``{task: {"n", "of", "sampling", ...}}`` for each task whose dev figures come from
    part of its dev file; ``{}`` for full-dev figures. core.evaluation.evaluator owns the rule
    (``dev_subsets``: the run's own ``subset`` mark, else its ``<task>_n`` against the dev
    file's size); the mark is read from ``record["subset"]`` or, when a record of
    ``analysis.compare.checkpoint_record`` does not carry it, from the run's metrics.json."""
    from core.evaluation.evaluator import SUBSET_KEY, dev_subsets
    dev = {f"{t}_n": n for t, n in (record.get("dev_examples") or {}).items()}
    mark = record.get(SUBSET_KEY)
    if not isinstance(mark, Mapping) and record.get("path"):
        mark = _stored_mark(str(record["path"]))
    if isinstance(mark, Mapping) and mark:
        dev[SUBSET_KEY] = dict(mark)
    return dev_subsets(dev)


def _stored_mark(path: str) -> dict | None:
    import json
    try:
        dev = json.loads((Path(path) / "metrics.json").read_text()).get("dev") or {}
    except (OSError, ValueError, AttributeError):
        return None
    mark = dev.get("subset") if isinstance(dev, dict) else None
    return mark if isinstance(mark, dict) else None


NAMES = {"sst": "SST", "qqp": "Quora", "sts": "STS"}


def subset_label(marks: Mapping[str, Mapping]) -> str:
    """A dev-subset mark (:func:`dev_subset`) as a page says it, core.evaluation.evaluator's wording:
    ``"dev subset: Sentiment 300 of 1,101 (stratified, seed 0)"``; empty for full dev sets."""
    from core.evaluation.evaluator import subset_note
    return subset_note(dict(marks))


def subset_short(marks: Mapping[str, Mapping]) -> str:
    """The same, short enough for a chart label: ``"dev subset n=300"`` (the smallest n)."""
    return f"dev subset n={min(int(m['n']) for m in marks.values()):,}" if marks else ""


PRIMARY_METRICS = ("sst_acc", "qqp_acc", "sts_pearson")


def task_mean(record: Mapping) -> float | None:
    """The mean of a run's primary dev figures (SST accuracy, Quora accuracy, STS Pearson)
    over the tasks it has figures for: core.experiments.study's table mean. A staged run's own
    ``mean_score`` can cover its last stage's task only (MT, then STS: STS alone)."""
    values = [float(record[m]) for m in PRIMARY_METRICS if record.get(m) is not None and not pd.isna(record[m])]
    if values:
        return sum(values) / len(values)
    score = record.get("mean_score")
    return None if score is None or pd.isna(score) else float(score)


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample sd (n - 1, core.experiments.study's rule; NaN for one value) of the values given."""
    vals = [float(v) for v in values if v is not None and not pd.isna(v)]
    if not vals:
        return math.nan, math.nan
    mean = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else math.nan
    return mean, sd


def _merged_subset(subsets: Sequence[Mapping[str, Mapping]]) -> dict[str, dict]:
    """The tasks any member was scored on a subset of, each with its smallest-n mark."""
    out: dict[str, dict] = {}
    for sub in subsets:
        for t, m in sub.items():
            if t not in out or int(m["n"]) < int(out[t]["n"]):
                out[t] = dict(m)
    return {t: out[t] for t in TASKS if t in out}


GROUP_COLUMNS = ["name", "kind", "seeds", "runs", *[c for m in ("mean_score", *METRIC_NAMES) for c in (m, f"{m}_sd")],
                 "train_time_s", "subset", "dev set", "n_tasks", "scored", "weights", "tasks", "recipe", "path"]


def group_table(table: pd.DataFrame) -> pd.DataFrame:
    """One line per group of :func:`run_group` (a study row: mean and sample sd of every
    metric over its seeds; any other run: its own figures, sd NaN); ``mean_score`` is
    :func:`task_mean`. Full-dev figures rank first (more tasks scored first, then best
    mean); groups scored on a dev subset come after them, marked (``subset``, ``dev set``)."""
    if table.empty:
        return pd.DataFrame(columns=GROUP_COLUMNS)
    table = table.assign(mean_score=[task_mean(r) for r in table.to_dict("records")],
                         _tasks=[sum(r.get(m) is not None and not pd.isna(r.get(m)) for m in PRIMARY_METRICS)
                                 for r in table.to_dict("records")])
    rows = []
    for group, members in table.groupby(table["name"].map(lambda n: run_group(n)[0]), sort=False):
        subset = _merged_subset([dev_subset(r) for r in members.to_dict("records")])
        row = {"name": group, "kind": run_kind(members["name"].iloc[0]), "seeds": len(members),
               "runs": tuple(sorted(members["name"], key=lambda n: (run_group(n)[1] or 0, n))), "train_time_s": _mean_sd(members["train_time_s"])[0],
               "subset": subset, "dev set": subset_label(subset) or "full",
               "weights": bool(members["weights"].astype(bool).any()), "tasks": members["tasks"].iloc[0],
               "n_tasks": int(members["_tasks"].max()),
               "scored": ", ".join(NAMES[t] for t, m in zip(TASKS, PRIMARY_METRICS) if members[m].notna().any()),
               "recipe": members["recipe"].iloc[0], "path": members["path"].iloc[0]}
        for m in ("mean_score", *METRIC_NAMES):
            row[m], row[f"{m}_sd"] = _mean_sd(members[m]) if m in members else (math.nan, math.nan)
        rows.append(row)
    out = pd.DataFrame(rows, columns=GROUP_COLUMNS)
    order = out.assign(_sub=out["subset"].map(bool), _n=-out["n_tasks"], _m=-out["mean_score"].fillna(-math.inf))
    return (order.sort_values(["_sub", "_n", "_m"], kind="stable")
            .drop(columns=["_sub", "_n", "_m"]).reset_index(drop=True))


def fmt_mean_sd(mean: float, sd: float, digits: int = 3) -> str:
    """``0.480 ± 0.004``; the mean alone when the sd is unknown (one seed); ``–`` for none."""
    if mean is None or pd.isna(mean):
        return "–"
    return f"{mean:.{digits}f}" if sd is None or pd.isna(sd) else f"{mean:.{digits}f} ± {sd:.{digits}f}"


# -------------------------------------------------------------- recipes
# The phrases a recipe's header states its expected time with (2 CPU cores), most
# specific first: a measured time, the header's estimate, then a bound or "about".
_MEASURED = re.compile(r"measured (\d+) min(?:utes)?(?: (\d+) s)?")
_ESTIMATED = re.compile(r"[Ee]stimated (\d+(?:\.\d+)?)(?:\s*[-–]\s*(\d+(?:\.\d+)?))? min")
_BOUND = re.compile(r"(<=|≤|under|about|~)\s*(\d+(?:\.\d+)?) min")
_FEW = re.compile(r"a few minutes")
FEW_MINUTES = 3.0   # "a few minutes" (the starter's header), for ordering only


def recipe_header(path: str | Path) -> str:
    """The comment block a recipe starts with (its size and time live there)."""
    lines = []
    for line in Path(path).read_text(errors="replace").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").rstrip())
    return " ".join(lines)


def recipe_time(path: str | Path) -> tuple[float | None, str]:
    """``(minutes, how the header says it)``: the recipe's expected time on the project's
    2-core machine as its header states it (a measured time first, then an estimate,
    then a bound: "<= 60 min", "under 15 minutes", "a few minutes"); ``(None, "")``
    when the header states none. The one owner of "expected time of a recipe"."""
    try:
        text = recipe_header(path)
    except OSError:
        return None, ""
    if m := _MEASURED.search(text):
        return int(m[1]) + int(m[2] or 0) / 60, f"measured {m[1]} min" + (f" {m[2]} s" if m[2] else "")
    if m := _ESTIMATED.search(text):
        return float(m[2] or m[1]), f"estimated {m[1]}" + (f"–{m[2]}" if m[2] else "") + " min"
    if m := _BOUND.search(text):
        word = {"<=": "≤", "~": "about"}.get(m[1], m[1])
        return float(m[2]), f"{word} {m[2]} min"
    if _FEW.search(text):
        return FEW_MINUTES, "a few minutes"
    return None, ""


def recipes_by_time(paths: Sequence[Path]) -> list[Path]:
    """Recipes quickest first (:func:`recipe_time`); those with no stated time last, by name."""
    return sorted(paths, key=lambda p: (recipe_time(p)[0] is None, recipe_time(p)[0] or 0.0, p.name))


# ------------------------------------------------------------------ batch
def keep_input_columns(df: pd.DataFrame, predictions: pd.DataFrame, read: Sequence[str]) -> pd.DataFrame:
    """Every column of the uploaded table as it was uploaded, then the prediction columns
    (``predictions`` minus the ``read`` text columns it repeats), row for row, so that
    the result joins back to the input. A prediction column whose name the input already
    uses gets `` (prediction)`` appended."""
    pred = predictions.drop(columns=[c for c in read if c in predictions.columns]).reset_index(drop=True)
    pred = pred.rename(columns={c: f"{c} (prediction)" for c in pred.columns if c in df.columns})
    return pd.concat([df.reset_index(drop=True), pred], axis=1)


# ---------------------------------------------------------------- charts
# Vega-Lite specs (plain dicts, drawn by st.vega_lite_chart): a fraction of plotly's
# weight in the browser, so the Compare page opens without loading plotly.
KIND_COLORS = {"shipped": "#d62728", "your run": "#2ca02c", "study": "#1f77b4", "study-best": "#9467bd",
               "reproduce": "#ff7f0e", "zero-shot": "#7f7f7f"}
OTHER_COLOR = "#8c564b"


def chart_lines(groups: pd.DataFrame, metric: str, label) -> pd.DataFrame:
    """The lines of a dot chart of ``metric``, top to bottom: full-dev lines before
    dev-subset ones and, for the mean, lines over more tasks before fewer; best first
    within each block. ``label(line, metric)`` names a line."""
    d = groups.dropna(subset=[metric])
    d = d.assign(_sub=d["subset"].map(bool), _n=-d["n_tasks"] if metric == "mean_score" else 0, _v=-d[metric])
    d = d.sort_values(["_sub", "_n", "_v"], kind="stable").drop(columns=["_sub", "_n", "_v"]).reset_index(drop=True)
    return d.assign(label=[label(line, metric) for _, line in d.iterrows()])


def dot_spec(lines: pd.DataFrame, metric: str, title: str, seed_values: Sequence[tuple[str, float]] = (),
             scale: float = 1.0) -> dict:
    """One dot per line with a ±1 sd bar, a legend of the kinds of run only (and of full
    dev set / dev subset when a subset is shown), the seeds as small grey dots; 24 px a
    line, labels cut at 200 px (a 390-px screen keeps a plot of ~150 px; the tooltip has the whole label)."""
    rows = []
    for _, line in lines.iterrows():
        value, sd = float(line[metric]) * scale, line.get(f"{metric}_sd")
        sd = 0.0 if sd is None or pd.isna(sd) else float(sd) * scale
        rows.append({"type": "line", "label": line["label"], "value": value, "lo": value - sd, "hi": value + sd,
                     "sd": sd, "seeds": int(line["seeds"]), "kind": line["kind"],
                     "dev set": "dev subset" if line["subset"] else "full dev set"})
    rows += [{"type": "seed", "label": lab, "value": float(v) * scale} for lab, v in seed_values]
    kinds = list(dict.fromkeys(lines["kind"]))
    color = {"field": "kind", "type": "nominal", "title": None,
             "scale": {"domain": kinds, "range": [KIND_COLORS.get(k, OTHER_COLOR) for k in kinds]}}
    x = {"type": "quantitative", "scale": {"zero": False}, "title": title}
    only = lambda kind: [{"filter": f"datum.type === '{kind}'"}]
    shape = {"field": "dev set", "type": "nominal", "title": None,
             "scale": {"domain": ["full dev set", "dev subset"], "range": ["circle", "triangle-up"]}}
    point = {"x": {"field": "value", **x}, "color": color,
             "tooltip": [{"field": "label", "title": "line"}, {"field": "value", "format": ".3f", "title": title},
                         {"field": "sd", "format": ".3f"}, {"field": "seeds"}, {"field": "dev set"}]}
    if bool(lines["subset"].map(bool).any()):   # a second, two-entry legend only when a subset is shown
        point["shape"] = shape
    return {
        "height": {"step": 24}, "width": "container", "data": {"values": rows},
        "encoding": {"y": {"field": "label", "type": "nominal", "sort": list(lines["label"]), "title": None,
                           "axis": {"labelLimit": 200, "labelFontSize": 11}}},
        "layer": [
            {"transform": only("line"), "mark": {"type": "rule", "strokeWidth": 1.5},
             "encoding": {"x": {"field": "lo", **x}, "x2": {"field": "hi"}, "color": color}},
            {"transform": only("seed"), "mark": {"type": "circle", "size": 18, "color": "#5a5a5a", "opacity": 0.6},
             "encoding": {"x": {"field": "value", **x}}},
            {"transform": only("line"), "mark": {"type": "point", "filled": True, "size": 80}, "encoding": point},
        ],
        "config": {"legend": {"orient": "top"}},
    }


def confusion_spec(cm, labels: Sequence[str], title: str) -> dict:
    """A confusion matrix as a heatmap with its counts (gold down, predicted across)."""
    values = [{"gold": labels[i], "predicted": labels[j], "count": int(cm[i][j])}
              for i in range(len(labels)) for j in range(len(labels))]
    top = max((v["count"] for v in values), default=0)
    axis = {"type": "ordinal", "sort": list(labels)}
    return {
        "title": title, "height": {"step": 30}, "width": "container", "data": {"values": values},
        "encoding": {"x": {"field": "predicted", **axis, "axis": {"labelAngle": -35, "labelOverlap": False}},
                     "y": {"field": "gold", **axis}},
        "layer": [{"mark": "rect", "encoding": {"color": {"field": "count", "type": "quantitative",
                                                          "scale": {"scheme": "blues"}, "legend": None}}},
                  {"mark": {"type": "text", "fontSize": 11},
                   "encoding": {"text": {"field": "count"},
                                "color": {"condition": {"test": f"datum.count > {top / 2}", "value": "white"},
                                          "value": "black"}}}],
    }

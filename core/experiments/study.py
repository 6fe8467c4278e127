"""The reproduction study: every row of a plan, several seeds each, resumable.

    python -m core.study configs/study.yaml                 # run (or continue) the study
    python -m core.study configs/study.yaml --table         # the README table of results
    python -m core.study configs/study.yaml --deltas        # each row vs its baseline, task by task
    python -m core.study configs/study.yaml --geometry      # embedding geometry by training objective
    python -m core.study configs/study.yaml --list          # rows, seeds, what is done
    python -m core.study configs/study.yaml --check RUN_DIR # does this run reproduce its row?
    python -m core.study configs/study.yaml --retire        # remove superseded runs
            [--only ROW ...] [--seeds 0 1] [--keep-weights] [--dry-run]

The plan (``configs/study.yaml``) names an output directory, the seeds, overrides every
run gets (``common``) and the rows: a name, a base recipe, ``set`` overrides (strings
``key=value`` or mappings ``{key: value}``), the row it is compared with (``baseline``),
the metric of that comparison, and the report's claim. Each (row, seed) is one
``python -m core.train`` subprocess into ``<out>/<row>-s<seed>/``; when it finishes:

1. ``python -m analysis.geometry sample CKPT --out CKPT/embeddings.json`` writes the
   run's embedding sample, unless the plan says ``embeddings: false`` (by subprocess:
   core never imports analysis; a missing or failing command is recorded and skipped);
2. one JSON line is appended to ``<out>/results.jsonl``: row, seed, commit, wall
   seconds, the command, the dev metrics;
3. the dev predictions are rewritten by example id only, floats to 4 decimals
   (``core.evaluation.evaluator.slim_predictions``: the sentences are in data/, and readers join them
   back), and everything but the small files (``metrics.json``, ``config.json``,
   ``train_log.jsonl``, ``predictions/``, ``embeddings.json``) is deleted - the weights
   too, unless ``--keep-weights``.

A (row, seed) already in ``results.jsonl`` is skipped, so the command can be started
again after any interruption; a run that was killed mid-way is continued with
``--resume`` from its last resume state (``common`` sets ``train.resume_every``), or
started again if it saved none. ``--table`` prints, per row, mean +- sd over seeds
(sample sd, n - 1) and the difference to the baseline row on the row's metric, reported
as "no difference" when ``|delta| < 2 * sd`` with ``sd`` the pooled sd of the two rows,
``sqrt((sd_row^2 + sd_base^2) / 2)``.

Report files (issue 22): the plan's ``include`` patterns name one file per report
(``configs/study/00X.yaml``) with the report's number, its declared CPU ``budget``
(overrides applied to each of its rows on top of the faithful recipe, and why) and rows
that quote where the report states the row's result (``source``), that result
(``report_result``), the claim, and for a compared row its direction (``expect``). Each
such row gets a verdict (:func:`claim_verdict`): replicated / not replicated / opposite /
cannot tell. A run counts only while its saved config equals its row's resolved config
(:func:`is_current`): change a recipe, a budget or a row's overrides and its old runs are
superseded, re-run by the next study command (``--retire`` removes them at once).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from core.paths import REPO
from core.config.schema import read_yaml_mapping
from core.errors import ConfigError, MinbertError, run_command
from core.jobs.launch import resume_mode, trainer_args
from core.tasks import QUORA_NOTE
from core.train_log import read_jsonl

STUDY_PLAN = REPO / "configs" / "study.yaml"     # the repository's study (the app shows it)
KEPT = ("metrics.json", "config.json", "train_log.jsonl", "predictions", "embeddings.json")
METRICS = (("sst_acc", "SST acc"), ("qqp_acc", "Quora acc*"), ("sts_pearson", "STS r"))
EXPECTS = ("better", "worse", "same")
# the numbers each run's embedding sample keeps (analysis.geometry: Wang & Isola 2020 and two of ours)
GEOMETRY = (("alignment", "alignment ↓"), ("uniformity", "uniformity ↓"), ("knn_purity", "kNN purity ↑"),
            ("sts_spearman", "STS Spearman ↑"))


# ------------------------------------------------------------------ the plan
@dataclass
class Row:
    name: str
    recipe: str
    overrides: list[str] = field(default_factory=list)
    baseline: str | None = None
    metric: str = "mean_score"
    claim: str = ""
    expect: str | None = None          # what the report found vs the baseline: better / worse / same
    report: str = ""
    source: str = ""                   # where the report states this row's result (section / table)
    report_result: str = ""            # the report's own number(s) for this row, from its text
    budget: list[str] = field(default_factory=list)   # the report's declared CPU-budget overrides
    budget_why: str = ""
    legacy: bool = False               # an inline row of the plan from before issue 22 (claim unchecked)
    config: dict | None = None         # the resolved config every run of the row trains with


@dataclass
class GeometryEntry:
    """One training objective in the plan's geometry comparison (the Embeddings page):
    a label, the row whose runs show it, and the row it is measured against."""
    label: str
    row: str
    against: str | None = None


@dataclass
class Plan:
    path: Path
    out: Path
    seeds: list[int]
    common: list[str]
    rows: list[Row]
    budget: str = ""
    embeddings: bool = True            # write each run's embedding sample (the Embeddings page's view)
    geometry: list[GeometryEntry] = field(default_factory=list)   # the objectives compared side by side

    def row(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise ConfigError(f"{self.path}: no row named {name!r}; rows: {', '.join(r.name for r in self.rows)}")


def _override(item: Any, where: str) -> list[str]:
    """``key=value`` strings from a ``set`` entry: a string, or a mapping of keys to values
    (dumped as one-line YAML)."""
    if isinstance(item, str):
        if "=" not in item:
            raise ConfigError(f"{where}: {item!r} is not of the form key=value")
        return [item]
    if isinstance(item, dict):
        return [f"{k}={yaml.safe_dump(v, default_flow_style=True, width=10_000).strip().removesuffix('...').strip()}"
                for k, v in item.items()]
    raise ConfigError(f"{where}: an override is a 'key=value' string or a mapping, got {item!r}")


ROW_KEYS = {"name", "recipe", "set", "baseline", "metric", "claim", "expect", "report", "source", "report_result"}
METRIC_KEYS = ("mean_score", "sst_acc", "qqp_acc", "sts_pearson")


def load_plan(path: str | Path) -> Plan:
    """Read and check a study plan; every row's recipe and overrides are validated with
    ``Config.from_yaml`` before anything runs.

    Rows come from the plan's ``include`` files (``configs/study/00X.yaml``: one report
    each, with its declared CPU ``budget`` and rows that must state the report's source,
    result and claim) and from its inline ``rows`` (older rows, kept until a report file
    replaces every inline row of the same report)."""
    path = Path(path)
    raw = read_yaml_mapping(path, "study plan", "a mapping with a list 'rows' or 'include'")
    allowed = ("out", "seeds", "common", "rows", "budget", "embeddings", "geometry", "include")
    unknown = set(raw) - set(allowed)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: {', '.join(allowed)}")
    if not isinstance(raw.get("embeddings", True), bool):
        raise ConfigError(f"{path}: embeddings is true or false, got {raw['embeddings']!r}")
    seeds = raw.get("seeds", [0, 1, 2])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ConfigError(f"{path}: seeds must be a non-empty list of integers, got {seeds!r}")
    common = [o for i, item in enumerate(raw.get("common") or []) for o in _override(item, f"common[{i}]")]
    included = [row for f in _include_files(path, raw.get("include") or []) for row in _report_file_rows(f)]
    replaced = {row.report for row in included}
    inline = raw.get("rows") or []
    if not isinstance(inline, list):
        raise ConfigError(f"{path}: rows is a list of rows, got {inline!r}")
    rows = included + [row for i, r in enumerate(inline)
                       for row in [_row(r, f"{path}: rows[{i}]", legacy=True)] if row.report not in replaced]
    if not rows:
        raise ConfigError(f"{path}: a study plan needs rows (inline 'rows' or 'include' files that have some)")
    names = [r.name for r in rows]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{path}: row name(s) used twice: {', '.join(twice)}")
    plan = Plan(path, REPO / raw.get("out", "checkpoints/study"), seeds, common, rows, str(raw.get("budget", "")),
                raw.get("embeddings", True), _geometry_entries(path, raw.get("geometry") or [], set(names)))
    for row in rows:
        _resolve(plan, row, set(names))
    return plan


def _include_files(path: Path, patterns: Any) -> list[Path]:
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise ConfigError(f"{path}: include is a list of file patterns, e.g. [configs/study/*.yaml]")
    return [f for p in patterns for f in sorted(REPO.glob(p))]


def _report_file_rows(path: Path) -> list[Row]:
    """The rows of one report's study file, each with the file's report and budget."""
    raw = read_yaml_mapping(path, "report study file", "a mapping with report, budget and rows")
    unknown = set(raw) - {"report", "budget", "rows"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: report, budget, rows")
    report = raw.get("report")
    if not isinstance(report, str) or not report:
        raise ConfigError(f'{path}: report is the report\'s number as a string, e.g. report: "001"')
    budget = raw.get("budget") or {}
    if not isinstance(budget, dict) or set(budget) - {"set", "why"} or (budget and not budget.get("why")):
        raise ConfigError(f"{path}: budget is a mapping {{set: [key=value ...], why: '...'}} (why is required)")
    overrides = [o for j, item in enumerate(budget.get("set") or []) for o in _override(item, f"{path}: budget.set[{j}]")]
    if not isinstance(raw.get("rows"), list) or not raw["rows"]:
        raise ConfigError(f"{path}: rows is a non-empty list")
    rows = []
    for i, r in enumerate(raw["rows"]):
        row = _row(r, f"{path}: rows[{i}]", legacy=False, report=report)
        row.budget, row.budget_why = overrides, str(budget.get("why", ""))
        row.overrides = overrides + row.overrides
        rows.append(row)
    return rows


def _row(r: Any, where: str, legacy: bool, report: str | None = None) -> Row:
    if not isinstance(r, dict) or not isinstance(r.get("name"), str) or not isinstance(r.get("recipe"), str):
        raise ConfigError(f"{where} needs a name and a recipe, e.g. {{name: 004-e6, recipe: configs/...yaml}}")
    extra = set(r) - ROW_KEYS
    if extra:
        raise ConfigError(f"{where} ({r['name']}): unknown key(s) {sorted(extra)}")
    if "/" in r["name"] or not r["name"].strip():
        raise ConfigError(f"{where}: row name {r['name']!r} is empty or contains '/'")
    if r.get("expect") is not None and r["expect"] not in EXPECTS:
        raise ConfigError(f"{where} ({r['name']}): expect must be one of {EXPECTS}, got {r['expect']!r}")
    metric = r.get("metric", "mean_score")
    if metric not in METRIC_KEYS:
        raise ConfigError(f"{where} ({r['name']}): metric must be one of {METRIC_KEYS}, got {metric!r}")
    overrides = [o for j, item in enumerate(r.get("set") or []) for o in _override(item, f"{where}.set[{j}]")]
    row = Row(r["name"], r["recipe"], overrides, r.get("baseline"), metric, str(r.get("claim", "")), r.get("expect"),
              str(report if report is not None else r.get("report", "")), source=str(r.get("source", "")),
              report_result=str(r.get("report_result", "")), legacy=legacy)
    if not legacy:
        _check_claim(row, where)
    return row


def _check_claim(row: Row, where: str) -> None:
    """A report row says where the report states its result, what that result is, and what
    the report claims; a compared row also says which way (``expect``) and on what."""
    need = ["source", "claim"] + (["report_result", "expect"] if row.baseline else [])
    missing = [k for k in need if not getattr(row, k)]
    if missing:
        raise ConfigError(f"{where} ({row.name}): a report row needs {', '.join(missing)} "
                          f"(quoted by place from the report's text)")
    for key in ("source", "claim", "report_result"):
        if "not stated" in getattr(row, key).lower():
            raise ConfigError(f"{where} ({row.name}): {key} says 'not stated'; state what the report's text says")


def _resolve(plan: Plan, row: Row, names: set[str]) -> None:
    from core.config.schema import Config
    if row.baseline is not None and row.baseline not in names:
        raise ConfigError(f"{plan.path}: row {row.name!r} compares with {row.baseline!r}, which is not a row")
    try:
        config = Config.from_yaml(REPO / row.recipe, plan.common + row.overrides)
    except MinbertError as e:
        raise ConfigError(f"{plan.path}: row {row.name!r}: {e}") from None
    row.config = config.to_dict()


def _geometry_entries(path: Path, raw: Any, names: set[str]) -> list[GeometryEntry]:
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: geometry is a list of {{label, row, against}} mappings, got {raw!r}")
    entries = []
    for i, g in enumerate(raw):
        if not isinstance(g, dict) or set(g) - {"label", "row", "against"} or not isinstance(g.get("label"), str) \
                or not isinstance(g.get("row"), str):
            raise ConfigError(f"{path}: geometry[{i}] is a mapping {{label, row, against}}, e.g. "
                              f"{{label: triplet (001), row: 001-triplet, against: 001-baseline}}; got {g!r}")
        for key in ("row", "against"):
            if g.get(key) is not None and g[key] not in names:
                raise ConfigError(f"{path}: geometry[{i}] ({g['label']}): {key} {g[key]!r} is not a row")
        entries.append(GeometryEntry(g["label"], g["row"], g.get("against")))
    return entries


# ------------------------------------------------------------------ results
def read_results(path: Path) -> list[dict]:
    """The finished runs so far (a line cut short by a kill is ignored)."""
    return read_jsonl(path)


def append_result(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # a line cut short by a kill has no newline: start on a fresh line
    cut = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with path.open("a") as f:
        f.write(("\n" if cut else "") + json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def git_commit(results: Path | None = None) -> str:
    """The short commit of the code, ``-dirty`` when a tracked file differs from it. The
    study's own results directory (``results``, committed as the study goes on) does not
    count: a run's appended results are not a change to the code that trained it."""
    pathspec = ["--", "."]
    if results is not None and Path(results).resolve().is_relative_to(REPO):
        pathspec.append(f":(exclude){Path(results).resolve().relative_to(REPO).as_posix()}")
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", *pathspec],
                               capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("-dirty" if dirty else "")


# ------------------------------------------------------------------ current vs superseded results
def is_current(plan: Plan, record: dict) -> bool:
    """Whether a finished (row, seed) was trained with its row's config as the plan
    resolves it today (seed and ``train.resume_every`` aside). A run whose config.json
    is missing cannot be checked and counts as current; a row whose recipe, budget or
    overrides changed since makes its old runs superseded: they are re-run, not reused."""
    try:
        row = plan.row(record["row"])
    except ConfigError:
        return False
    stored = _run_config(run_dir(plan, row, record["seed"]))
    return stored is None or row.config is None or not config_differences(_normalized(stored), row.config)


def _normalized(stored: dict) -> dict:
    """A run's saved config as today's code resolves it: options added since (with the
    default that reproduces the old behaviour) are filled in, so they supersede nothing."""
    from core.config.schema import Config
    try:
        return Config.from_dict(stored).to_dict()
    except MinbertError:
        return stored


def current_results(plan: Plan, results: list[dict]) -> list[dict]:
    """The records of ``results`` that belong to a row of the plan and are current."""
    return [r for r in results if is_current(plan, r)]


def superseded(plan: Plan, results: list[dict]) -> list[dict]:
    """Records of rows the plan no longer has, or of runs trained with a config that differs
    from their row's current one."""
    return [r for r in results if not is_current(plan, r)]


def retire(plan: Plan, records: Sequence[dict], log=print) -> int:
    """Remove superseded runs: their directories (small files; they stay in git history)
    and their lines of results.jsonl (rewritten atomically). Returns how many."""
    from core.atomic import atomic_write_text
    path = plan.out / "results.jsonl"
    drop = {(r["row"], r["seed"]) for r in records}
    if not drop:
        return 0
    keep = [r for r in read_results(path) if (r["row"], r["seed"]) not in drop]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))
    for name, seed in sorted(drop):
        directory = plan.out / f"{name}-s{seed}"
        if directory.is_dir():
            shutil.rmtree(directory)
        log(f"[study] retired {directory.name} (superseded: its row is gone or its config changed)")
    return len(drop)


# ------------------------------------------------------------------ running
def run_dir(plan: Plan, row: Row, seed: int) -> Path:
    return plan.out / f"{row.name}-s{seed}"


def train_command(plan: Plan, row: Row, seed: int, python: str = sys.executable) -> list[str]:
    """The ``python -m core.train`` command of one run (without --resume / --overwrite),
    built by the one builder of trainer command lines (:func:`core.jobs.launch.trainer_args`)."""
    directory = run_dir(plan, row, seed)
    out = str(directory.relative_to(REPO)) if directory.is_relative_to(REPO) else str(directory)
    return [python, *trainer_args(row.recipe, out, seed=seed, overrides=plan.common + row.overrides)]


def shell_command(cmd: Sequence[str]) -> str:
    import shlex
    return " ".join(["python" if i == 0 else shlex.quote(c) for i, c in enumerate(cmd)])


def _finished(directory: Path) -> dict | None:
    try:
        metrics = json.loads((directory / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return metrics if metrics.get("finished") else None


def _subprocess(cmd: list[str], log_path: Path) -> int:
    """Run a command from the repository root, its output appended to ``log_path``;
    Ctrl-C / SIGTERM stop it too."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log:
        log.write(f"\n$ {shell_command(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            return proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise


def embedding_sample(directory: Path, runner: Callable[[list[str], Path], int] = _subprocess) -> str | None:
    """Write ``embeddings.json`` with analysis's CLI, where it exists. Returns None on
    success, else why it was skipped."""
    if not (REPO / "analysis" / "geometry.py").is_file():
        return "analysis/geometry.py is absent"
    out = directory / "embeddings.json"
    cmd = [sys.executable, "-m", "analysis.geometry", "sample", str(directory), "--out", str(out)]
    code = runner(cmd, directory.parent / "logs" / f"{directory.name}.embed.log")
    if code != 0 or not out.is_file():
        return f"`python -m analysis.geometry sample` exited {code} (see logs/{directory.name}.embed.log)"
    return None


def prune(directory: Path) -> None:
    """Keep only the small files of a finished run (the weights go)."""
    for entry in directory.iterdir():
        if entry.name in KEPT:
            continue
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def run_one(plan: Plan, row: Row, seed: int, keep_weights: bool = False,
            runner: Callable[[list[str], Path], int] = _subprocess, log=print) -> dict:
    """Train one (row, seed), resuming what a killed attempt left; sample, record, prune."""
    directory = run_dir(plan, row, seed)
    cmd = train_command(plan, row, seed)
    log_path = plan.out / "logs" / f"{directory.name}.log"
    t0 = time.time()
    if _finished(directory) is None:
        mode = resume_mode(directory)   # the one resume-or-overwrite rule (core/jobs/launch.py)
        log(f"[study] {directory.name}: {'resuming' if mode == ['--resume'] else 'training'} "
            f"(log: {log_path.relative_to(plan.out)})")
        code = runner(cmd + mode, log_path)
        if code != 0 or _finished(directory) is None:
            raise MinbertError(f"{directory.name}: training exited with {code}; see {log_path}")
    metrics = _finished(directory)
    skipped = embedding_sample(directory, runner) if plan.embeddings else "the plan says embeddings: false"
    record = {"row": row.name, "seed": seed, "commit": git_commit(plan.out), "recipe": row.recipe,
              "overrides": plan.common + row.overrides, "command": shell_command(cmd),
              "wall_s": metrics.get("wall_time_s"), "runner_s": round(time.time() - t0, 1),
              "dev": metrics.get("dev", {}), "mean_score": metrics.get("mean_score"),
              "steps": metrics.get("steps"), "embeddings": skipped is None, "checkpoint": str(directory),
              "weights_kept": keep_weights, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if skipped:
        record["embeddings_skipped"] = skipped
    append_result(plan.out / "results.jsonl", record)
    if (directory / "predictions").is_dir():
        from core.evaluation.evaluator import slim_predictions   # torch: only when a run finishes
        slim_predictions(directory / "predictions")
    if not keep_weights:
        prune(directory)
    return record


def run_study(plan: Plan, only: Sequence[str] | None = None, seeds: Sequence[int] | None = None,
              keep_weights: bool = False, dry_run: bool = False,
              runner: Callable[[list[str], Path], int] = _subprocess, log=print) -> list[dict]:
    """Every (row, seed) not yet in results.jsonl, row by row; returns the new records."""
    results = read_results(plan.out / "results.jsonl")
    done = {(r["row"], r["seed"]) for r in current_results(plan, results)}
    rows = [plan.row(n) for n in only] if only else plan.rows
    todo = [(row, s) for row in rows for s in (seeds or plan.seeds) if (row.name, s) not in done]
    stale = [r for r in superseded(plan, results) if (r["row"], r["seed"]) in {(row.name, s) for row, s in todo}]
    if stale and not dry_run:   # a row's config changed: its old runs are re-run, not reused
        retire(plan, stale, log)
    log(f"[study] {len(todo)} run(s) to do, {len(done)} done ({plan.out / 'results.jsonl'})")
    new, failed = [], []
    for i, (row, seed) in enumerate(todo):
        if dry_run:
            log(f"{row.name}-s{seed}: {shell_command(train_command(plan, row, seed))}")
            continue
        t0 = time.time()
        try:
            new.append(run_one(plan, row, seed, keep_weights, runner, log))
        except MinbertError as e:   # one failed run does not stop the others
            failed.append(f"{row.name}-s{seed}")
            log(f"[study] FAILED {e}")
            continue
        log(f"[study] {row.name}-s{seed} done in {time.time() - t0:.0f} s ({i + 1}/{len(todo)}): "
            f"mean {new[-1]['mean_score']}")
    if failed:
        raise MinbertError(f"{len(failed)} run(s) failed: {', '.join(failed)}; their logs are in "
                           f"{plan.out / 'logs'}; run the study again to retry them")
    return new


# ------------------------------------------------------------------ the table
def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; NaN for one value: it is unknown)."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return mean, sd


def metric_of(record: dict, metric: str) -> float | None:
    value = record.get("mean_score") if metric == "mean_score" else record.get("dev", {}).get(metric)
    return None if value is None else float(value)


def compare(row_values: Sequence[float], base_values: Sequence[float]) -> dict:
    """delta of the means, the pooled sd, and the verdict: "no difference" when
    |delta| < 2 sd, else "better" / "worse" (higher metric = better); no verdict from a
    single seed (its sd is unknown)."""
    m, s = mean_sd(row_values)
    mb, sb = mean_sd(base_values)
    delta, sd = m - mb, math.sqrt((s ** 2 + sb ** 2) / 2)
    if min(len(row_values), len(base_values)) < 2:
        verdict = "no verdict (fewer than 2 seeds)"
    else:
        verdict = "no difference" if abs(delta) < 2 * sd or delta == 0 else ("better" if delta > 0 else "worse")
    return {"delta": delta, "sd": sd, "verdict": verdict}


def summarize(plan: Plan, results: list[dict]) -> list[dict]:
    """Per row: seeds, mean +- sd of each metric, wall time, comparison with its baseline."""
    by_row: dict[str, list[dict]] = {}
    for r in results:
        by_row.setdefault(r["row"], []).append(r)
    out = []
    for row in plan.rows:
        runs = sorted(by_row.get(row.name, []), key=lambda r: r["seed"])
        item: dict[str, Any] = {"row": row, "n": len(runs), "metrics": {}}
        for key in [m for m, _ in METRICS] + ["mean_score", row.metric]:
            values = [v for v in (metric_of(r, key) for r in runs) if v is not None]
            if values:
                item["metrics"][key] = mean_sd(values)
        # the table's "mean": over the tasks the runs were scored on (a last single-task
        # stage's mean_score covers that task only)
        means = [v for v in map(_task_mean, runs) if v is not None]
        item["task_mean"] = mean_sd(means) if means else item["metrics"].get("mean_score")
        walls = [r["wall_s"] for r in runs if r.get("wall_s") is not None]
        item["wall"] = mean_sd(walls) if walls else None
        base_runs = by_row.get(row.baseline, []) if row.baseline else []
        own = [v for v in (metric_of(r, row.metric) for r in runs) if v is not None]
        base = [v for v in (metric_of(r, row.metric) for r in base_runs) if v is not None]
        item["compare"] = compare(own, base) if own and base and row.baseline != row.name else None
        out.append(item)
    return out


def _fmt(ms: tuple[float, float] | None) -> str:
    if ms is None:
        return "-"
    return f"{ms[0]:.3f}" if math.isnan(ms[1]) else f"{ms[0]:.3f} ± {ms[1]:.3f}"


def _delta_cell(cmp: dict) -> str:
    """A :func:`compare` result as one cell: delta, 2 pooled sd (when known), verdict."""
    sd = "" if math.isnan(cmp["sd"]) else f" (2 sd {2 * cmp['sd']:.3f})"
    return f"{cmp['delta']:+.3f}{sd}: {cmp['verdict']}"


def _minutes(ms: tuple[float, float] | None) -> str:
    return "-" if ms is None else f"{ms[0] / 60:.1f} min"


VERDICTS = ("replicated", "not replicated", "opposite", "cannot tell")


def claim_verdict(row: Row, cmp: dict | None) -> str:
    """The report's claim against our seeds, by the study's 2-pooled-sd rule
    (:func:`compare`): ``replicated`` (our difference is significant and in the report's
    direction, or "same" and no difference), ``opposite`` (significant, the other way),
    ``not replicated`` (a claimed difference we do not find, or a claimed sameness we do
    not see), ``cannot tell`` (not run yet, or fewer than 2 seeds a side)."""
    if row.baseline is None or row.expect is None:
        return ""
    if cmp is None or cmp["verdict"].startswith("no verdict"):
        return "cannot tell"
    ours = cmp["verdict"]
    if row.expect == "same":
        return "replicated" if ours == "no difference" else "not replicated"
    if ours == "no difference":
        return "not replicated"
    return "replicated" if ours == row.expect else "opposite"


def claim_table(plan: Plan, results: list[dict]) -> list[dict]:
    """One dict per row: the report's source, result and claim beside our mean ± sd over
    seeds and the verdict (:func:`claim_verdict`): what ``--table``, README and the app
    show. Only current runs count (:func:`current_results`)."""
    out = []
    for item in summarize(plan, current_results(plan, results)):
        row, cmp = item["row"], item["compare"]
        mean, sd = item["metrics"].get(row.metric, (None, None))
        out.append({"row": row.name, "report": row.report, "source": row.source,
                    "report_result": row.report_result, "claim": row.claim, "expect": row.expect,
                    "baseline": row.baseline, "metric": row.metric, "seeds": item["n"], "mean": mean, "sd": sd,
                    "delta": None if cmp is None else cmp["delta"], "delta_sd": None if cmp is None else cmp["sd"],
                    "ours": None if cmp is None else cmp["verdict"], "verdict": claim_verdict(row, cmp),
                    "budget": row.budget, "budget_why": row.budget_why, "legacy": row.legacy})
    return out


def replicated(row: Row, cmp: dict | None) -> str:
    """The table's verdict cell: the verdict, then our difference and its 2 sd."""
    if row.baseline is None:
        return "(baseline)"
    if cmp is None:
        return "cannot tell: not run yet" if row.expect else "not run yet"
    why = f"Δ {row.metric} {cmp['delta']:+.3f}" + ("" if math.isnan(cmp["sd"]) else f", 2 sd = {2 * cmp['sd']:.3f}")
    if row.expect is None:
        return f"{cmp['verdict']} ({why})"
    return f"{claim_verdict(row, cmp)}: ours {cmp['verdict']} ({why})"


def _claim_cell(row: Row) -> str:
    if row.legacy:
        return f"{row.claim or '-'} (pre-#22 row: not checked against the report's text)"
    direction = f" [expect {row.expect} than {row.baseline}]" if row.expect else ""
    return f"{row.source}: {row.report_result or '-'}; {row.claim}{direction}"


def format_table(plan: Plan, results: list[dict]) -> str:
    results = current_results(plan, results)
    lines = []
    if plan.budget:
        lines += [f"Budget: {plan.budget}", ""]
    head = ["row", "seeds"] + [name for _, name in METRICS] + ["mean", "wall", "vs baseline",
                                                               "report's result and claim", "verdict", "command"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for item in summarize(plan, results):
        row, m = item["row"], item["metrics"]
        vs = "-" if row.baseline is None else row.baseline
        cmd = shell_command(train_command(plan, row, 0)).replace("-s0", "-s$SEED").replace("--seed 0", "--seed $SEED")
        cells = [row.name, str(item["n"])] + [_fmt(m.get(k)) for k, _ in METRICS] + [
            _fmt(item["task_mean"]), _minutes(item["wall"]), vs, _claim_cell(row),
            replicated(row, item["compare"]), f"`{cmd}`"]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    budgets = {(r.report, r.budget_why, " ".join(r.budget)) for r in plan.rows if r.budget_why}
    lines += ["", "mean ± sd over seeds (sample sd); ours 'no difference' when |Δ| < 2 × pooled sd of the two rows; "
              "verdict: replicated / not replicated / opposite / cannot tell (fewer than 2 seeds a side)."]
    lines += [f"Budget of report {rep}: {why} (overrides: {sets})" for rep, why, sets in sorted(budgets)]
    lines += [f"* {QUORA_NOTE}"]
    return "\n".join(lines)


def _task_mean(record: dict) -> float | None:
    """The mean of the run's final dev figures on the tasks it has (its ``mean_score`` can
    be over fewer: a last single-task stage scores that task only)."""
    values = [v for v in (metric_of(record, m) for m, _ in METRICS) if v is not None]
    return sum(values) / len(values) if values else None


def format_deltas(plan: Plan, results: list[dict]) -> str:
    """Every row with a baseline: the difference on each task's metric and on their mean
    (:func:`_task_mean`; only between rows scored on the same tasks), with 2 pooled sd
    and the verdict (:func:`compare`) - what a row changes, task by task."""
    by_row: dict[str, list[dict]] = {}
    for r in results:
        by_row.setdefault(r["row"], []).append(r)
    keys = [(m, name) for m, name in METRICS] + [("mean_score", "mean")]
    lines = ["| row | vs | seeds | " + " | ".join(f"Δ {name}" for _, name in keys) + " |",
             "|" + "---|" * (3 + len(keys))]
    for row in plan.rows:
        if row.baseline is None or row.name not in by_row or row.baseline not in by_row:
            continue
        cells = [row.name, row.baseline, f"{len(by_row[row.name])} vs {len(by_row[row.baseline])}"]
        scored = [{m for m, _ in METRICS if metric_of(r, m) is not None} for r in by_row[row.name] + by_row[row.baseline]]
        for key, _ in keys:
            if key == "mean_score" and any(tasks != scored[0] for tasks in scored):
                cells.append("- (other tasks)")     # a mean over other tasks is no comparison
                continue
            value = _task_mean if key == "mean_score" else (lambda r, k=key: metric_of(r, k))
            own = [v for v in map(value, by_row[row.name]) if v is not None]
            base = [v for v in map(value, by_row[row.baseline]) if v is not None]
            if not own or not base:
                cells.append("-")
                continue
            cells.append(_delta_cell(compare(own, base)))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Δ = row mean − baseline mean; 'no difference' when |Δ| < 2 × pooled sd of the two rows."]
    return "\n".join(lines)


def geometry_of(plan: Plan, row: str, results: list[dict]) -> list[tuple[int, dict]]:
    """(seed, geometry numbers) of every finished run of ``row`` that kept an embedding
    sample (``embeddings.json``'s ``report``, written by ``analysis.geometry sample``)."""
    out = []
    for r in sorted((r for r in results if r["row"] == row), key=lambda r: r["seed"]):
        path = run_dir(plan, plan.row(row), r["seed"]) / "embeddings.json"
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        report = doc.get("report") if isinstance(doc, dict) else None
        if isinstance(report, dict):
            out.append((r["seed"], report))
    return out


def geometry_summary(plan: Plan, results: list[dict]) -> list[dict]:
    """The plan's geometry comparison: per entry, the seeds of its row, mean and sd of each
    geometry number over them, and the difference to its ``against`` row (:func:`compare`;
    a direction, "higher" / "lower", since what is better depends on the number)."""
    out = []
    for entry in plan.geometry:
        own = geometry_of(plan, entry.row, results)
        base = geometry_of(plan, entry.against, results) if entry.against else []
        item: dict[str, Any] = {"label": entry.label, "row": entry.row, "against": entry.against,
                                "seeds": [s for s, _ in own], "metrics": {}, "compare": {}}
        numbers = lambda runs, key: [float(g[key]) for _, g in runs                     # noqa: E731
                                     if isinstance(g.get(key), (int, float)) and not math.isnan(g[key])]
        for key, _ in GEOMETRY:
            values = numbers(own, key)
            if values:
                item["metrics"][key] = mean_sd(values)
            base_values = numbers(base, key)
            if values and base_values:
                cmp = compare(values, base_values)
                cmp["verdict"] = {"better": "higher", "worse": "lower"}.get(cmp["verdict"], cmp["verdict"])
                item["compare"][key] = cmp
        out.append(item)
    return out


def geometry_rows(plan: Plan, results: list[dict]) -> list[dict[str, str]]:
    """:func:`geometry_summary` as display cells, one dict per entry (column -> text):
    the README table and the Embeddings page show the same."""
    rows = []
    for item in geometry_summary(plan, results):
        cells = {"objective": item["label"], "row": item["row"], "seeds": str(len(item["seeds"]))}
        cells.update({name: _fmt(item["metrics"].get(key)) for key, name in GEOMETRY})
        cells["vs"] = item["against"] or "-"
        for key, name in GEOMETRY:
            cmp = item["compare"].get(key)
            cells[f"Δ {name.split()[0]}"] = "-" if cmp is None else _delta_cell(cmp)
        rows.append(cells)
    return rows


GEOMETRY_NOTE = ("Mean ± sd over seeds of each run's embedding sample (a seeded dev sample per task, the run's own "
                 "pooling); alignment and uniformity after Wang & Isola (2020), lower = tighter / more uniform. "
                 "Δ = row − the row it is measured against; 'no difference' when |Δ| < 2 × pooled sd.")


def format_geometry(plan: Plan, results: list[dict]) -> str:
    """The geometry comparison as a markdown table (README)."""
    rows = geometry_rows(plan, results)
    if not rows:
        return "(the plan has no geometry comparison)"
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r.values()) + " |" for r in rows]
    return "\n".join(lines + ["", GEOMETRY_NOTE])


# ------------------------------------------------------------------ does a run reproduce its row?
# what may differ between a run and the study's runs of its row: the seed, and how often
# the study's runs saved resume state (never read unless a run is resumed)
CHECK_IGNORES = ("train.seed", "train.resume_every")


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def config_differences(a: dict, b: dict, ignore: Sequence[str] = CHECK_IGNORES) -> list[str]:
    """The settings (dotted keys) in which two resolved configs differ, ``ignore`` left out."""
    fa, fb = _flat(a), _flat(b)
    return [f"{k}: {fa.get(k, '(absent)')!r} vs {fb.get(k, '(absent)')!r}"
            for k in sorted(set(fa) | set(fb)) if k not in ignore and fa.get(k) != fb.get(k)]


def _run_config(directory: Path) -> dict | None:
    try:
        saved = json.loads((directory / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return saved.get("config") if isinstance(saved, dict) and isinstance(saved.get("config"), dict) else None


def check_run(plan: Plan, results: list[dict], directory: str | Path) -> dict:
    """Does the finished run in ``directory`` (say ``python -m core.train --config
    configs/report-004-rr-cosine.yaml --seed 3 --out DIR``) reproduce its study row?

    Its row is the one whose runs have the same resolved config (seed and
    ``train.resume_every`` aside); a run that matches no row is compared with the closest
    and the differing settings are listed. Each dev figure is within the row when
    ``|value - mean| < 2 sd`` of the row's seeds (the study's own rule). ``reproduces``:
    True, False, or None when the row has one seed (no sd) or the run is one of the row's
    own (``seed_of_row``: its figures are in the row's mean and sd)."""
    directory = Path(directory)
    metrics = _finished(directory)
    config = _run_config(directory)
    if metrics is None or config is None:
        raise MinbertError(f"{directory}: not a finished run (needs config.json and a metrics.json "
                           f"that says finished)")
    by_row: dict[str, list[dict]] = {}
    for r in results:
        by_row.setdefault(r["row"], []).append(r)
    closest = None
    for row in plan.rows:
        stored = next((c for c in (_run_config(run_dir(plan, row, r["seed"])) for r in by_row.get(row.name, []))
                       if c is not None), None)
        if stored is not None:
            diff = config_differences(stored, config)
            if closest is None or len(diff) < len(closest[1]):
                closest = (row, diff)
    if closest is None:
        raise MinbertError(f"{plan.out}: no finished run of the plan has its config.json to compare with")
    row, diff = closest
    runs = by_row[row.name]
    # one of the row's own runs: its figures are part of the row's mean and sd, so no verdict
    # (and leaving it out would judge it against an sd from one or two other seeds)
    seed = next((r["seed"] for r in runs if run_dir(plan, row, r["seed"]).resolve() == directory.resolve()), None)
    figures = []
    run = {"dev": metrics.get("dev", {}), "mean_score": metrics.get("mean_score")}
    for key, name in list(METRICS) + [("task_mean", "mean")]:
        read = _task_mean if key == "task_mean" else (lambda record, key=key: metric_of(record, key))
        value = read(run)
        values = [v for v in map(read, runs) if v is not None]
        if value is None or not values:
            continue
        mean, sd = mean_sd(values)
        within = None if math.isnan(sd) or seed is not None else abs(value - mean) < 2 * sd or value == mean
        figures.append({"metric": key, "name": name, "value": value, "row_mean": mean, "row_sd": sd,
                        "seeds": len(values), "within": within})
    # None: cannot tell (the row has one seed, so no sd; or the run is one of the row's own)
    withins = [f["within"] for f in figures]
    if diff or not figures or False in withins:
        reproduces = False
    else:
        reproduces = None if None in withins else True
    return {"run": str(directory), "row": row.name, "seed_of_row": seed, "config_differences": diff,
            "figures": figures, "wall_s": metrics.get("wall_time_s"), "reproduces": reproduces}


def format_check(check: dict) -> str:
    lines = [f"{check['run']} vs study row {check['row']}"]
    if check["seed_of_row"] is not None:
        lines += [f"(seed {check['seed_of_row']} of the row itself: the row's mean and sd include it, no verdict)"]
    if check["config_differences"]:
        lines += ["config differs from the row's runs (so it is not that row's recipe):"]
        lines += [f"  {d}" for d in check["config_differences"]]
    lines += ["", "| metric | this run | row mean ± sd (seeds) | within 2 sd? |", "|---|---|---|---|"]
    for f in check["figures"]:
        if f["within"] is None:
            ok = "-" if check["seed_of_row"] is not None else "unknown (one seed)"
        else:
            ok = f"{'yes' if f['within'] else 'no'} (Δ {f['value'] - f['row_mean']:+.3f}, 2 sd {2 * f['row_sd']:.3f})"
        lines.append(f"| {f['name']} | {f['value']:.3f} | {_fmt((f['row_mean'], f['row_sd']))} ({f['seeds']}) | {ok} |")
    answer = {True: "yes", False: "no", None: "cannot tell (too few seeds to know the row's sd)"}[check["reproduces"]]
    if check["seed_of_row"] is not None:
        answer = "it is one of the row's own runs"
    lines += ["", f"reproduces {check['row']}: {answer}",
              f"* {QUORA_NOTE}"]
    return "\n".join(lines)


def _json_safe(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


# ------------------------------------------------------------------ CLI
def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core.study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("plan", help="study plan YAML, e.g. configs/study.yaml")
    p.add_argument("--table", action="store_true", help="print the results table (README) and exit")
    p.add_argument("--deltas", action="store_true",
                   help="print each row's difference to its baseline on every task, and exit")
    p.add_argument("--geometry", action="store_true",
                   help="print the plan's geometry comparison (embedding numbers by objective), and exit")
    p.add_argument("--list", action="store_true", help="list rows and which seeds are done, and exit")
    p.add_argument("--check", metavar="RUN_DIR",
                   help="does this finished run (e.g. a report recipe's own `python -m core.train` at a new "
                        "seed) reproduce its study row: same config, every dev figure within 2 sd? "
                        "Exit status 1 when not")
    p.add_argument("--retire", action="store_true",
                   help="remove superseded runs (rows the plan no longer has, or runs whose config differs from "
                        "their row's current one): their directories and results lines, and exit")
    p.add_argument("--only", nargs="+", metavar="ROW", help="run only these rows")
    p.add_argument("--seeds", nargs="+", type=int, help="run only these seeds")
    p.add_argument("--keep-weights", action="store_true", help="keep each run's model.safetensors")
    p.add_argument("--dry-run", action="store_true", help="print the commands that would run")
    p.add_argument("--json", action="store_true", help="--table, --geometry or --check as JSON")
    return p


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    return run_command(lambda: _study(args), interrupted="interrupted: run the same command again to continue")


def _study(args) -> int:
    plan = load_plan(args.plan)
    results = read_results(plan.out / "results.jsonl")
    if args.table:
        if args.json:
            claims = {c["row"]: c for c in claim_table(plan, results)}
            rows = [{"row": i["row"].name, "n": i["n"], "metrics": i["metrics"], "task_mean": i["task_mean"],
                     "wall": i["wall"], "compare": i["compare"], "claim": claims[i["row"].name]}
                    for i in summarize(plan, current_results(plan, results))]
            print(json.dumps(_json_safe(rows), indent=2))
        else:
            print(format_table(plan, results))
        return 0
    if args.deltas:
        print(format_deltas(plan, results))
        return 0
    if args.geometry:
        if args.json:
            print(json.dumps(_json_safe(geometry_summary(plan, results)), indent=2))
        else:
            print(format_geometry(plan, results))
        return 0
    if args.check:
        check = check_run(plan, results, args.check)
        print(json.dumps(_json_safe(check), indent=2) if args.json else format_check(check))
        return 0 if check["reproduces"] is True else 1
    if args.retire:
        print(f"[study] {retire(plan, superseded(plan, results))} superseded run(s) retired")
        return 0
    if args.list:
        done: dict[str, list[int]] = {}
        for r in current_results(plan, results):
            done.setdefault(r["row"], []).append(r["seed"])
        for row in plan.rows:
            seeds = sorted(done.get(row.name, []))
            print(f"{row.name:24s} {len(seeds)}/{len(plan.seeds)} seeds done {seeds or ''}  "
                  f"{row.recipe} {' '.join(row.overrides)}")
        old = sorted(f"{r['row']}-s{r['seed']}" for r in superseded(plan, results))
        if old:
            print(f"{len(old)} superseded run(s) (row gone or config changed; re-run when their row runs, "
                  f"or remove them with --retire): {', '.join(old)}")
        return 0
    run_study(plan, args.only, args.seeds, args.keep_weights, args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())

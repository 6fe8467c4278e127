"""Behaviour tests (CheckList style): how a checkpoint handles controlled edits of a sentence.

    suite = load_suite()                      # data/behaviour/suite.yaml, checked
    results = run_suite(model, suite)         # one dict per test: pass rate, failures
    summary_frame({"shipped": results})       # test x checkpoint pass rates
    failures_frame(results)                   # every failed case, with its inputs

    python -m analysis.behaviour CHECKPOINT [CHECKPOINT ...] [--suite FILE] [--json]

The suite is data (YAML, with a ``version``). Each test has an ``id``, a ``task`` (sst,
qqp, sts), a ``kind`` from Ribeiro et al. (2020), section 2:

* **MFT** (minimum functionality): each case is one input; its prediction must meet
  ``expect``: ``labels`` (class names it may get) or ``min_score`` / ``max_score``.
* **INV** (invariance): each case is an input and its edit; ``expect.same_label`` (the
  predicted class must not change) and/or ``expect.max_change`` (the score may move at
  most this much).
* **DIR** (directional): each case is a chain of two or more inputs; the score must move
  ``expect.direction`` (``up`` / ``down``) at every step, by more than ``expect.margin``
  (default 0).

Scores: sst the expected class under the predicted distribution (0 very negative ... 4
very positive), qqp P(paraphrase), sts the predicted similarity (0-5).

Cases come from ``inputs`` (MFT: one input each; with ``perturb`` every input becomes
``(input, edit)``, or for ``self`` the pair ``(input, input)``) or from explicit
``cases`` (lists of inputs). A pair-task input is ``[sentence1, sentence2]``. Both may
be templates: ``{slot}`` is filled from ``fill``, a mapping of slot -> values (every
combination, in order) or a list of mappings (one case set per row). Perturbations are
deterministic code, named in the data: ``typo`` (swap the 2nd and 3rd letters of the
longest word, or the 3rd and 4th when those are equal), ``append`` / ``prepend`` (``text``), ``replace`` (``old`` -> ``new``),
``swap`` (a pair's order), ``self`` (a sentence paired with itself). In a pair, typo /
append / prepend edit the first sentence, replace edits both. No network, no generator
model: every input is in the file or made from it by these rules.

Any problem in a suite file is a :class:`~core.errors.MinbertError` naming the test and
the field. Running needs the model (weights): a results-only run cannot be tested.

No Streamlit here.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import yaml

from core.paths import REPO
from core.tasks import PAIR_TASKS, TASK_LABELS, canonical_task
from core.errors import MinbertError, run_command

SUITE_PATH = REPO / "data" / "behaviour" / "suite.yaml"
KINDS = ("MFT", "INV", "DIR")
MAX_CASES = 500                     # per test, after filling templates
SCORES = {"sst": "expected class (0 very negative .. 4 very positive)", "qqp": "P(paraphrase)",
          "sts": "similarity (0-5)"}
SLOT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class BehaviourTest:
    """One test: what it checks and its expanded cases (tuples of inputs; an input is a
    string, or a (sentence1, sentence2) tuple for pair tasks)."""
    id: str
    task: str
    kind: str
    description: str
    capability: str
    expect: dict
    cases: tuple


@dataclass(frozen=True)
class Suite:
    version: Any
    name: str
    tests: tuple
    sha256: str                     # of the file's bytes: results of different suites never mix
    path: str


class SuiteError(MinbertError):
    """A behaviour suite file is malformed (the message names the test and field)."""


# ---------------------------------------------------------------- perturbations
def typo(text: str) -> str:
    """Swap the 2nd and 3rd letters of the longest word (the first of equal length; the
    3rd and 4th when the 2nd and 3rd are the same letter)."""
    words = re.findall(r"[A-Za-z]{4,}", text)
    if not words:
        raise SuiteError(f"typo needs a word of four letters or more: {text!r}")
    word = max(words, key=len)
    i = 1 if word[1] != word[2] else 2
    edited = word[:i] + word[i + 1] + word[i] + word[i + 2:]
    return text.replace(word, edited, 1)


def _edit_first(x, fn):
    return (fn(x[0]), x[1]) if isinstance(x, tuple) else fn(x)


def perturb(x, spec: dict, task: str):
    """``x`` edited by the perturbation ``spec`` (``{"name": ..., ...}``)."""
    name = spec.get("name")
    if name == "typo":
        return _edit_first(x, typo)
    if name in ("append", "prepend"):
        extra = str(spec.get("text") or "")
        if not extra:
            raise SuiteError(f"perturbation {name} needs a 'text'")
        return _edit_first(x, lambda t: f"{t} {extra}" if name == "append" else f"{extra} {t}")
    if name == "replace":
        old, new = str(spec.get("old") or ""), str(spec.get("new") or "")
        parts = x if isinstance(x, tuple) else (x,)
        if not old or not any(old in p for p in parts):
            raise SuiteError(f"replace: {old!r} is not in {x!r}")
        edited = tuple(p.replace(old, new) for p in parts)
        return edited if isinstance(x, tuple) else edited[0]
    if name == "swap":
        if not isinstance(x, tuple):
            raise SuiteError("swap needs sentence pairs (a pair task)")
        return (x[1], x[0])
    if name == "self":
        if isinstance(x, tuple) or task not in PAIR_TASKS:
            raise SuiteError("self pairs a single sentence with itself: give sentences of a pair task")
        return (x, x)
    raise SuiteError(f"unknown perturbation {name!r}; use typo, append, prepend, replace, swap or self")


# ------------------------------------------------------------------- loading
def _fills(fill, where: str) -> list[dict]:
    """The slot assignments of ``fill``: every combination of a mapping's lists, or the
    rows of a list of mappings; one empty assignment without ``fill``."""
    if fill is None:
        return [{}]
    if isinstance(fill, dict):
        keys = list(fill)
        values = [v if isinstance(v, list) else [v] for v in fill.values()]
        return [dict(zip(keys, combo)) for combo in itertools.product(*values)]
    if isinstance(fill, list) and all(isinstance(r, dict) for r in fill):
        return list(fill)
    raise SuiteError(f"{where}: 'fill' must be a mapping of slot -> values or a list of mappings")


def _fill(template, values: dict, where: str):
    if isinstance(template, (list, tuple)):
        return tuple(_fill(t, values, where) for t in template)
    if not isinstance(template, str):
        raise SuiteError(f"{where}: an input must be text (or a pair of texts), got {template!r}")

    def slot(m):
        if m.group(1) not in values:
            raise SuiteError(f"{where}: slot {{{m.group(1)}}} has no value in 'fill'")
        return str(values[m.group(1)])
    return SLOT.sub(slot, template).strip()


def _shape(x, task: str, where: str):
    pair = task in PAIR_TASKS
    if pair != isinstance(x, tuple) or (pair and len(x) != 2) or not all(str(p).strip() for p in
                                                                       (x if pair else (x,))):
        raise SuiteError(f"{where}: {task} inputs are {'[sentence1, sentence2] pairs' if pair else 'sentences'} "
                         f"of non-empty text, got {x!r}")
    return x


def _cases(raw: dict, task: str, kind: str, where: str) -> tuple:
    fills = _fills(raw.get("fill"), where)
    spec = raw.get("perturb")
    if ("inputs" in raw) == ("cases" in raw):
        raise SuiteError(f"{where}: give either 'inputs' or 'cases'")
    cases = []
    for values in fills:
        if "inputs" in raw:
            for template in raw["inputs"] or []:
                x = _fill(template, values, where)
                if spec is None:
                    if kind != "MFT":
                        raise SuiteError(f"{where}: {kind} with 'inputs' needs a 'perturb' (or give 'cases')")
                    cases.append((_shape(x, task, where),))
                    continue
                edited = perturb(x, spec if isinstance(spec, dict) else {"name": spec}, task)
                cases.append((_shape(edited, task, where),) if kind == "MFT" else (x, _shape(edited, task, where)))
        else:
            cases += [tuple(_shape(_fill(i, values, where), task, where) for i in case) for case in raw["cases"]]
    return tuple(dict.fromkeys(cases))      # a template filled twice the same way counts once


def _check_expect(expect: dict, task: str, kind: str, where: str) -> dict:
    if not isinstance(expect, dict) or not expect:
        raise SuiteError(f"{where}: 'expect' must be a mapping")
    names = TASK_LABELS.get(task, [])
    allowed = {"MFT": {"labels", "min_score", "max_score"}, "INV": {"same_label", "max_change"},
               "DIR": {"direction", "margin"}}[kind]
    unknown = set(expect) - allowed
    if unknown:
        raise SuiteError(f"{where}: unknown expectation {sorted(unknown)} for {kind}; use {sorted(allowed)}")
    if "labels" in expect and (not names or not set(expect["labels"]) <= set(names)):
        raise SuiteError(f"{where}: labels must be among {names or 'nothing (sts has no classes)'}")
    if expect.get("same_label") and not names:
        raise SuiteError(f"{where}: same_label needs a classification task (sts has no classes)")
    if kind == "DIR" and expect.get("direction") not in ("up", "down"):
        raise SuiteError(f"{where}: DIR needs expect.direction: up or down")
    for key in ("min_score", "max_score", "max_change", "margin"):
        if key in expect and not isinstance(expect[key], (int, float)):
            raise SuiteError(f"{where}: expect.{key} must be a number")
    return dict(expect)


def _parse_test(raw: dict, index: int) -> BehaviourTest:
    if not isinstance(raw, dict) or not raw.get("id"):
        raise SuiteError(f"test {index + 1}: every test needs an 'id'")
    where = f"test {raw['id']!r}"
    try:
        task = canonical_task(raw.get("task", ""))
    except MinbertError as e:
        raise SuiteError(f"{where}: {e}") from None
    kind = str(raw.get("kind", "")).upper()
    if kind not in KINDS:
        raise SuiteError(f"{where}: kind must be one of {', '.join(KINDS)}, got {raw.get('kind')!r}")
    expect = _check_expect(raw.get("expect"), task, kind, where)
    cases = _cases(raw, task, kind, where)
    sizes = {"MFT": (1, 1), "INV": (2, 2), "DIR": (2, 100)}[kind]
    if not cases or any(not sizes[0] <= len(c) <= sizes[1] for c in cases):
        raise SuiteError(f"{where}: {kind} cases hold {sizes[0]}{'' if sizes[0] == sizes[1] else '+'} input(s)")
    if len(cases) > MAX_CASES:
        raise SuiteError(f"{where}: {len(cases)} cases after filling templates; the limit is {MAX_CASES}")
    return BehaviourTest(str(raw["id"]), task, kind, str(raw.get("description", "")),
                         str(raw.get("capability", "")), expect, cases)


def load_suite(path: str | Path = SUITE_PATH) -> Suite:
    """Read and check a suite file (see the module docstring)."""
    path = Path(path)
    try:
        data = path.read_bytes()
        raw = yaml.safe_load(data)
    except OSError as e:
        raise SuiteError(f"cannot read the behaviour suite {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise SuiteError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(raw, dict) or "version" not in raw or not isinstance(raw.get("tests"), list):
        raise SuiteError(f"{path}: a suite is a mapping with 'version' and a list of 'tests'")
    tests = tuple(_parse_test(t, i) for i, t in enumerate(raw["tests"]))
    ids = [t.id for t in tests]
    if len(set(ids)) != len(ids):
        raise SuiteError(f"{path}: test ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
    return Suite(raw["version"], str(raw.get("name", path.stem)), tests, hashlib.sha256(data).hexdigest(), str(path))


# ------------------------------------------------------------------- running
def predict(model, task: str, inputs: Sequence) -> tuple[np.ndarray, list[str | None]]:
    """(score, predicted class name or None) per input (see :data:`SCORES`)."""
    if task == "sst":
        probs = np.asarray(model.predict_sentiment(list(inputs)), dtype=float)
        return probs @ np.arange(probs.shape[1]), [TASK_LABELS["sst"][int(k)] for k in probs.argmax(axis=1)]
    a, b = [x[0] for x in inputs], [x[1] for x in inputs]
    if task == "qqp":
        prob = np.asarray(model.predict_paraphrase(a, b), dtype=float).reshape(-1)
        return prob, [TASK_LABELS["qqp"][int(p >= 0.5)] for p in prob]
    return np.asarray(model.predict_similarity(a, b), dtype=float).reshape(-1), [None] * len(inputs)


def check_case(test: BehaviourTest, scores: Sequence[float], labels: Sequence[str | None]) -> str | None:
    """Why a case fails its test's expectation, or None when it passes."""
    e = test.expect
    if test.kind == "MFT":
        if "labels" in e and labels[0] not in e["labels"]:
            return f"predicted {labels[0]}, expected {' or '.join(e['labels'])}"
        if "min_score" in e and scores[0] < e["min_score"]:
            return f"score {scores[0]:.3f} < {e['min_score']}"
        if "max_score" in e and scores[0] > e["max_score"]:
            return f"score {scores[0]:.3f} > {e['max_score']}"
        return None
    if test.kind == "INV":
        if e.get("same_label") and labels[0] != labels[1]:
            return f"class changed: {labels[0]} -> {labels[1]}"
        if "max_change" in e and abs(scores[1] - scores[0]) > e["max_change"]:
            return f"score moved {scores[1] - scores[0]:+.3f} (allowed ±{e['max_change']})"
        return None
    margin, sign = float(e.get("margin", 0.0)), 1 if e["direction"] == "up" else -1
    for i in range(len(scores) - 1):
        step = scores[i + 1] - scores[i]
        if sign * step <= margin:
            return f"step {i + 1}: score moved {step:+.3f}, expected {e['direction']} by more than {margin:g}"
    return None


def _text(x) -> str:
    return " ||| ".join(x) if isinstance(x, tuple) else x


def run_test(model, test: BehaviourTest) -> dict:
    """Run one test: ``id, task, kind, capability, description, n, failed, pass_rate,
    failures`` (each failure: ``case``, ``inputs``, ``scores``, ``labels``, ``why``)."""
    unique = list(dict.fromkeys(x for case in test.cases for x in case))
    scores, labels = predict(model, test.task, unique)
    where = {x: i for i, x in enumerate(unique)}
    failures = []
    for k, case in enumerate(test.cases):
        s = [float(scores[where[x]]) for x in case]
        lab = [labels[where[x]] for x in case]
        why = check_case(test, s, lab)
        if why:
            failures.append({"case": k, "inputs": list(case), "scores": s, "labels": lab, "why": why})
    n = len(test.cases)
    return {"id": test.id, "task": test.task, "kind": test.kind, "capability": test.capability,
            "description": test.description, "n": n, "failed": len(failures),
            "pass_rate": (n - len(failures)) / n, "failures": failures}


def served(model) -> list[str]:
    fn = getattr(model, "served_tasks", None)
    return list(fn()) if callable(fn) else ["sst", "qqp", "sts"]


def run_suite(model, suite: Suite | None = None, tasks: Sequence[str] | None = None) -> list[dict]:
    """Every test of ``suite`` (default: the repository's) whose task the model serves
    (and is in ``tasks``); a test of a task it does not serve comes back ``skipped``."""
    suite = suite or load_suite()
    can = served(model)
    results = []
    for test in suite.tests:
        if tasks is not None and test.task not in tasks:
            continue
        if test.task not in can:
            results.append({"id": test.id, "task": test.task, "kind": test.kind, "capability": test.capability,
                            "description": test.description, "n": len(test.cases), "failed": None,
                            "pass_rate": None, "failures": [], "skipped": f"no {test.task} head"})
            continue
        results.append(run_test(model, test))
    return results


def summary_frame(results_by_model: dict[str, list[dict]]) -> pd.DataFrame:
    """One row per test, one pass-rate column per checkpoint (NaN: skipped)."""
    rows: dict[str, dict] = {}
    for name, results in results_by_model.items():
        for r in results:
            row = rows.setdefault(r["id"], {k: r[k] for k in ("id", "task", "kind", "capability", "description", "n")})
            row[name] = r["pass_rate"]
    return pd.DataFrame(list(rows.values()))


def failures_frame(results: list[dict]) -> pd.DataFrame:
    """Every failed case: test id, task, kind, the inputs as text, scores, classes, why."""
    rows = [{"test": r["id"], "task": r["task"], "kind": r["kind"], "case": f["case"],
             "inputs": "  →  ".join(_text(x) for x in f["inputs"]),
             "scores": ", ".join(f"{s:.3f}" for s in f["scores"]),
             "classes": ", ".join(str(lab) for lab in f["labels"]) if f["labels"][0] is not None else "",
             "why": f["why"], "first": f["inputs"][0], "last": f["inputs"][-1]}
            for r in results for f in r["failures"]]
    return pd.DataFrame(rows, columns=["test", "task", "kind", "case", "inputs", "scores", "classes", "why",
                                       "first", "last"])


# ----------------------------------------------------------------------- CLI
def _show(payload: dict) -> None:
    table = summary_frame(payload["results"])
    print(f"behaviour suite {payload['suite']['name']!r} version {payload['suite']['version']} "
          f"(sha256 {payload['suite']['sha256'][:12]})")
    print(table.drop(columns=["description"]).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    for name, results in payload["results"].items():
        fails = failures_frame(results)
        print(f"\n{name}: {len(fails)} failed case(s)" + (":" if len(fails) else ""))
        for row in fails.head(payload["show_failures"]).itertuples():
            print(f"  [{row.test}] {row.inputs}  ({row.why})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.behaviour", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="checkpoint names or directories (with weights)")
    parser.add_argument("--suite", default=str(SUITE_PATH), help="suite file (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--failures", type=int, default=10, help="failed cases listed per checkpoint")
    args = parser.parse_args(argv)

    def body() -> int:
        from analysis.checkpoints import load_model
        suite = load_suite(args.suite)
        results = {name: run_suite(load_model(name), suite) for name in args.checkpoints}
        payload = {"suite": {"name": suite.name, "version": suite.version, "sha256": suite.sha256,
                             "path": suite.path}, "results": results, "show_failures": args.failures}
        if args.json:
            print(json.dumps({k: v for k, v in payload.items() if k != "show_failures"}, indent=2, default=list))
        else:
            _show(payload)
        return 0
    return run_command(body)


if __name__ == "__main__":
    raise SystemExit(main())

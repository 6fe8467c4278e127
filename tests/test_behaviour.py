"""analysis/behaviour.py and the suite in data/behaviour/: every test of the shipped suite
fails on a model built to break its expectation and passes on one built to meet it (so no
test passes whatever the model does), hand cases of each kind, perturbations, suite errors."""
from __future__ import annotations

import numpy as np
import pytest

from analysis import behaviour as B
from core.tasks import TASK_LABELS

SUITE = B.load_suite()


class TableModel:
    """Predictions looked up per input: sst a class index (one-hot probabilities: score =
    the class), qqp a probability, sts a score; ``default`` for anything else."""

    def __init__(self, table: dict, default, tasks=("sst", "qqp", "sts")):
        self.table, self.default, self.tasks = table, default, list(tasks)

    def served_tasks(self):
        return self.tasks

    def _get(self, x):
        return self.table.get(x, self.default)

    def predict_sentiment(self, texts):
        return np.eye(5)[[int(self._get(t)) for t in texts]]

    def predict_paraphrase(self, a, b):
        return np.array([self._get((x, y)) for x, y in zip(a, b)], float)

    predict_similarity = predict_paraphrase


def _label_value(task: str, name: str):
    return TASK_LABELS[task].index(name) if task == "sst" else (0.9 if name == "paraphrase" else 0.1)


def _model_for(test: B.BehaviourTest, meet: bool) -> TableModel:
    """A model that meets (``meet``) or breaks every case of ``test``."""
    e, table = test.expect, {}
    if test.kind == "MFT":
        if "labels" in e:
            names = TASK_LABELS[test.task]
            pick = e["labels"][0] if meet else next(n for n in names if n not in e["labels"])
            value = _label_value(test.task, pick)
        else:
            value = (e["min_score"] + 0.2 if meet else e["min_score"] - 0.5) if "min_score" in e else \
                (e["max_score"] - 0.2 if meet else e["max_score"] + 0.5)
        return TableModel({}, value)
    far = {"sst": (0, 4), "qqp": (0.1, 0.9), "sts": (0.5, 4.5)}[test.task]
    for case in test.cases:
        for i, x in enumerate(case):
            if test.kind == "INV":
                table[x] = far[0] if (meet or i == 0) else far[1]
            else:   # DIR: a strictly monotone chain in the expected direction, or a flat one
                up = i if e["direction"] == "up" else len(case) - 1 - i
                table[x] = (up if test.task == "sst" else float(up)) if meet else far[0]
    return TableModel(table, far[0])


@pytest.mark.parametrize("test", SUITE.tests, ids=lambda t: t.id)
def test_every_suite_test_can_fail_and_can_pass(test):
    broken = B.run_test(_model_for(test, meet=False), test)
    assert broken["failed"] == broken["n"] == len(test.cases) and broken["pass_rate"] == 0.0
    assert all(f["why"] for f in broken["failures"])
    kept = B.run_test(_model_for(test, meet=True), test)
    assert kept["failed"] == 0 and kept["pass_rate"] == 1.0


def test_the_suite_is_versioned_and_covers_every_kind_and_task():
    assert SUITE.version == 1 and len(SUITE.sha256) == 64
    assert {t.kind for t in SUITE.tests} == {"MFT", "INV", "DIR"}
    assert {t.task for t in SUITE.tests} == {"sst", "qqp", "sts"}
    by_id = {t.id: t for t in SUITE.tests}
    # templates: 4 subjects x 5 adjectives; fill rows: one case per row
    assert len(by_id["sst.mft.clear-positive"].cases) == 20
    assert by_id["sst.mft.clear-positive"].cases[0] == ("The movie was wonderful.",)
    assert by_id["qqp.mft.entity-swap"].cases[0] == (("How old is Barack Obama?", "How old is Angela Merkel?"),)
    assert by_id["qqp.inv.order"].cases[0] == (("How do I learn Python quickly?",
                                                 "What is the fastest way to learn Python?"),
                                                ("What is the fastest way to learn Python?",
                                                 "How do I learn Python quickly?"))


def _test(kind: str, expect: dict, task: str = "sst") -> B.BehaviourTest:
    return B.BehaviourTest("t", task, kind, "", "", expect, ())


def test_check_case_by_hand():
    mft = _test("MFT", {"labels": ["positive", "very positive"]})
    assert B.check_case(mft, [2.0], ["neutral"]) == "predicted neutral, expected positive or very positive"
    assert B.check_case(mft, [3.0], ["positive"]) is None
    inv = _test("INV", {"same_label": True, "max_change": 0.5})
    assert "class changed" in B.check_case(inv, [2.0, 2.1], ["neutral", "positive"])
    assert "moved +0.600" in B.check_case(inv, [1.0, 1.6], ["neutral", "neutral"])
    assert B.check_case(inv, [1.0, 1.5], ["neutral", "neutral"]) is None
    up = _test("DIR", {"direction": "up"})
    assert B.check_case(up, [1.0, 2.0, 2.5], [None] * 3) is None
    assert "step 2" in B.check_case(up, [1.0, 2.0, 2.0], [None] * 3)      # a tie is not a move
    assert "step 1" in B.check_case(up, [2.0, 1.0], [None] * 2)
    down = _test("DIR", {"direction": "down", "margin": 0.1})
    assert "by more than 0.1" in B.check_case(down, [2.0, 1.95], [None] * 2)
    sts = _test("MFT", {"min_score": 4.5}, "sts")
    assert B.check_case(sts, [4.4], [None]) == "score 4.400 < 4.5"


def test_perturbations():
    assert B.typo("A gorgeous movie.") == "A grogeous movie."
    assert B.typo("Good food, good feeling") == "Good food, good feleing"     # 2nd = 3rd letter: the next pair
    assert B.perturb(("a", "b"), {"name": "swap"}, "qqp") == ("b", "a")
    assert B.perturb("a b", {"name": "self"}, "sts") == ("a b", "a b")
    assert B.perturb("Good.", {"name": "append", "text": "Fine."}, "sst") == "Good. Fine."
    assert B.perturb(("Is Paris big?", "Is Paris old?"), {"name": "replace", "old": "Paris", "new": "Rome"},
                     "qqp") == ("Is Rome big?", "Is Rome old?")
    for x, spec, task, message in [("Paris", {"name": "replace", "old": "Rome", "new": "X"}, "sst", "not in"),
                                   ("a", {"name": "swap"}, "sst", "pairs"),
                                   ("a", {"name": "self"}, "sst", "pair task"),
                                   ("a b c", {"name": "typo"}, "sst", "four letters"),
                                   ("a", {"name": "shout"}, "sst", "unknown perturbation")]:
        with pytest.raises(B.SuiteError, match=message):
            B.perturb(x, spec, task)


@pytest.mark.parametrize("body, message", [
    ("version: 1\ntests: [{id: a, task: sst, kind: XYZ, expect: {labels: [positive]}, inputs: [x]}]", "kind must be"),
    ("version: 1\ntests: [{id: a, task: sts, kind: MFT, expect: {labels: [positive]}, inputs: [[x, y]]}]",
     "sts has no classes"),
    ("version: 1\ntests: [{id: a, task: sst, kind: MFT, expect: {labels: [positive]}, inputs: ['{who} ok']}]",
     r"slot \{who\} has no value"),
    ("version: 1\ntests: [{id: a, task: sst, kind: MFT, expect: {labels: [positive]}, inputs: [x]},"
     " {id: a, task: sst, kind: MFT, expect: {labels: [positive]}, inputs: [y]}]", "ids repeat"),
    ("version: 1\ntests: [{id: a, task: sst, kind: INV, expect: {same_label: true}, inputs: [x]}]", "needs a 'perturb'"),
    ("version: 1\ntests: [{id: a, task: sst, kind: DIR, expect: {direction: sideways}, cases: [[x, y]]}]",
     "up or down"),
    ("version: 1\ntests: [{id: a, task: qqp, kind: MFT, expect: {labels: [paraphrase]}, inputs: [x]}]",
     r"\[sentence1, sentence2\] pairs"),
    ("tests: []", "'version'"),
    ("version: 1\ntests: [{id: a, task: nope, kind: MFT, expect: {labels: [x]}, inputs: [x]}]", "Unknown task"),
    ("version: [1\n", "not valid YAML"),
])
def test_bad_suites_are_clear_errors(tmp_path, body, message):
    path = tmp_path / "suite.yaml"
    path.write_text(body)
    with pytest.raises(B.SuiteError, match=message):
        B.load_suite(path)


def test_a_real_checkpoint_runs_the_suite_and_the_frames(tiny_model):
    results = B.run_suite(tiny_model, SUITE)
    assert [r["id"] for r in results] == [t.id for t in SUITE.tests]
    for r in results:
        assert r["n"] > 0 and 0.0 <= r["pass_rate"] <= 1.0 and r["failed"] == len(r["failures"])
    summary = B.summary_frame({"tiny": results})
    assert list(summary["id"]) == [t.id for t in SUITE.tests] and summary["tiny"].between(0, 1).all()
    fails = B.failures_frame(results)
    assert len(fails) == sum(r["failed"] for r in results)


def test_a_model_without_a_head_gets_skipped_tests():
    results = B.run_suite(TableModel({}, 0.9, tasks=("qqp", "sts")), SUITE)
    skipped = [r for r in results if r.get("skipped")]
    assert skipped and {r["task"] for r in skipped} == {"sst"} and all(r["pass_rate"] is None for r in skipped)


def test_cli_says_a_results_only_run_needs_weights(tmp_path, capsys):
    run = tmp_path / "results-only"
    run.mkdir()
    (run / "metrics.json").write_text('{"dev": {"sst_acc": 0.5}}')
    assert B.main([str(run)]) == 2
    assert "weights not available" in capsys.readouterr().err

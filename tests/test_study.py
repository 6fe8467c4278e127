"""The study runner (core/experiments/study.py) with a fake trainer: finished runs are skipped on a
restart, a killed run is resumed, weights are pruned, and the table's mean / sd /
verdict match hand-computed values."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import REPO
from core.errors import ConfigError, MinbertError
from core.experiments.study import compare, format_deltas, format_table, load_plan, mean_sd, read_results, run_study

PLAN = """
out: {out}
seeds: [0, 1]
common: [train.resume_every=5]
rows:
  - {{name: base, recipe: {recipe}}}
  - {{name: faster, recipe: {recipe}, set: [train.lr=1.0e-4, {{train.task_ratio: {{sst: 1}}}}],
      baseline: base, claim: "a higher lr helps", expect: better}}
"""


def write_plan(tmp_path: Path) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(PLAN.format(out=tmp_path / "study", recipe=REPO / "configs" / "quick.yaml"))
    return path


class FakeTrainer:
    """Stands in for the subprocesses: `python -m core.train` writes a finished metrics.json and a
    weights file; `analysis.geometry sample` writes embeddings.json."""

    def __init__(self, fail: set[str] = frozenset()):
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, cmd: list[str], log_path: Path) -> int:
        self.calls.append(cmd)
        if "analysis.geometry" in cmd:
            Path(cmd[cmd.index("--out") + 1]).write_text("{}")
            return 0
        out = Path(cmd[cmd.index("--out") + 1])
        if out.name in self.fail:
            return 1
        seed = int(cmd[cmd.index("--seed") + 1])
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.safetensors").write_bytes(b"weights")
        (out / "config.json").write_text("{}")
        (out / "metrics.json").write_text(json.dumps({
            "finished": True, "mean_score": 0.5 + 0.1 * seed, "wall_time_s": 60.0 + seed,
            "dev": {"sst_acc": 0.4, "qqp_acc": 0.8, "sts_pearson": 0.3 + 0.1 * seed}, "steps": 10}))
        return 0

    def trainings(self) -> list[list[str]]:
        return [c for c in self.calls if "core.train" in c]


def test_runs_every_row_and_seed_once_then_skips_them(tmp_path):
    plan = load_plan(write_plan(tmp_path))
    fake = FakeTrainer()
    records = run_study(plan, runner=fake, log=lambda *a: None)
    assert [(r["row"], r["seed"]) for r in records] == [("base", 0), ("base", 1), ("faster", 0), ("faster", 1)]
    cmd = fake.trainings()[2]
    assert cmd[cmd.index("--config") + 1].endswith("quick.yaml") and "--resume" not in cmd
    assert ["--set", "train.resume_every=5"] == cmd[cmd.index("--set"):cmd.index("--set") + 2]
    assert "train.lr=1.0e-4" in cmd and "train.task_ratio={sst: 1}" in cmd
    # only the small files stay
    run = plan.out / "faster-s1"
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "embeddings.json", "metrics.json"]
    lines = read_results(plan.out / "results.jsonl")
    assert len(lines) == 4 and lines[0]["commit"] and lines[3]["dev"]["sts_pearson"] == pytest.approx(0.4)
    assert lines[0]["embeddings"] is True and "-m core.train " in lines[0]["command"]
    # a restart runs nothing
    again = FakeTrainer()
    assert run_study(load_plan(write_plan(tmp_path)), runner=again, log=lambda *a: None) == []
    assert again.calls == []


def test_a_plan_without_embeddings_runs_no_sample(tmp_path):
    path = write_plan(tmp_path)
    path.write_text(path.read_text() + "embeddings: false\n")
    fake = FakeTrainer()
    records = run_study(load_plan(path), only=["base"], seeds=[0], runner=fake, log=lambda *a: None)
    assert [c for c in fake.calls if "analysis.geometry" in c] == []
    assert records[0]["embeddings"] is False and "embeddings: false" in records[0]["embeddings_skipped"]
    path.write_text(path.read_text().replace("embeddings: false", "embeddings: sometimes"))
    with pytest.raises(ConfigError, match="embeddings is true or false"):
        load_plan(path)


def test_killed_runs_resume_or_restart_and_failures_do_not_stop_the_rest(tmp_path):
    plan = load_plan(write_plan(tmp_path))
    (plan.out / "base-s0" / "resume").mkdir(parents=True)
    (plan.out / "base-s0" / "resume" / "state.json").write_text("{}")   # killed after a resume state
    (plan.out / "base-s1").mkdir()                                       # killed before any:
    (plan.out / "base-s1" / "train_log.jsonl").write_text('{"event": "start"}\n')   # a run the trainer keeps
    (plan.out / "faster-s0").mkdir()   # an empty directory holds no run: nothing to resume or overwrite
    (plan.out / "results.jsonl").write_text('{"row": "faster", "seed": 0')   # a line cut short by a kill
    fake = FakeTrainer(fail={"faster-s1"})
    with pytest.raises(MinbertError, match="faster-s1"):
        run_study(plan, runner=fake, log=lambda *a: None)
    modes = {c[c.index("--out") + 1].rsplit("/", 1)[-1]: [x for x in c if x in ("--resume", "--overwrite")]
             for c in fake.trainings()}
    assert modes == {"base-s0": ["--resume"], "base-s1": ["--overwrite"], "faster-s0": [], "faster-s1": []}
    assert {(r["row"], r["seed"]) for r in read_results(plan.out / "results.jsonl")} == \
        {("base", 0), ("base", 1), ("faster", 0)}


def test_table_mean_sd_and_verdicts_by_hand(tmp_path):
    # mean and sample sd (n - 1): [0.5, 0.6, 0.7] -> 0.6, 0.1
    m, s = mean_sd([0.5, 0.6, 0.7])
    assert m == pytest.approx(0.6) and s == pytest.approx(0.1)
    # delta 0.3, pooled sd sqrt((0.1^2 + 0.1^2) / 2) = 0.1: |0.3| >= 0.2 -> better
    cmp = compare([0.8, 0.9, 1.0], [0.5, 0.6, 0.7])
    assert cmp["delta"] == pytest.approx(0.3) and cmp["sd"] == pytest.approx(0.1) and cmp["verdict"] == "better"
    # delta -0.15, pooled sd sqrt((0.2^2 + 0.1^2) / 2) = 0.158: |delta| < 0.316 -> no difference
    cmp = compare([0.25, 0.45, 0.65], [0.5, 0.6, 0.7])
    assert cmp["delta"] == pytest.approx(-0.15) and cmp["sd"] == pytest.approx(math.sqrt(0.025))
    assert cmp["verdict"] == "no difference"
    assert compare([0.9], [0.5, 0.6])["verdict"].startswith("no verdict")     # one seed: sd unknown
    plan = load_plan(write_plan(tmp_path))
    results = [{"row": "base", "seed": s, "mean_score": v, "wall_s": 120.0, "dev": {"sst_acc": v}}
               for s, v in enumerate([0.5, 0.6, 0.7])]
    results += [{"row": "faster", "seed": s, "mean_score": v, "wall_s": 180.0, "dev": {}}
                for s, v in enumerate([0.8, 0.9, 1.0])]
    table = format_table(plan, results)
    base_line = next(line for line in table.splitlines() if line.startswith("| base |"))
    assert "| 3 | 0.600 ± 0.100 |" in base_line and "2.0 min" in base_line
    faster = next(line for line in table.splitlines() if line.startswith("| faster |"))
    assert "0.900 ± 0.100" in faster and "3.0 min" in faster
    assert "replicated: ours better (Δ mean_score +0.300, 2 sd = 0.200)" in faster
    assert "--seed $SEED" in faster and "faster-s$SEED" in faster
    # one seed: its mean alone (its sd is unknown, not 0), and no verdict
    one = format_table(plan, results[:3] + [{"row": "faster", "seed": 0, "mean_score": 0.8, "wall_s": 60.0, "dev": {}}])
    faster = next(line for line in one.splitlines() if line.startswith("| faster |"))
    assert "| 1 |" in faster and "| 0.800 |" in faster and "±" not in faster
    assert "cannot tell: ours no verdict (fewer than 2 seeds) (Δ mean_score +0.200)" in faster
    # task by task: faster has no SST figure, so only its mean is compared (0.9 - 0.6 = +0.3)
    deltas = format_deltas(plan, results)
    faster = next(line for line in deltas.splitlines() if line.startswith("| faster |"))
    assert "| base | 3 vs 3 | - | - | - | - (other tasks) |" in faster    # base has SST figures, faster none
    same = [dict(r, dev={"sst_acc": r["mean_score"]}) if r["row"] == "faster" else r for r in results]
    faster = next(line for line in format_deltas(plan, same).splitlines() if line.startswith("| faster |"))
    assert "| +0.300 (2 sd 0.200): better | - | - | +0.300 (2 sd 0.200): better |" in faster


def test_the_studys_plan_loads_and_every_row_is_a_valid_recipe():
    plan = load_plan(REPO / "configs" / "study.yaml")
    assert plan.seeds == [0, 1, 2]
    names = [r.name for r in plan.rows]
    for prefix in ("000-", "001-", "002-", "003-", "004-"):
        assert any(n.startswith(prefix) for n in names), prefix
    assert {f"004-e{i}" for i in range(1, 7)} <= set(names)
    # issue 11: the Embeddings page compares plain, triplet (001), SimCSE (003) and MNRL (004)
    labels = " ".join(g.label for g in plan.geometry)
    assert all(word in labels for word in ("plain", "triplet", "SimCSE", "MNRL"))
    assert [g.row[:4] for g in plan.geometry[1:]] == ["001-", "003-", "004-"]


def test_commit_is_dirty_for_code_changes_but_not_for_the_studys_own_results(tmp_path, monkeypatch):
    """A study worktree appends to its tracked results.jsonl after every run: that must not
    mark the runs after the first as trained by uncommitted code; a changed code file must."""
    import subprocess
    import core.experiments.study as study

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.jsonl").write_text("{}\n")
    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    monkeypatch.setattr(study, "REPO", tmp_path.resolve())
    clean = study.git_commit(tmp_path / "out")
    assert len(clean) >= 7 and not clean.endswith("-dirty")
    (tmp_path / "out" / "results.jsonl").write_text("{}\n{}\n")
    assert study.git_commit(tmp_path / "out") == clean       # the results directory does not count
    assert study.git_commit() == clean + "-dirty"            # without it named, any change does
    (tmp_path / "code.py").write_text("x = 2\n")
    assert study.git_commit(tmp_path / "out") == clean + "-dirty"


def test_geometry_by_objective_mean_sd_and_direction_by_hand(tmp_path):
    """The plan's geometry comparison reads each run's embeddings.json report: mean and
    sample sd over seeds, and the difference to the 'against' row as a direction."""
    from core.experiments.study import format_geometry, geometry_summary
    path = write_plan(tmp_path)
    path.write_text(path.read_text() + "geometry:\n  - {label: plain, row: base}\n"
                    "  - {label: faster lr, row: faster, against: base}\n")
    plan = load_plan(path)
    # uniformity: base [-3.0, -3.2, -3.4] -> mean -3.2, sd 0.2; faster [-2.0, -2.2, -2.4] -> -2.2, 0.2
    # delta +1.0, pooled sd 0.2: |1.0| >= 0.4 -> higher. alignment: identical -> no difference
    for row, uniformity in (("base", [-3.0, -3.2, -3.4]), ("faster", [-2.0, -2.2, -2.4])):
        for seed, u in enumerate(uniformity):
            d = tmp_path / "study" / f"{row}-s{seed}"
            d.mkdir(parents=True)
            (d / "embeddings.json").write_text(json.dumps({"report": {
                "alignment": 0.5 + 0.1 * seed, "uniformity": u, "knn_purity": None, "sts_spearman": float("nan")}}))
    results = [{"row": r, "seed": s} for r in ("base", "faster") for s in range(3)]
    results.append({"row": "faster", "seed": 9})           # finished without a sample: left out
    plain, faster = geometry_summary(plan, results)
    assert plain["seeds"] == [0, 1, 2] and plain["compare"] == {}
    assert plain["metrics"]["uniformity"] == pytest.approx((-3.2, 0.2))
    assert set(plain["metrics"]) == {"alignment", "uniformity"}        # None / NaN numbers are skipped
    assert faster["compare"]["uniformity"]["delta"] == pytest.approx(1.0)
    assert faster["compare"]["uniformity"]["verdict"] == "higher"
    assert faster["compare"]["alignment"]["verdict"] == "no difference"
    line = next(x for x in format_geometry(plan, results).splitlines() if x.startswith("| faster lr |"))
    assert "| faster | 3 | 0.600 ± 0.100 | -2.200 ± 0.200 | - | - | base |" in line
    assert "+1.000 (2 sd 0.400): higher" in line
    path.write_text(path.read_text() + "  - {label: bad, row: nowhere}\n")
    with pytest.raises(ConfigError, match="geometry.*'nowhere' is not a row"):
        load_plan(path)


def _finished_run(directory: Path, config: dict, sst: float) -> None:
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps({"format": "minbert-checkpoint", "config": config}))
    (directory / "metrics.json").write_text(json.dumps({"finished": True, "dev": {"sst_acc": sst},
                                                        "mean_score": sst, "wall_time_s": 100.0}))


def test_check_finds_a_runs_row_by_config_and_applies_the_2_sd_rule_by_hand(tmp_path, capsys):
    from core.experiments.study import check_run, format_check, main
    plan_path = write_plan(tmp_path)
    plan = load_plan(plan_path)
    results = []
    for seed, sst in enumerate([0.40, 0.42, 0.44]):           # mean 0.42, sample sd 0.02: 2 sd = 0.04
        _finished_run(plan.out / f"base-s{seed}", {"train": {"lr": 1e-4, "resume_every": 5, "seed": seed},
                                                   "model": {"pooling": "mean"}}, sst)
        _finished_run(plan.out / f"faster-s{seed}", {"train": {"lr": 2e-4, "resume_every": 5, "seed": seed},
                                                     "model": {"pooling": "mean"}}, 0.6)
        results += [{"row": "base", "seed": seed, "dev": {"sst_acc": sst}, "mean_score": sst},
                    {"row": "faster", "seed": seed, "dev": {"sst_acc": 0.6}, "mean_score": 0.6}]
    (plan.out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    # the recipe's own command at a new seed, without the study's resume_every
    _finished_run(tmp_path / "new", {"train": {"lr": 1e-4, "seed": 3}, "model": {"pooling": "mean"}}, 0.45)
    check = check_run(plan, results, tmp_path / "new")
    assert check["row"] == "base" and check["config_differences"] == []
    sst = next(f for f in check["figures"] if f["metric"] == "sst_acc")
    assert sst["row_mean"] == pytest.approx(0.42) and sst["row_sd"] == pytest.approx(0.02) and sst["within"]
    assert check["reproduces"] is True and "reproduces base: yes" in format_check(check)
    assert main([str(plan_path), "--check", str(tmp_path / "new")]) == 0
    # 0.47 is 0.05 from the mean: outside 2 sd = 0.04
    _finished_run(tmp_path / "far", {"train": {"lr": 1e-4, "seed": 4}, "model": {"pooling": "mean"}}, 0.47)
    far = check_run(plan, results, tmp_path / "far")
    assert far["row"] == "base" and far["reproduces"] is False
    assert "| no (Δ +0.050, 2 sd 0.040) |" in format_check(far)
    assert main([str(plan_path), "--check", str(tmp_path / "far")]) == 1
    # a different setting: compared with the closest row, and the difference named
    _finished_run(tmp_path / "other", {"train": {"lr": 2e-4, "seed": 3}, "model": {"pooling": "cls"}}, 0.6)
    other = check_run(plan, results, tmp_path / "other")
    assert other["row"] == "faster" and other["config_differences"] == ["model.pooling: 'mean' vs 'cls'"]
    assert other["reproduces"] is False
    # one of the row's own runs: the row's mean and sd include it, so no verdict
    own = check_run(plan, results, plan.out / "base-s0")
    sst = next(f for f in own["figures"] if f["metric"] == "sst_acc")
    assert own["seed_of_row"] == 0 and sst["seeds"] == 3 and sst["row_mean"] == pytest.approx(0.42)
    assert own["reproduces"] is None and sst["within"] is None
    assert check["seed_of_row"] is None
    # a row with one seed has no sd: cannot tell
    one = [r for r in results if not (r["row"] == "base" and r["seed"] > 0)]
    assert check_run(plan, one, tmp_path / "new")["reproduces"] is None
    with pytest.raises(MinbertError, match="not a finished run"):
        check_run(plan, results, tmp_path)
    capsys.readouterr()


# ------------------------------------------------------------------ issue 22: report files, claims, superseded runs
REPORT_FILE = """\
report: "009"
budget: {{set: [train.steps_per_epoch=7], why: "the report trains 100 epochs; we run 7 steps"}}
rows:
  - {{name: 009-base, recipe: {recipe}, source: "Table 1", report_result: "acc 0.50", claim: "the baseline"}}
  - {{name: 009-new, recipe: {recipe}, set: [train.lr=1.0e-4], baseline: 009-base, metric: mean_score,
      expect: {expect}, source: "Table 1; §5", report_result: "acc 0.60 vs 0.50", claim: "new beats base"}}
"""


def test_report_files_bring_budget_and_claims_and_replace_inline_rows(tmp_path, monkeypatch):
    import core.experiments.study as study
    monkeypatch.setattr(study, "REPO", tmp_path)          # include patterns are relative to the repository
    (tmp_path / "rows").mkdir()
    (tmp_path / "rows" / "009.yaml").write_text(REPORT_FILE.format(recipe=REPO / "configs" / "quick.yaml",
                                                                   expect="better"))
    path = write_plan(tmp_path)
    path.write_text(path.read_text().replace("- {name: base,", '- {report: "009", name: base,')
                    .replace("baseline: base,", "baseline: 009-base,") + "include: [rows/*.yaml]\n")
    plan = load_plan(path)
    assert [r.name for r in plan.rows] == ["009-base", "009-new", "faster"]   # inline 009 row replaced
    new = plan.row("009-new")
    assert new.overrides == ["train.steps_per_epoch=7", "train.lr=1.0e-4"]     # budget first, then the row's own
    assert new.config["train"]["steps_per_epoch"] == 7 and new.config["train"]["lr"] == pytest.approx(1e-4)
    assert plan.row("faster").legacy and not new.legacy
    # a report row must say where and what the report states, and may not say "not stated"
    bad = REPORT_FILE.format(recipe=REPO / "configs" / "quick.yaml", expect="better")
    for broken, message in ((bad.replace('report_result: "acc 0.60 vs 0.50", ', ""), "needs report_result"),
                            (bad.replace('claim: "new beats base"', 'claim: "not stated in the text"'), "not stated"),
                            (bad.replace("expect: better, ", ""), "needs expect"),
                            (bad.replace("why: ", "reason: "), "why is required")):
        (tmp_path / "rows" / "009.yaml").write_text(broken)
        with pytest.raises(ConfigError, match=message):
            load_plan(path)


def test_claim_verdicts_by_the_2_sd_rule_by_hand():
    from core.experiments.study import Row, claim_verdict
    better = compare([0.8, 0.9, 1.0], [0.5, 0.6, 0.7])     # delta +0.3 >= 2 x 0.1
    worse = compare([0.5, 0.6, 0.7], [0.8, 0.9, 1.0])      # delta -0.3
    same = compare([0.61, 0.6, 0.59], [0.6, 0.59, 0.61])   # delta 0 -> no difference
    row = lambda expect: Row("r", "x.yaml", baseline="b", expect=expect)   # noqa: E731
    assert [claim_verdict(row("better"), c) for c in (better, worse, same)] == \
        ["replicated", "opposite", "not replicated"]
    assert [claim_verdict(row("worse"), c) for c in (better, worse, same)] == \
        ["opposite", "replicated", "not replicated"]
    assert [claim_verdict(row("same"), c) for c in (better, worse, same)] == \
        ["not replicated", "not replicated", "replicated"]
    assert claim_verdict(row("better"), compare([0.9], [0.5, 0.6])) == "cannot tell"
    assert claim_verdict(row("better"), None) == "cannot tell"


def test_a_row_whose_config_changed_is_rerun_not_reused_and_gone_rows_retire(tmp_path):
    from core.experiments.study import current_results, retire, superseded
    plan = load_plan(write_plan(tmp_path))

    class RealConfig(FakeTrainer):     # writes the resolved config, as python -m core.train does
        def __call__(self, cmd, log_path):
            code = super().__call__(cmd, log_path)
            if "core.train" in cmd and code == 0:
                out = Path(cmd[cmd.index("--out") + 1])
                row = plan.row(out.name.rsplit("-s", 1)[0])
                (out / "config.json").write_text(json.dumps({"config": row.config}))
            return code

    run_study(plan, runner=RealConfig(), log=lambda *a: None)
    results = read_results(plan.out / "results.jsonl")
    assert len(current_results(plan, results)) == 4 and superseded(plan, results) == []
    # the row 'faster' now trains with another lr: its two runs are superseded and re-run
    path = write_plan(tmp_path)
    path.write_text(path.read_text().replace("train.lr=1.0e-4", "train.lr=2.0e-4"))
    plan = load_plan(path)
    assert {(r["row"], r["seed"]) for r in superseded(plan, results)} == {("faster", 0), ("faster", 1)}
    fake = RealConfig()
    records = run_study(plan, runner=fake, log=lambda *a: None)
    assert [(r["row"], r["seed"]) for r in records] == [("faster", 0), ("faster", 1)]
    results = read_results(plan.out / "results.jsonl")
    assert len(results) == 4 and superseded(plan, results) == []        # the old lines are gone
    # a row the plan no longer has: retired with its directory
    path.write_text(path.read_text().replace("  - {name: faster", "  - {name: quicker"))
    plan = load_plan(path)
    gone = superseded(plan, results)
    assert {r["row"] for r in gone} == {"faster"}
    assert retire(plan, gone, log=lambda *a: None) == 2
    assert not (plan.out / "faster-s0").exists() and len(read_results(plan.out / "results.jsonl")) == 2

"""Results-only runs: a run directory kept with metrics.json, predictions/ and
embeddings.json but without model.safetensors. Compare, Errors and Embeddings work from
its files; whatever needs the model says the weights are not available locally."""
from __future__ import annotations

import json
import shutil
import statistics

import numpy as np
import pytest

from analysis import checkpoints, compare, geometry
from core.errors import CheckpointError, MinbertError

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

N = 20


@pytest.fixture(scope="module")
def study(tiny_checkpoint, repo, tmp_path_factory):
    """checkpoints/study: the tiny checkpoint, its embedding sample written by the CLI,
    then its weights removed. Returns (root, the sample file, what the page computes
    with the weights: the STS sample and the four numbers)."""
    from core.model.multitask import MultitaskBert
    root = tmp_path_factory.mktemp("checkpoints")
    run = shutil.copytree(tiny_checkpoint, root / "study")
    out = run / "embeddings.json"
    with pytest.MonkeyPatch.context() as mp:   # its caches go under this root, not the repository's
        mp.setenv("MINBERT_CHECKPOINTS", str(root))
        rc = geometry.main(["--data-dir", str(repo / "data"), "sample", str(run), "--out", str(out),
                            "--n", str(N), "--methods", "pca", "--dims", "2"])
    assert rc == 0
    model = MultitaskBert.load(run)
    reference = (geometry.embed_sample(model, "sts", n=N, seed=0, data_dir=repo / "data", cache_dir=False),
                 geometry.geometry_report(model, n=N, seed=0, data_dir=repo / "data", cache_dir=False))
    (run / "model.safetensors").unlink()
    return root, out, reference


def test_the_sample_file_is_the_pages_view(study, repo):
    root, out, (sample, report) = study
    doc = json.loads(out.read_text())
    assert sorted(doc["samples"]) == ["qqp", "sst", "sts"] and doc["n"] == N
    sts = doc["samples"]["sts"]
    dev_ids = {line.split("\t")[1] for line in (repo / "data" / "sts-dev.csv").read_text().splitlines()[1:]}
    assert len(sts["ids"]) == N and set(sts["ids"]) <= dev_ids
    # what the page computes with the weights: the same sample, PCA and numbers
    assert sts["ids"] == sample.ids
    np.testing.assert_allclose(sts["projections"]["pca-2d"], geometry.project(sample.emb_a, "pca"), atol=5e-4)  # 3 decimals kept
    assert doc["report"]["uniformity"] == pytest.approx(report["uniformity"], abs=1e-9)
    xy_sample, xy, numbers = geometry.stored_view(out, "similarity", "pca", 2)
    assert xy.shape == (N, 2) and len(xy_sample) == N and numbers["n_sts_pairs"] == N
    with pytest.raises(MinbertError, match="no UMAP 2-D projection of sts"):
        geometry.stored_view(out, "sts", "umap", 2)


def test_listed_compared_and_refused_where_the_model_is_needed(study):
    root, _, _ = study
    assert "study" in checkpoints.list_checkpoints(root)
    assert not checkpoints.has_weights("study", root)
    assert checkpoints.results_tasks("study", root) == ["sst", "qqp", "sts"]
    with pytest.raises(CheckpointError, match="weights not available locally"):
        checkpoints.load_model("study", root)
    table = compare.checkpoint_table(root).set_index("name")
    dev = json.loads((root / "study" / "metrics.json").read_text())["dev"]
    assert table.loc["study", "sst_acc"] == dev["sst_acc"] and table.loc["study", "sts_pearson"] == dev["sts_pearson"]
    assert not table.loc["study", "weights"]            # counted by the Compare page as results-only


def test_pages_on_a_results_only_run(study, repo, monkeypatch):
    root, _, _ = study
    monkeypatch.setenv("MINBERT_CHECKPOINTS", str(root))
    monkeypatch.chdir(repo)
    page = lambda name: AppTest.from_file(str(repo / "app" / "views" / name), default_timeout=180)

    errors = page("5_Errors.py")
    errors.session_state["er_ckpts"] = ["study"]
    errors.run()
    assert not errors.exception and not errors.error
    assert {m.label: m.value for m in errors.metric}["examples"] == "16"

    attention = page("4_Attention_and_saliency.py")    # runs the model: offers no results-only run
    attention.session_state["as_ckpts"] = ["study"]
    attention.run()
    assert not attention.exception and not attention.error
    assert "study" not in attention.multiselect(key="as_ckpts").options
    assert "study" not in attention.multiselect(key="as_ckpts").value

    embeddings = page("6_Embeddings.py")
    embeddings.session_state["em_ckpts"] = ["study"]
    embeddings.session_state["em_method"] = "pca"
    embeddings.session_state["em_task"] = "sts"
    embeddings.run()
    assert not embeddings.exception and not embeddings.error
    assert len(embeddings.get("plotly_chart")) == 1
    assert [m.label for m in embeddings.metric][:2] == ["alignment ↓", "uniformity ↓"]
    assert any("Weights not available locally" in c.value for c in embeddings.caption)


def test_predict_offers_only_runs_with_weights(study, repo, monkeypatch):
    """Predict needs the weights: a results-only run is not among its choices (it could
    only answer "weights not available"); app.common.picker_choices is the one list."""
    from app.common import picker_choices
    root, _, _ = study
    monkeypatch.setenv("MINBERT_CHECKPOINTS", str(root))
    monkeypatch.setenv("MINBERT_JOBS_ROOT", str(root))
    at = AppTest.from_file(str(repo / "app" / "views" / "1_Predict.py"), default_timeout=180).run()
    assert not at.exception
    assert "study" not in at.multiselect(key="models").options and "pretrained" in at.multiselect(key="models").options
    assert "study" not in picker_choices(need_weights=True) and "study" in picker_choices(need_weights=False)


def test_a_studys_runs_are_listed_one_level_down(study, tmp_path):
    """core/experiments/study.py keeps its runs in checkpoints/study/<row>-s<seed>/ beside its
    results.jsonl: the pickers and the Compare table name them study/<row>-s<seed>, and
    that name resolves."""
    source = study[0] / "study"   # one results-only run
    root = tmp_path / "checkpoints"
    shutil.copytree(source, root / "study" / "000-mt-s0")
    shutil.copytree(source, root / "study" / "000-mt-s1")
    (root / "study" / "results.jsonl").write_text("")
    shutil.copytree(source, root / "plain")
    assert checkpoints.list_checkpoints(root) == ["pretrained", "plain", "study/000-mt-s0", "study/000-mt-s1"]
    assert sorted(compare.checkpoint_table(root)["name"]) == ["plain", "study/000-mt-s0", "study/000-mt-s1"]
    assert checkpoints.resolve_checkpoint("study/000-mt-s1", root) == str(root / "study" / "000-mt-s1")
    assert not checkpoints.has_weights("study/000-mt-s1", root)


def test_embeddings_page_puts_the_studys_objectives_side_by_side(repo, monkeypatch):
    """On the repository as cloned: the page lists the study plan's four training
    objectives (issue 11: plain, triplet (001), SimCSE (003), MNRL (004)) with their
    geometry numbers over seeds, and one click shows the finished ones side by side from
    their kept embedding samples (no weights needed)."""
    from core.experiments.study import load_plan, read_results
    monkeypatch.delenv("MINBERT_CHECKPOINTS", raising=False)
    monkeypatch.chdir(repo)
    plan = load_plan(repo / "configs" / "study.yaml")
    results = read_results(plan.out / "results.jsonl")
    finished = [g for g in plan.geometry if any(r["row"] == g.row for r in results)]
    if not finished:
        pytest.skip("no run of the study's geometry rows is in this checkout")
    at = AppTest.from_file(str(repo / "app" / "views" / "6_Embeddings.py"), default_timeout=180)
    at.session_state["em_ckpts"] = []          # nothing computed with a model before the click
    at.run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert [label.split()[0] for label in table["objective"]] == ["plain", "triplet", "supervised", "MNRL"]
    seeds = {g.row: str(sum(r["row"] == g.row for r in results)) for g in plan.geometry}
    assert dict(zip(table["row"], table["seeds"])) == seeds
    at.button(key="em_objectives").click().run()
    assert not at.exception and not at.error
    picked = at.multiselect(key="em_ckpts").value
    assert [p.split("/")[1].rsplit("-s", 1)[0] for p in picked] == [g.row for g in finished]
    assert len(at.get("plotly_chart")) == len(finished)
    assert sum("Weights not available locally" in c.value for c in at.caption) == len(finished)


def _compare_page(repo) -> AppTest:
    at = AppTest.from_file(str(repo / "app" / "views" / "3_Compare.py"), default_timeout=180)
    at.session_state["recipe_panel"] = True     # the recipe panel runs when it is open
    return at


def test_compare_page_checks_a_checkpoint_against_its_study_row(repo, monkeypatch):
    """On the repository as cloned: the Compare page's recipe panel says which study row
    was trained with a checkpoint's settings (here one of the row's own runs: the row's
    figures, no verdict); a checkpoint no row was trained like gets no such panel."""
    from core.experiments.study import load_plan, read_results
    monkeypatch.delenv("MINBERT_CHECKPOINTS", raising=False)
    monkeypatch.chdir(repo)
    plan = load_plan(repo / "configs" / "study.yaml")
    results = read_results(plan.out / "results.jsonl")
    seeds = sorted(r["seed"] for r in results if r["row"] == "000-mt")
    if len(seeds) < 3:
        pytest.skip("the study's 000-mt row has fewer than 3 seeds in this checkout")
    at = _compare_page(repo)
    at.run()
    at.selectbox(key="recipe_pick").set_value("study/000-mt").run()    # the row, then its seed
    at.selectbox(key="recipe_pick:seed:study/000-mt").set_value(f"study/000-mt-s{seeds[0]}").run()
    assert not at.exception and not at.error
    said = [m.value for m in at.markdown if "Study row" in m.value]
    assert len(said) == 1 and "`000-mt`" in said[0]
    figures = next(d.value for d in at.dataframe if "within 2 sd" in d.value.columns)
    assert list(figures["metric"]) == ["SST acc", "Quora acc*", "STS r", "mean"]
    assert set(figures["seeds"]) == {len(seeds)} and set(figures["within 2 sd"]) == {"–"}   # its own row: no verdict
    assert "one of the row's own runs" in said[0]
    at.selectbox(key="recipe_pick").set_value("minbert-multitask").run()
    assert not at.exception and not any("Study row" in m.value for m in at.markdown)


def test_compare_page_shows_a_study_rows_claim_beside_our_result(repo, monkeypatch):
    """A study run's recipe panel: the report's claim, our mean ± sd over the row's seeds
    (recomputed here from results.jsonl: sample sd), and core.experiments.study's verdict."""
    from core.experiments.study import claim_table, load_plan, read_results
    monkeypatch.delenv("MINBERT_CHECKPOINTS", raising=False)
    monkeypatch.chdir(repo)
    plan = load_plan(repo / "configs" / "study.yaml")
    results = read_results(plan.out / "results.jsonl")
    claims = {c["row"]: c for c in claim_table(plan, results)}
    row = next((c for c in claims.values() if c["verdict"] and c["seeds"] >= 2), None)
    if row is None:
        pytest.skip("no study row with a verdict and two seeds in this checkout")
    runs = [r for r in results if r["row"] == row["row"]]
    values = [r["mean_score"] if row["metric"] == "mean_score" else r["dev"][row["metric"]] for r in runs]
    if len(values) != row["seeds"]:
        pytest.skip("some of the row's runs were superseded: the check below counts them all")
    at = _compare_page(repo)
    at.run()
    at.selectbox(key="recipe_pick").set_value(f"study/{row['row']}").run()
    assert not at.exception and not at.error
    shown = [t.value for t in at.get("markdown")] + [m.value for m in at.caption]
    assert any(str(row["claim"]) in v for v in shown), shown
    mean_sd = f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"
    assert any(mean_sd in v for v in shown), (mean_sd, shown)
    assert any(v == row["verdict"] for v in shown), (row["verdict"], shown)


def test_compare_page_judges_a_run_of_a_study_rows_settings(repo, tmp_path, monkeypatch):
    """A checkpoint trained with a study row's settings but not one of its runs (here a
    copy of one seed's files, as if someone re-ran it) is judged against the row's mean ±
    sd: a value equal to one of n = 3 seeds lies at most (n - 1) / sqrt(n) = 1.15 sd from
    their mean, so within 2 sd: it reproduces the row."""
    from core.experiments.study import load_plan, read_results
    plan = load_plan(repo / "configs" / "study.yaml")
    seeds = sorted(r["seed"] for r in read_results(plan.out / "results.jsonl") if r["row"] == "004-e6")
    if len(seeds) != 3:
        pytest.skip("the study's 004-e6 row does not have 3 seeds in this checkout")
    root = tmp_path / "checkpoints"
    shutil.copytree(plan.out / f"004-e6-s{seeds[0]}", root / "rerun")
    monkeypatch.setenv("MINBERT_CHECKPOINTS", str(root))
    monkeypatch.chdir(repo)
    at = _compare_page(repo)
    at.run()
    at.selectbox(key="recipe_pick").set_value("rerun").run()
    assert not at.exception and not at.error
    said = [m.value for m in at.markdown if "Study row" in m.value]
    assert len(said) == 1 and "`004-e6`" in said[0] and "reproduces it" in said[0]
    figures = next(d.value for d in at.dataframe if "within 2 sd" in d.value.columns)
    assert set(figures["within 2 sd"]) == {"yes"} and set(figures["seeds"]) == {3}


def test_home_groups_the_studies_runs_by_folder_and_row(repo, monkeypatch):
    """On the repository as cloned: Home lists the models with weights, and the studies'
    results-only runs one line per folder: rows (its <row>-s<seed> names without the
    seed) and runs, counted here from the directories themselves."""
    monkeypatch.delenv("MINBERT_CHECKPOINTS", raising=False)
    monkeypatch.chdir(repo)
    at = AppTest.from_file(str(repo / "app" / "main.py"), default_timeout=180).run()
    assert not at.exception and not at.error
    models = at.dataframe[0].value
    assert models["checkpoint"].iloc[0] == "minbert-multitask (shipped)" and models["dev set"].iloc[0] == "full"
    studies = at.dataframe[1].value.set_index("folder")
    for folder in ("study", "study-best"):
        runs = [p.name for p in (repo / "checkpoints" / folder).iterdir()
                if p.is_dir() and (p / "metrics.json").is_file()]
        if not runs:
            continue
        rows = {name.rsplit("-s", 1)[0] for name in runs}
        assert studies.loc[f"{folder}/", "runs"] == len(runs) and studies.loc[f"{folder}/", "rows"] == len(rows)


def test_compare_page_puts_the_report_claim_beside_our_result(study, repo, tmp_path, monkeypatch):
    """The recipe panel of a study run shows the three things of its row's claim
    (core.experiments.study.claim_table): the report's number and claim, our mean ± sd, the verdict.
    The claim and the run (a results-only copy of the tiny checkpoint, named as the study
    names its runs) are made up, so that the display is checked whatever the study keeps."""
    import streamlit as st

    import core.experiments.study
    root = tmp_path / "checkpoints"
    shutil.copytree(study[0] / "study", root / "study" / "004-e1-s0")
    claim = {"row": "004-e1", "report": "004", "source": "§5, Table 3", "report_result": "dev mean 0.481 vs 0.502",
             "claim": "e1 below e6", "expect": "worse", "baseline": "004-e6", "metric": "mean_score", "seeds": 3,
             "mean": 0.6726, "sd": 0.0119, "delta": -0.0280, "verdict": "replicated"}
    monkeypatch.setattr(core.experiments.study, "claim_table", lambda plan, results: [claim])
    monkeypatch.setenv("MINBERT_CHECKPOINTS", str(root))
    monkeypatch.setenv("MINBERT_JOBS_ROOT", str(root))
    monkeypatch.chdir(repo)
    st.cache_data.clear()
    at = _compare_page(repo)
    at.run()
    at.selectbox(key="recipe_pick").set_value("study/004-e1").run()
    assert not at.exception and not at.error
    shown = [m.value for m in at.markdown] + [c.value for c in at.caption]
    assert any("§5, Table 3" in v for v in shown) and "dev mean 0.481 vs 0.502" in shown
    assert any("Claim: e1 below e6 (expects worse than 004-e6)" in v for v in shown)
    assert "0.673 ± 0.012" in shown and any("Δ vs 004-e6: -0.028" in v for v in shown)
    assert "replicated" in shown
    st.cache_data.clear()

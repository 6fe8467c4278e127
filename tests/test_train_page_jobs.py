"""The Train page's job controls (headless ``AppTest``): backend choice and Slurm
resources with the cluster's defaults, the Slurm job id beside ours, Resume, the
override allow-list, and the read-only and shared-secret modes of an exposed app.

None of these trains a model: refused submissions create nothing, and the one resumed
job is stopped at teardown.
"""
from __future__ import annotations

import json
import time

import pytest
from streamlit.testing.v1 import AppTest

from conftest import REPO
from core.jobs.manager import JobManager

PAGE = next((REPO / "app" / "views").glob("*_Train.py"))


def page() -> AppTest:
    return AppTest.from_file(str(PAGE), default_timeout=120)


def no_exceptions(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


@pytest.fixture
def root(tmp_path, monkeypatch):
    root = tmp_path / "ckpts"
    monkeypatch.setenv("MINBERT_CHECKPOINTS", str(root))
    monkeypatch.setenv("MINBERT_JOBS_ROOT", str(root))
    for var in ("MINBERT_READ_ONLY", "MINBERT_SECRET", "MINBERT_BACKEND"):
        monkeypatch.delenv(var, raising=False)
    yield root
    jm = JobManager(root)
    for job in jm.list(["queued", "running"]):
        jm.cancel(job.id, grace_s=2)


def pick_quick(at: AppTest) -> AppTest:
    return at.selectbox(key="recipe").set_value(REPO / "configs" / "quick.yaml").run()


def test_read_only_mode_offers_no_actions(root, monkeypatch):
    monkeypatch.setenv("MINBERT_READ_ONLY", "1")
    at = pick_quick(page().run())
    no_exceptions(at)
    assert any("read-only" in i.value for i in at.info)
    submit = at.button[0]
    assert submit.label == "Validate and launch" and submit.proto.disabled
    assert JobManager(root).list() == []


def test_secret_mode_needs_the_secret_and_the_allow_list_holds(root, monkeypatch):
    monkeypatch.setenv("MINBERT_SECRET", "s3cret-42")
    at = pick_quick(page().run())
    at.text_area(key="quick:extra").input("model.encoder=/etc")
    at.button[0].click().run()
    no_exceptions(at)
    assert any("secret is missing or wrong" in e.value for e in at.error)
    at.text_input(key="access_secret").input("wrong").run()
    at.button[0].click().run()
    assert any("secret is missing or wrong" in e.value for e in at.error)
    at.text_input(key="access_secret").input("s3cret-42").run()
    at.button[0].click().run()     # past the secret: now the allow-list refuses the override
    assert not any("secret" in e.value for e in at.error)
    assert any("does not accept the override key 'model.encoder'" in e.value for e in at.error)
    assert not any(t.key and t.key.endswith(("model.encoder", "data.dir")) for t in at.text_input)  # not in the form
    assert JobManager(root).list() == []


def test_slurm_backend_form_defaults_from_cluster_yaml(root, monkeypatch, tmp_path):
    root.mkdir(parents=True)
    (root / "cluster.yaml").write_text("slurm:\n  partition: gpu\n  gpus_per_node: 2\n  time: '1:00:00'\n")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))    # no sbatch here
    at = pick_quick(page().run())
    at.radio(key="backend").set_value("slurm").run()
    no_exceptions(at)
    assert at.text_input(key="slurm:partition").value == "gpu"
    assert at.number_input(key="slurm:gpus_per_node").value == 2
    assert at.text_input(key="slurm:time").value == "1:00:00"
    at.button[0].click().run()
    assert any("Not launched" in e.value and "not on PATH" in e.value for e in at.error)
    assert JobManager(root).list() == []


def test_jobs_table_shows_the_slurm_id_and_resume_restarts_a_failed_job(root):
    jm = JobManager(root)
    now = time.time()
    with jm.store.connect() as db:
        for i, (name, backend, cluster_id) in enumerate((("local-run", "local", None), ("cluster-run", "slurm", "4242")),
                                                        start=1):
            (root / "jobs" / str(i)).mkdir(parents=True)
            (root / "jobs" / str(i) / "config.yaml").write_text("not: a recipe\n")
            (root / name).mkdir()
            db.execute("INSERT INTO jobs (name, state, recipe, overrides, device, gpus, checkpoint, job_dir, created, "
                       "started, finished, message, backend, cluster_id, resources) "
                       "VALUES (?, 'failed', ?, '[]', 'cpu', 1, ?, ?, ?, ?, ?, 'killed', ?, ?, ?)",
                       (name, str(REPO / "configs" / "quick.yaml"), str(root / name), str(root / "jobs" / str(i)),
                        now, now, now, backend, cluster_id, json.dumps({"nodes": 1} if cluster_id else {})))
    at = page().run()
    no_exceptions(at)
    table = at.dataframe[0].value
    assert list(table["Slurm job"]) == ["4242", ""]           # newest first: the cluster job
    assert at.selectbox(key="job_pick").value == 2
    assert any("Slurm job 4242" in c.value for c in at.caption)
    at.selectbox(key="job_pick").set_value(1).run()
    resume = next(b for b in at.button if b.label == "Resume this job")
    resume.click().run()
    no_exceptions(at)
    job = JobManager(root).get(1)
    assert job.attempt == 1 and job.state in ("queued", "running", "failed")
    assert "resumed by the user" in job.log_tail()


@pytest.mark.parametrize("extra, message", [
    ("model.sst.layers=1000000", "model.sst.layers = 1000000: out of range"),
    ("model.qqp.hidden=1000000000000", "model.qqp.hidden = 1000000000000: out of range"),
    ("model.sst.layers=64\nmodel.sst.hidden=65536", "GiB to train"),
    ("train.seed=-1", "train.seed = -1: out of range"),
    ("train.lr=.inf", "train.lr = inf: it must be a finite number"),
    ("train.seed=" + "9" * 5000, "not a usable value"),
])
def test_resource_exhaustion_from_the_train_page_is_refused(root, extra, message):
    """Issue 24: what passed the page's override check and validation, then allocated until
    the host ran out of memory, is now one message; nothing is created."""
    at = pick_quick(page().run())
    at.text_area(key="quick:extra").input(extra)
    at.button[0].click().run()
    no_exceptions(at)
    assert any("Not launched" in e.value and message in e.value for e in at.error), [e.value for e in at.error]
    assert JobManager(root).list() == []

"""The Slurm backend.

Without a cluster: Slurm's job states onto ours (state names from squeue(1), "JOB STATE
CODES"), resource validation (formats from sbatch(1)), cluster defaults, the batch script
of a multi-node job, and the manager's bookkeeping against a scripted ``scontrol``
(timeouts and preemptions requeued for auto-resume jobs, foreign cancels as failures).

With a real one-node Slurm on localhost (``tests/slurm_cluster.py``: munged, slurmctld,
slurmd from Debian's slurm-wlm): a tiny job runs to success, a running job is cancelled,
a job killed by ``scancel --signal=KILL`` is failed and resumable and resumes from its
resume state, a job that Slurm requeues (as on preemption) continues with ``--resume``,
and a 2-process job (torchrun, gloo, rendezvous on the first node) trains like one
process. These skip with the reason when Slurm cannot start here, and fail instead
under CI (``CI=true``), where ``.ci/run`` installs slurm-wlm and munge.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

import conftest
from conftest import REPO, TINY, dropout_free_encoder
from core.errors import JobError
from core.jobs.backends import SlurmBackend
from core.jobs.cli import main
from core.jobs.manager import JobManager
from core.jobs.procs import token_pids
from core.jobs.slurm import Resources, SlurmClient, SlurmJob, batch_script, load_cluster, map_state, time_limit_seconds
from slurm_cluster import LocalSlurm, SlurmUnavailable


def wait_for(predicate, timeout: float = 600.0, every: float = 0.5):
    """conftest.wait_for with the longer default a Slurm round trip needs."""
    return conftest.wait_for(predicate, timeout, every)

QUICK = REPO / "configs" / "quick.yaml"
CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
# Two epochs of 40 steps: the first leaves resume state, the second is long enough to
# kill or requeue the job in.
TWO_EPOCHS = ["data.limit=64", "data.eval_limit=8", "train.batch_size=4", "model.max_len=16",
              "train.epochs=2", "train.steps_per_epoch=40", "train.max_steps=null", "train.log_every=1"]
SLOW = ["data.limit=64", "train.max_steps=500", "train.batch_size=8", "model.max_len=32"]


def events(job) -> list[dict]:
    return [json.loads(line) for line in job.train_log.read_text().splitlines() if line.strip()]


# ====================================================================== no cluster
def test_slurm_states_map_onto_job_states():
    # every state name of squeue(1)'s JOB STATE CODES, by what it means for the job
    pending = ["PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD"]
    running = ["RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESIZING", "STOPPED", "SUSPENDED"]
    failed = ["FAILED", "NODE_FAIL", "BOOT_FAIL", "TIMEOUT", "PREEMPTED", "OUT_OF_MEMORY", "DEADLINE",
              "SPECIAL_EXIT", "REVOKED"]
    assert [map_state(s) for s in pending] == ["queued"] * len(pending)
    assert [map_state(s) for s in running] == ["running"] * len(running)
    assert [map_state(s) for s in failed] == ["failed"] * len(failed)
    assert map_state("COMPLETED") == "succeeded" and map_state("CANCELLED") == "cancelled"
    assert map_state("CANCELLED by 0") == "cancelled"   # sacct's spelling


def test_resources_are_validated_as_slurm_takes_them():
    # sbatch(1) --time formats, by hand: 90 min; 5 min 30 s; 1 h 2 min 3 s; 2 days 12 h; 1 d 2 h 3 min 4 s
    assert time_limit_seconds("90") == 5400
    assert time_limit_seconds("5:30") == 330
    assert time_limit_seconds("1:02:03") == 3723
    assert time_limit_seconds("2-12") == 216000
    assert time_limit_seconds("1-02:03") == 93780
    assert time_limit_seconds("1-02:03:04") == 93784
    for bad in ("4h", "1:2:3:4", "", "-1", "1-"):
        with pytest.raises(JobError, match="not a Slurm time"):
            time_limit_seconds(bad)
    r = Resources.from_dict({"nodes": "2", "gpus_per_node": 4, "mem": "32g", "time": "4:00:00", "partition": "gpu,debug"})
    assert (r.nodes, r.gpus_per_node, r.mem, r.partition) == (2, 4, "32G", "gpu,debug")
    for bad, match in (({"mem": "lots"}, "Slurm size"), ({"nodes": 0}, "between 1 and"),
                       ({"partition": "gpu; rm -rf /"}, "partition name"), ({"cpus_per_task": "x"}, "whole number"),
                       ({"gpu": 1}, "unknown resource")):
        with pytest.raises(JobError, match=match):
            Resources.from_dict(bad)


def test_cluster_defaults_from_file_then_environment(tmp_path):
    assert load_cluster(tmp_path, env={}).backend == "local"
    (tmp_path / "cluster.yaml").write_text(
        "backend: slurm\nslurm:\n  partition: gpu\n  gpus_per_node: 2\n  mem: 16G\n  time: '1:00:00'\n"
        "  setup: ['module load cuda']\n  max_requeues: 5\n")
    c = load_cluster(tmp_path, env={})
    assert (c.backend, c.resources.partition, c.resources.gpus_per_node, c.resources.mem) == ("slurm", "gpu", 2, "16G")
    assert c.setup == ["module load cuda"] and c.max_requeues == 5
    c = load_cluster(tmp_path, env={"MINBERT_SLURM_PARTITION": "debug", "MINBERT_SLURM_MEM": "8G",
                                    "MINBERT_BACKEND": "local"})
    assert (c.backend, c.resources.partition, c.resources.mem, c.resources.time) == ("local", "debug", "8G", "1:00:00")
    (tmp_path / "cluster.yaml").write_text("slurm:\n  partitoin: gpu\n")
    with pytest.raises(JobError, match="partitoin"):
        load_cluster(tmp_path, env={})
    (tmp_path / "cluster.yaml").write_text("slurm:\n  time: forever\n")
    with pytest.raises(JobError, match="not a Slurm time"):
        load_cluster(tmp_path, env={})


def test_multi_node_script_runs_torchrun_with_a_rendezvous_on_the_first_node(tmp_path):
    cluster = load_cluster(tmp_path, env={})
    script = batch_script(job_id=7, job_dir=tmp_path / "jobs" / "7", checkpoint=tmp_path / "run",
                          config_path=tmp_path / "jobs" / "7" / "config.yaml", repo=REPO, python="/venv/bin/python",
                          procs_per_node=4, resources=Resources(nodes=2, gpus_per_node=4, cpus_per_task=8,
                                                                mem="64G", time="2:00:00", partition="gpu"),
                          cluster=cluster, token="abc")
    lines = script.splitlines()
    for directive in ("--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=4", "--cpus-per-task=8", "--mem=64G",
                      "--time=2:00:00", "--partition=gpu", "--requeue"):
        assert f"#SBATCH {directive}" in lines
    assert 'HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in lines
    launch = next(line for line in lines if "torch.distributed.run" in line)
    assert launch.startswith("srun ") and "--ntasks-per-node=1" in launch
    for arg in ('--nnodes="$SLURM_JOB_NUM_NODES"', "--nproc_per_node=4", "--rdzv_backend=c10d",
                '--rdzv_endpoint="$HEAD:$PORT"', "-m core.train"):
        assert arg in launch
    assert 'if [ -f "$CKPT/resume/state.json" ]; then MODE=(--resume);' in lines
    # the script is valid bash
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    one = batch_script(job_id=8, job_dir=tmp_path, checkpoint=tmp_path / "run", config_path=tmp_path / "c.yaml",
                       repo=REPO, python="python3", procs_per_node=1, resources=Resources(), cluster=cluster, token="t")
    assert "torch.distributed.run" not in one and "--gpus-per-node" not in one


class ScriptedSlurm(SlurmClient):
    """sbatch/scontrol/scancel answered from a table the test writes."""

    def __init__(self):
        super().__init__()
        self.states: dict[str, str] = {}
        self.scripts: list[str] = []
        self.cancelled: list[str] = []

    def unavailable(self):
        return None

    def submit(self, script: Path) -> str:
        self.scripts.append(script.read_text())
        job_id = str(100 + len(self.scripts))
        self.states[job_id] = "PENDING"
        return job_id

    def job(self, job_id: str, max_age_s: float = 0):
        state = self.states.get(job_id)
        return SlurmJob(id=job_id, state=state, exit_code="0:9" if state == "CANCELLED" else "1:0") if state else None

    def cancel(self, job_id: str, signal=None) -> None:
        self.cancelled.append(job_id)
        self.states[job_id] = "CANCELLED"


@pytest.fixture
def scripted(tmp_path):
    root = tmp_path / "ckpts"
    root.mkdir()
    (root / "cluster.yaml").write_text("slurm:\n  max_requeues: 2\n  cpus_per_task: 1\n")
    fake = ScriptedSlurm()
    return JobManager(root, backends={"slurm": SlurmBackend(fake)}), fake


def test_timeouts_and_preemptions_requeue_auto_resume_jobs(scripted):
    jm, fake = scripted
    job = jm.submit(QUICK, TINY, name="auto", backend="slurm", device="cpu", auto_resume=True)
    assert (job.state, job.cluster_id, job.attempt) == ("queued", "101", 0)
    assert "--cpus-per-task=1" in fake.scripts[0]          # from cluster.yaml
    fake.states["101"] = "RUNNING"
    assert jm.refresh()[0].state == "running"
    fake.states["101"] = "TIMEOUT"
    job = jm.refresh()[0]
    assert (job.state, job.cluster_id, job.attempt) == ("queued", "102", 1)   # resubmitted
    assert "automatic resume after Slurm TIMEOUT" in job.message
    same = lambda text: [x for x in text.splitlines() if "MINBERT_JOB_TOKEN" not in x]   # a new token per attempt
    assert same(fake.scripts[1]) == same(fake.scripts[0])   # the same script: it decides --resume itself
    fake.states["102"] = "PREEMPTED"
    job = jm.refresh()[0]
    assert (job.state, job.cluster_id, job.attempt) == ("queued", "103", 2)
    fake.states["103"] = "NODE_FAIL"                          # max_requeues (2) reached: stays failed
    job = jm.refresh()[0]
    assert (job.state, job.attempt) == ("failed", 2) and job.resumable
    assert "NODE_FAIL" in job.message and "a node of the job failed" in job.message


def test_slurm_failures_cancels_and_lost_jobs(scripted):
    jm, fake = scripted
    plain = jm.submit(QUICK, TINY, name="plain", backend="slurm", device="cpu")
    fake.states[plain.cluster_id] = "TIMEOUT"                # no auto-resume: failed, resumable by hand
    plain = jm.refresh() and jm.get(plain.id)
    assert plain.state == "failed" and plain.resumable and "time limit" in plain.message
    resumed = jm.resume(plain.id)
    assert (resumed.state, resumed.attempt) == ("queued", 1) and resumed.cluster_id != plain.cluster_id

    foreign = jm.submit(QUICK, TINY, name="foreign", backend="slurm", device="cpu")
    fake.states[foreign.cluster_id] = "CANCELLED"            # scancel from a shell, an admin: not ours
    assert jm.refresh() and jm.get(foreign.id).state == "failed"
    assert "outside minBERT" in jm.get(foreign.id).message and jm.get(foreign.id).resumable

    ours = jm.submit(QUICK, TINY, name="ours", backend="slurm", device="cpu")
    fake.states[ours.cluster_id] = "RUNNING"
    jm.refresh()
    assert jm.cancel(ours.id).state == "cancelled" and fake.cancelled == [ours.cluster_id]
    assert jm.refresh() and jm.get(ours.id).state == "cancelled"   # Slurm's CANCELLED does not turn it failed

    hollow = jm.submit(QUICK, TINY, name="hollow", backend="slurm", device="cpu")
    fake.states[hollow.cluster_id] = "COMPLETED"            # exit 0 but the trainer never logged "done"
    assert jm.refresh() and jm.get(hollow.id).state == "failed"

    lost = jm.submit(QUICK, TINY, name="lost", backend="slurm", device="cpu")
    del fake.states[lost.cluster_id]                         # the controller forgot it (MinJobAge)
    Path(lost.checkpoint, "train_log.jsonl").write_text('{"event": "done", "time": 1}\n')
    assert jm.refresh() and jm.get(lost.id).state == "succeeded"


def test_failed_sbatch_creates_nothing(tmp_path):
    class Refusing(ScriptedSlurm):
        def submit(self, script):
            raise JobError("sbatch refused the job: invalid partition specified: nope")
    jm = JobManager(tmp_path / "ckpts", backends={"slurm": SlurmBackend(Refusing())})
    with pytest.raises(JobError, match="invalid partition"):
        jm.submit(QUICK, TINY, name="refused", backend="slurm", resources={"partition": "nope"})
    assert jm.list() == []
    assert list((jm.root / "jobs").iterdir()) == [] and not (jm.root / "refused").exists()


# ================================================================= real cluster
@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except SlurmUnavailable as e:
        if CI:
            pytest.fail(f"CI=true, but a local Slurm could not start (.ci/run installs slurm-wlm and munge): {e}")
        pytest.skip(f"no local Slurm cluster: {e}")
    yield cluster
    cluster.stop()


@pytest.fixture
def sjm(slurm, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", slurm.env["SLURM_CONF"])
    root = tmp_path / "ckpts"
    root.mkdir()
    (root / "cluster.yaml").write_text("backend: slurm\nslurm:\n  partition: debug\n  cpus_per_task: 1\n")
    jm = JobManager(root)
    yield jm
    for job in jm.list(["queued", "running"]):
        try:
            jm.cancel(job.id, grace_s=2)
        except JobError:
            pass


def settled(jm: JobManager, job_id: int, timeout: float = 900.0):
    return wait_for(lambda: (j := (jm.refresh(), jm.get(job_id))[1]).state not in ("queued", "running") and j,
                    timeout=timeout)


def scontrol(slurm, job_id) -> dict:
    out = slurm.run(["scontrol", "show", "job", "-o", str(job_id)]).stdout
    return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)


def test_slurm_job_runs_to_success_and_is_listed(sjm, slurm, capsys):
    job = sjm.submit(QUICK, TINY, name="s-tiny", device="cpu")   # backend from cluster.yaml
    assert job.backend == "slurm" and job.cluster_id and job.cluster_id.isdigit()
    assert scontrol(slurm, job.cluster_id)["JobName"] == f"minbert-{job.id}"
    assert scontrol(slurm, job.cluster_id)["Partition"] == "debug"
    done = settled(sjm, job.id)
    assert done.state == "succeeded", done.message + "\n" + done.log_tail()
    assert scontrol(slurm, job.cluster_id)["JobState"] == "COMPLETED"
    assert done.returncode == 0 and done.progress().phase == "done"
    from core.model.multitask import MultitaskBert
    MultitaskBert.load(done.checkpoint)
    assert main(["--root", str(sjm.root), "list", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["backend"], listed["cluster_id"], listed["state"]) == ("slurm", job.cluster_id, "succeeded")


def test_cancel_a_running_slurm_job(sjm, slurm):
    job = sjm.submit(QUICK, SLOW, name="s-cancel", device="cpu")
    wait_for(lambda: sjm.refresh() and sjm.get(job.id).state == "running" and token_pids(job.token), timeout=300)
    cancelled = sjm.cancel(job.id)
    assert cancelled.state == "cancelled"
    wait_for(lambda: scontrol(slurm, job.cluster_id)["JobState"] == "CANCELLED", timeout=60)
    wait_for(lambda: not token_pids(job.token), timeout=60)   # the trainer is gone
    assert sjm.refresh() and sjm.get(job.id).state == "cancelled"


def test_killed_slurm_job_is_failed_resumable_and_resumes_also_after_a_requeue(sjm, slurm):
    job = sjm.submit(QUICK, TWO_EPOCHS, name="s-kill", device="cpu")
    resume_state = Path(job.checkpoint) / "resume" / "state.json"
    wait_for(lambda: resume_state.is_file(), timeout=600, every=0.1)   # epoch 1 done
    slurm.run(["scancel", "--signal=KILL", job.cluster_id])
    failed = settled(sjm, job.id, timeout=120)
    assert failed.state == "failed" and failed.resumable, failed.message
    assert f"Slurm job {job.cluster_id} ended CANCELLED" in failed.message
    assert failed.progress().phase != "done"                        # it was killed in epoch 2

    first_id = job.cluster_id
    resumed = sjm.resume(job.id)
    assert resumed.state == "queued" and resumed.attempt == 1 and resumed.cluster_id != first_id
    # running again; then Slurm requeues it, as preemption with PreemptMode=REQUEUE does (a
    # requeued job waits for a begin time two minutes ahead: released here at once)
    wait_for(lambda: f"Slurm job {resumed.cluster_id} (restart 0)" in sjm.get(job.id).log_tail(400), timeout=300)
    slurm.run(["scontrol", "requeue", resumed.cluster_id])
    wait_for(lambda: sjm.refresh() and sjm.get(job.id).state == "queued", timeout=60)
    slurm.run(["scontrol", "update", f"JobId={resumed.cluster_id}", "StartTime=now"])
    done = settled(sjm, job.id)
    assert done.state == "succeeded", done.message + "\n" + done.log_tail()
    assert scontrol(slurm, resumed.cluster_id)["Restarts"] == "1"
    starts = [x for x in done.log_tail(400).splitlines() if f"Slurm job {resumed.cluster_id} (restart" in x]
    assert len(starts) == 2 and all(x.endswith("--resume") for x in starts)   # both starts resumed
    ev = events(done)
    assert [e for e in ev if e["event"] == "start"][-1]["resumed_at_step"] == 40   # from epoch 1's state
    assert ev[-1]["event"] == "done" and ev[-1]["step"] == 80


def test_two_process_slurm_job_trains_like_one_process(sjm, slurm, tmp_path):
    encoder = dropout_free_encoder(tmp_path)
    sets = ["data.limit=16", "data.eval_limit=8", "train.batch_size=7", "model.max_len=32", "train.log_every=1",
            f"model.encoder={encoder}", "model.sst.dropout=0", "model.qqp.dropout=0", "model.sts.dropout=0",
            "train.max_steps=3"]
    job = sjm.submit(QUICK, sets, name="s-ddp", device="cpu", gpus=2, resources={"cpus_per_task": 2})
    assert job.gpus == 2 and "torch.distributed.run" in (Path(job.job_dir) / "slurm.sh").read_text()
    single = tmp_path / "single"
    args = [sys.executable, "-m", "core.train", "--config", str(QUICK), "--out", str(single), "--device", "cpu",
            "--no-progress", *sum((["--set", s] for s in [*sets, f"data.dir={REPO / 'data'}"]), [])]
    out = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    done = settled(sjm, job.id)
    assert done.state == "succeeded", done.message + "\n" + done.log_tail()
    end = events(done)[-1]
    assert end["event"] == "done" and end["world_size"] == 2 and end["ranks_in_sync"] is True
    a = load_file(str(single / "model.safetensors"))
    b = load_file(str(Path(done.checkpoint) / "model.safetensors"))
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 2e-5, worst
    from core.model.bert import load_bert_state_dict
    start = load_bert_state_dict(encoder)
    moved = max((a[f"bert.{k}"] - v).abs().max().item() for k, v in start.items() if f"bert.{k}" in a)
    assert moved > 10 * worst    # training moved the weights: the comparison means something

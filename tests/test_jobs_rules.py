"""One owner per rule (issue 23): the resume-or-overwrite rule and the trainer's command
line are core/jobs/launch.py's, and the three places that start a training run - a local
job's worker, a Slurm batch script (decided by bash on the compute node) and a study run -
all follow them. The expected modes come from the trainer's own refusal rule
(core/training/trainer.py ``_prepare_out_dir``: a directory holding ``train_log.jsonl`` is
not replaced without ``--overwrite``; ``--resume`` needs ``resume/state.json``)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from core.experiments import study
from core.jobs.launch import resume_mode, resume_mode_shell, trainer_args
from core.jobs.manager import JobManager
from core.jobs.slurm import Cluster, Resources, batch_script
from core.jobs.store import Job

# checkpoint contents -> the flag a (re)start must pass
CASES = {
    "absent": (None, []),
    "empty": ((), []),
    "started": (("train_log.jsonl",), ["--overwrite"]),
    "resumable": (("train_log.jsonl", "resume/state.json"), ["--resume"]),
    "state only": (("resume/state.json",), ["--resume"]),
}


def _make(root: Path, name: str) -> Path:
    files, _ = CASES[name]
    ckpt = root / name.replace(" ", "-")
    if files is not None:
        ckpt.mkdir(parents=True)
        for f in files:
            (ckpt / f).parent.mkdir(parents=True, exist_ok=True)
            (ckpt / f).write_text("{}\n")
    return ckpt


def _shell_mode(ckpt: Path) -> list[str]:
    script = "\n".join([f"CKPT={ckpt}", *resume_mode_shell("CKPT", "MODE"), 'printf "%s\\n" "${MODE[@]}"'])
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return out.stdout.split()


def _job_mode(tmp_path: Path, name: str) -> list[str]:
    jm = JobManager(tmp_path / "root", sweep=False)
    ckpt = _make(jm.root, name)
    job = Job(id=1, name=ckpt.name, state="running", recipe="r.yaml", overrides=[], device="cpu", gpus=1,
              checkpoint=str(ckpt), job_dir=str(jm.root / "jobs" / "1"), command=[], pid=None, pid_start=None,
              train_pid=None, train_pid_start=None, created=0.0, started=None, finished=None, returncode=None,
              message="")
    cmd = jm.train_command(job)
    return [x for x in cmd if x in ("--resume", "--overwrite")]


def _study_mode(tmp_path: Path, name: str) -> list[str]:
    plan = study.Plan(path=tmp_path / "plan.yaml", out=tmp_path / "study", seeds=[0], common=[],
                      rows=[study.Row("row", "configs/quick.yaml")], embeddings=False)
    directory = study.run_dir(plan, plan.rows[0], 0)
    made = _make(tmp_path / "made", name)
    if made.exists():
        directory.parent.mkdir(parents=True, exist_ok=True)
        made.rename(directory)
    calls = []

    def runner(cmd, log_path):
        calls.append(cmd)
        return 1     # the run "fails": only the command matters here
    with pytest.raises(Exception):
        study.run_one(plan, plan.rows[0], 0, runner=runner, log=lambda *a: None)
    return [x for x in calls[0] if x in ("--resume", "--overwrite")]


@pytest.mark.parametrize("name", sorted(CASES))
def test_worker_slurm_script_and_study_decide_alike(tmp_path, name):
    expected = CASES[name][1]
    ckpt = _make(tmp_path / "plain", name)
    assert resume_mode(ckpt) == expected
    assert _shell_mode(ckpt) == expected
    assert _job_mode(tmp_path, name) == expected
    assert _study_mode(tmp_path, name) == expected


def test_the_slurm_script_carries_the_generated_test_and_the_shared_command_line(tmp_path):
    script = batch_script(job_id=3, job_dir=tmp_path / "jobs" / "3", checkpoint=tmp_path / "run",
                          config_path=tmp_path / "jobs" / "3" / "config.yaml", repo=REPO, python="python3",
                          procs_per_node=1, resources=Resources(), cluster=Cluster(), token="t")
    lines = script.splitlines()
    for line in resume_mode_shell("CKPT", "MODE"):
        assert line in lines
    launch = next(x for x in lines if x.startswith("srun "))
    assert launch.endswith(" ".join(trainer_args(f"{tmp_path}/jobs/3/config.yaml", '"$CKPT"',
                                                 mode=['"${MODE[@]}"'])))


def test_one_builder_orders_the_trainer_arguments():
    # the order python -m core.train has always been given (jobs before issue 23:
    # --config --out --no-progress MODE; the study: --config --out --seed --no-progress --set ...)
    assert trainer_args("c.yaml", "out") == ["-m", "core.train", "--config", "c.yaml", "--out", "out", "--no-progress"]
    assert trainer_args("c.yaml", "out", seed=2, overrides=["a=1", "b=2"], mode=["--resume"]) == [
        "-m", "core.train", "--config", "c.yaml", "--out", "out", "--seed", "2", "--no-progress",
        "--set", "a=1", "--set", "b=2", "--resume"]


def test_submitting_a_job_never_imports_torch_in_the_jobs_process(tmp_path):
    """Layer rule (docs/layout.md): the job system launches the trainer as a process and
    never loads torch itself - not at import, not while checking and creating a job."""
    code = ("import sys; from core.jobs.cli import main; from core.jobs.manager import JobManager; "
            "JobManager.start_queued = lambda self: []; "
            f"jm = JobManager({str(tmp_path / 'root')!r}); "
            f"job = jm.submit({str(REPO / 'configs' / 'quick.yaml')!r}, ['data.limit=8'], device='cpu'); "
            "jm.refresh(); jm.cancel(job.id); print(job.state, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["queued", "False"]

"""Fault injection: a real trainer process SIGKILLed at a random step, then resumed,
ends with bitwise the same weights as an uninterrupted run of the same seed (CPU).

The recipe is quick.yaml with SMART (adversarial term + Bregman teacher), MNRL (an
in-batch loss), learned uncertainty weights and resume state every 2 steps, on a tiny
2-layer encoder so that three trainer processes fit in well under a minute.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.train_log import read_jsonl


REPO = Path(__file__).resolve().parents[1]
STEPS = 10


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    from conftest import write_tiny_encoder
    return write_tiny_encoder(tmp_path_factory.mktemp("tiny_bert"))


def _command(encoder: Path, out: Path, resume: bool = False) -> list[str]:
    overrides = [f"model.encoder={encoder}", "model.max_len=32", "data.eval_limit=8", "train.batch_size=4",
                 "train.epochs=1", f"train.steps_per_epoch={STEPS}", "train.resume_every=2",
                 "train.log_every=1", "train.smart.weight=0.5", "train.smart.bregman_weight=1.0",
                 "train.mnrl_weight=0.1", "train.loss_weighting=uncertainty"]
    cmd = [sys.executable, "-m", "core.train", "--config", "configs/quick.yaml", "--out", str(out),
           "--limit", "16", "--seed", "3", "--device", "cpu", "--no-progress"]
    for o in overrides:
        cmd += ["--set", o]
    return cmd + (["--resume"] if resume else [])


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def _events(out: Path) -> list[dict]:
    return read_jsonl(out / "train_log.jsonl")   # skips a line being written right now


def _run(cmd, timeout=600):
    done = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]


def test_sigkill_at_a_random_step_then_resume_is_bitwise_identical(tiny_encoder, tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    _run(_command(tiny_encoder, reference))

    kill_at = random.Random().randint(3, STEPS - 1)   # after the first resume state (step 2)
    proc = subprocess.Popen(_command(tiny_encoder, killed), cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    try:
        while time.time() < deadline and proc.poll() is None:
            steps = [e["step"] for e in _events(killed) if e["event"] == "step"]
            if steps and max(steps) >= kill_at:
                break
            time.sleep(0.005)
        assert proc.poll() is None, f"the trainer ended before step {kill_at}: {proc.stderr.read()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed_at = max(e["step"] for e in _events(killed) if e["event"] == "step")
    assert killed_at < STEPS and not any(e["event"] == "done" for e in _events(killed))

    saved = [e["step"] for e in _events(killed) if e["event"] == "resume_state"]
    _run(_command(tiny_encoder, killed, resume=True))
    resumes = [e for e in _events(killed) if e["event"] == "resume"]
    assert len(resumes) == 1
    # the last resume state swapped in before the kill (one every 2 steps); its
    # "resume_state" event is logged after the swap, so the kill may fall in between
    assert resumes[0]["step"] % 2 == 0 and 2 <= max(saved) <= resumes[0]["step"] <= killed_at
    print(f"killed at step {killed_at}, resumed from step {resumes[0]['step']}")

    ref, got = load_file(str(reference / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert ref.keys() == got.keys()
    different = [k for k in ref if not torch.equal(ref[k], got[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
    # the dev metrics of the run (from the final weights) are identical as well
    m_ref = json.loads((reference / "metrics.json").read_text())
    m_got = json.loads((killed / "metrics.json").read_text())
    assert m_ref["dev"] == m_got["dev"] and m_ref["steps"] == m_got["steps"] == STEPS
    assert (killed / "COMPLETE").is_file() and not (killed / "resume").exists()

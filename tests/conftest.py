"""Shared fixtures: the packaged encoder and one tiny trained checkpoint per session.

Everything here is sized for a 2-core CI machine: tiny data limits, a few steps.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parents[1]

# Overrides that turn any recipe into a seconds-long smoke run.
TINY = ["data.limit=16", "data.eval_limit=16", "train.batch_size=8", "train.max_steps=3",
        "model.max_len=32", "train.log_every=1"]


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skips without one); run the group with "
                                       "`pytest -m cuda` or `python -m core.gpu_check`")
    config.addinivalue_line("markers", "slurm: runs jobs on a real local Slurm cluster (skips without "
                                       "slurm-wlm/munge/root, fails instead under CI=true)")


@pytest.fixture
def one_thread():
    """Run a test with one intra-op thread (tiny tensors: thread hand-offs cost more
    than they save on 2 shared cores), then restore the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def pretrained():
    from core.model import MultitaskBert
    return MultitaskBert.load("pretrained")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A real checkpoint: all three tasks, bi-encoder paraphrase, cross-encoder STS."""
    from core.config import Config
    from core.train import Trainer
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    cfg = Config.from_yaml(REPO / "configs" / "quick.yaml",
                           TINY + ["model.sts.mode=cross", f"data.dir={REPO / 'data'}"])
    Trainer(cfg, out, progress=False).run()
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    from core.model import MultitaskBert
    return MultitaskBert.load(tiny_checkpoint)

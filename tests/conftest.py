"""Shared fixtures: the packaged encoder and one tiny trained checkpoint per session.

Everything here is sized for a 2-core CI machine: tiny data limits, a few steps.
"""
from __future__ import annotations

import os
import subprocess
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
    from core.model.multitask import MultitaskBert
    return MultitaskBert.load("pretrained")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A real checkpoint: all three tasks, bi-encoder paraphrase, cross-encoder STS."""
    from core.config.schema import Config
    from core.training.trainer import Trainer
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    cfg = Config.from_yaml(REPO / "configs" / "quick.yaml",
                           TINY + ["model.sts.mode=cross", f"data.dir={REPO / 'data'}"])
    Trainer(cfg, out, progress=False).run()
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    from core.model.multitask import MultitaskBert
    return MultitaskBert.load(tiny_checkpoint)


def write_tiny_encoder(directory: Path, max_position_embeddings: int = 64, seed: int = 0) -> Path:
    """An HF-format BERT directory with random weights (2 layers of width 32) and
    MiniLM's tokenizer files: a seconds-fast encoder for trainer and loader tests."""
    import json
    import shutil

    from safetensors.torch import save_file

    from core.model.bert import BertConfig, BertModel, packaged_model_dir
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=max_position_embeddings)
    torch.manual_seed(seed)
    save_file({k: v.contiguous() for k, v in BertModel(config).state_dict().items()},
              str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps({**config.to_dict(), "model_type": "bert"}))
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(packaged_model_dir() / name, directory / name)
    return directory


# Headless Chromium for the browser tests (Debian's package: .ci/install-browser.sh)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A persistent headless Chromium context (Playwright for Python), closed after the module."""
    playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is missing: run .ci/install-browser.sh (apt-get install -y chromium)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with playwright_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000})
        yield context
        context.close()


def dropout_free_encoder(tmp_path: Path) -> Path:
    """A copy of the packaged encoder directory with dropout off, so that runs with
    different numbers of processes can be compared exactly."""
    import json
    import shutil

    from core.model.bert import packaged_model_dir
    src, dst = packaged_model_dir(), tmp_path / "encoder"
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file() and f.name != "config.json":
            shutil.copy(f, dst / f.name)
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def wait_for(predicate, timeout: float = 180.0, every: float = 0.3):
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout`` s."""
    import time
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s")


def type_a_sentence(pg, url: str, text: str, delay: int = 10) -> str:
    """Browser tests: open the Predict page, type ``text`` into its sentence box, and
    return the first prediction's metric once it shows a confidence."""
    pg.goto(f"{url}/Predict")
    box = pg.get_by_role("textbox", name="Sentence", exact=True)
    box.click()
    box.type(text, delay=delay)
    pg.get_by_text("confident").first.wait_for()
    return pg.locator('[data-testid="stMetric"]').first.inner_text()


@pytest.fixture
def small_fs(tmp_path):
    """A real 7 MB tmpfs: room for one tiny checkpoint (~4.7 MB), not for a second one
    beside it (a publication stages the new copy next to the old). Needs root."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=7M", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)

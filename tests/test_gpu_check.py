"""``python -m core.gpu_check`` on a machine without CUDA stops at once with the reason;
its README table is built from the step results."""
from __future__ import annotations

import pytest
import torch

from core.tools import gpu_check


def test_without_cuda_it_says_why(capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: python -m core.gpu_check is the real run")
    assert gpu_check.main(["--out", str(tmp_path / "out")]) == 2
    assert "no CUDA GPU is visible" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_markdown_table_lists_every_step():
    report = {"machine": {"gpus": ["NVIDIA H100 80GB HBM3"], "torch": "2.13.0", "cuda": "12.8", "commit": "abcdef123"},
              "wall_s": 301.0,
              "steps": {"pytest -m cuda": {"returncode": 0, "stdout": "3 passed in 80.1s\n", "wall_s": 85.0},
                        "core.bench --device cuda": {"returncode": 124, "stdout": "", "wall_s": 200.0}},
              "bench": {"encode_ratio_best": 1.25}}
    md = gpu_check.markdown(report)
    assert "NVIDIA H100 80GB HBM3" in md and "commit abcdef1" in md
    assert "| pytest -m cuda | ok: 3 passed in 80.1s | 85 s |" in md
    assert "| core.bench --device cuda | FAILED (exit 124)" in md
    assert "encode_ratio_best = 1.25" in md

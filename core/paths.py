"""Where the project's own folders are: the one owner of "the repository root".

Every module that needs a repository path takes it from here (``Path(__file__)`` arithmetic
in each module broke when modules moved into packages)."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]   # core/paths.py -> the repository root
DATA_DIR = REPO / "data"
CHECKPOINTS_DIR = REPO / "checkpoints"
CONFIGS_DIR = REPO / "configs"

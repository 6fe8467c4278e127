"""Issue 24, deliverables 3 and 4 end to end: hostile checkpoint directories through
``MultitaskBert.load``, saves onto a full / read-only disk through ``MultitaskBert.save``
and the ``python -m core.train`` command line, and a recipe too big for the machine at the start of
``core.training.trainer``.

core/model/multitask.py and core/training/trainer.py call core/model/guard.py, core/atomic.py's
``save_errors`` / ``check_free_space`` and core/config/footprint.py's ``check_fits``: each test
here fails without those calls (they were written, marked xfail, before the calls were
added). The guards themselves are tested directly in tests/test_checkpoint_guard.py,
tests/test_reliability_checkpoints.py and tests/test_limits.py.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.config.schema import Config
from core.errors import CheckpointError
from core.model.guard import COMPLETE_MARKER
from core.model.multitask import MultitaskBert

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from conftest import write_tiny_encoder
    root = tmp_path_factory.mktemp("guard_load")
    (root / "enc").mkdir()
    encoder = write_tiny_encoder(root / "enc")
    torch.manual_seed(1)
    model = MultitaskBert.from_config(Config.from_dict({"model": {"encoder": str(encoder), "max_len": 32}}))
    return model, model.save(root / "base")


@pytest.fixture
def ck(saved, tmp_path) -> Path:
    shutil.copytree(saved[1], tmp_path / "ck", symlinks=True)
    return tmp_path / "ck"


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _reseal(ck: Path) -> None:
    """The marker lists the edited files' new sizes: the check under test, not the size
    check, is what refuses the directory."""
    marker = json.loads((ck / COMPLETE_MARKER).read_text())
    marker["files"] = {k: ((ck / k).stat().st_size if (ck / k).is_file() else v) for k, v in marker["files"].items()}
    (ck / COMPLETE_MARKER).write_text(json.dumps(marker))


def _link_outside(ck: Path, name: str) -> None:
    outside = ck.parent / f"outside-{name}"
    shutil.move(ck / name, outside)
    (ck / name).symlink_to(outside)


CASES = {
    "config.json is a link out": (lambda ck: _link_outside(ck, "config.json"), "outside the checkpoint directory"),
    "COMPLETE lists an absolute path": (
        lambda ck: _edit_json(ck / COMPLETE_MARKER, lambda m: m["files"].update(
            {"/etc/hostname": os.path.getsize("/etc/hostname")})), "not a plain file name"),
    "COMPLETE lists ../": (
        lambda ck: _edit_json(ck / COMPLETE_MARKER, lambda m: m["files"].update(
            {"../outside": 0})) or (ck.parent / "outside").write_text(""), "not a plain file name"),
    "has_pooler is a string": (lambda ck: _edit_json(ck / "config.json", lambda m: m.update(has_pooler="yes")),
                               "has_pooler must be true or false"),
    "trained.step is negative": (lambda ck: _edit_json(ck / "config.json", lambda m: m.update(trained={"step": -1})),
                                 "trained must be a mapping with whole-number"),
    "tokenizer_file reaches out": (
        lambda ck: _edit_json(ck / "tokenizer_config.json", lambda c: c.update(tokenizer_file="../../etc/passwd")),
        "not a plain file name"),
    "tokenizer_class is another": (
        lambda ck: _edit_json(ck / "tokenizer_config.json", lambda c: c.update(tokenizer_class="GPT2Tokenizer")),
        "tokenizer_class must be one of"),
    "auto_map names code": (
        lambda ck: _edit_json(ck / "tokenizer_config.json", lambda c: c.update(auto_map={"AutoTokenizer": ["x.Y", None]})),
        "auto_map is not accepted"),
    "chat_templates folder": (
        lambda ck: (ck / "chat_templates").mkdir() or (ck / "chat_templates" / "t.jinja").write_text("{{ 7 * 7 }}"),
        "chat_templates is not part of a BERT checkpoint"),
    "weights header too long": (
        lambda ck: (ck / "model.safetensors").write_bytes(
            (10**12).to_bytes(8, "little") + (ck / "model.safetensors").read_bytes()[8:]),
        "header length .* does not fit the file"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_load_refuses_hostile_checkpoints_with_a_checkpoint_error(ck, case):
    damage, message = CASES[case]
    damage(ck)
    _reseal(ck)
    with pytest.raises(CheckpointError, match=message):
        MultitaskBert.load(ck)


def test_load_refuses_a_v1_checkpoint_whose_tokenizer_links_out(ck):
    """Format 1 (no COMPLETE marker, e.g. older shipped checkpoints): the file checks
    apply without the marker too."""
    (ck / COMPLETE_MARKER).unlink()
    _edit_json(ck / "config.json", lambda m: m.update(format_version=1))
    _link_outside(ck, "tokenizer.json")
    with pytest.raises(CheckpointError, match="outside the checkpoint directory"):
        MultitaskBert.load(ck)


def test_load_refuses_weights_larger_than_memory(ck, monkeypatch):
    monkeypatch.setenv("MINBERT_MEMORY_GB", "0.1")
    with (ck / "model.safetensors").open("ab") as f:
        f.truncate(200 * 2**20)
    _reseal(ck)
    with pytest.raises(CheckpointError, match="more than the 0.1 GiB of memory here"):
        MultitaskBert.load(ck)


# ------------------------------------------------------------------ saving
# small_fs: tests/conftest.py (a real 7 MB tmpfs)


def test_save_on_a_full_disk_is_a_checkpoint_error_and_keeps_the_old_one(saved, small_fs):
    model, _ = saved
    ck = model.save(small_fs / "ck")
    before = (ck / "model.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match="no space left on device"):
        model.save(ck)
    assert (ck / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in small_fs.iterdir()) == ["ck"]


def test_train_cli_on_a_full_disk_exits_2_with_one_line(small_fs):
    out = subprocess.run(
        [sys.executable, "-m", "core.train", "--config", "configs/quick.yaml", "--out", str(small_fs / "run"),
         "--limit", "8", "--max-steps", "1", "--no-progress", "--set", "data.eval_limit=8",
         "--set", "model.max_len=16", "--set", "train.batch_size=4"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot save") and "no space left on device" in last
    assert "Traceback" not in out.stderr


def test_train_cli_refuses_a_recipe_too_big_for_the_machine_before_building_it():
    """Every value is inside its declared range; together they need ~4 TB. Run under an
    address-space limit of 8 GB, so that without the check the build fails fast instead
    of taking the machine's memory."""
    script = ("import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30)); "
              "sys.argv = sys.argv[1:]; runpy.run_module('core.train', run_name='__main__')")
    out = subprocess.run(
        [sys.executable, "-c", script, "core.train", "--config", "configs/quick.yaml", "--out", "/nonexistent/x",
         "--set", "model.sst.layers=64", "--set", "model.sst.hidden=65536", "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "GiB to train" in out.stderr and "Traceback" not in out.stderr


def test_load_of_a_damaged_checkpoint_is_a_model_or_one_checkpoint_error(saved, tmp_path):
    """tests/test_fuzz.py's pathological JSON values in every field, through
    MultitaskBert.load (today a COMPLETE nested 50,000 levels deep raises RecursionError
    from core/model/multitask.py's own reader)."""
    import test_fuzz
    values = ["NaN", "Infinity", "1e999", "9" * 5000, "[" * 50_000 + "]" * 50_000, '{"a": ' * 40 + "1" + "}" * 40,
              "", "{", '"x"', "[]", "-1", "true", '{"step": -1}', '["sst", "sst"]']
    wrong = []
    for i, field in enumerate(test_fuzz.FIELDS + ["COMPLETE", "COMPLETE.files", "tokenizer_config"]):
        for j, value in enumerate(values):
            ck = tmp_path / f"{i}-{j}"
            shutil.copytree(saved[1], ck)
            test_fuzz.damage(ck, field, value)
            try:
                MultitaskBert.load(ck)
            except CheckpointError:
                pass
            except Exception as e:   # noqa: BLE001 - what the test looks for
                wrong.append(f"{field}={value[:20]!r}: {type(e).__name__}: {str(e)[:80]}")
            shutil.rmtree(ck)
    assert not wrong, "\n".join(wrong)

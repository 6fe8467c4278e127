"""Atomic checkpoints, the completeness marker, v1 compatibility, and load errors that
name the file and the mismatch (issue 12, items 2 and 4). A tiny 2-layer encoder keeps
every test to about a second."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from core import atomic
from core.model.bert import BertModel
from core.config.schema import Config
from core.errors import CheckpointError, MinbertError, ModelLoadError
from core.model.checkpoint import COMPLETE_MARKER, read_checkpoint_meta
from core.model.multitask import MultitaskBert

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    from conftest import write_tiny_encoder
    return write_tiny_encoder(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="module")
def model(tiny_encoder):
    torch.manual_seed(1)
    return MultitaskBert.from_config(Config.from_dict({"model": {"encoder": str(tiny_encoder), "max_len": 32}}))


def _reseal(ck: Path) -> None:
    """After a test edited files on purpose: the marker lists their new sizes (so the
    loader's later checks, not the size check, are what the test sees)."""
    marker = json.loads((ck / COMPLETE_MARKER).read_text())
    marker["files"] = {k: (ck / k).stat().st_size for k in marker["files"] if (ck / k).is_file()}
    (ck / COMPLETE_MARKER).write_text(json.dumps(marker))


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------ atomic helper
def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "m.json"
    atomic.atomic_write_json(p, {"a": 1})
    atomic.atomic_write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    assert [x.name for x in tmp_path.iterdir()] == ["m.json"]


def test_publish_dir_swaps_and_fallback_window_is_recovered(tmp_path, monkeypatch):
    target = tmp_path / "ck"
    target.mkdir()
    (target / "f").write_text("old")
    new = atomic.staging_dir(target)
    (new / "f").write_text("new")
    atomic.publish_dir(new, target)
    assert (target / "f").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    # the fallback (no renameat2): crash between its two renames -> recover_swap restores
    monkeypatch.setattr(atomic, "exchange", lambda a, b: False)
    os.rename(target, atomic.previous_path(target))      # the first rename happened, then a crash
    assert not target.exists()
    assert atomic.recover_swap(target)
    assert (target / "f").read_text() == "new"


# ------------------------------------------------------------------ checkpoints
def test_save_publishes_complete_marker_last_and_carries_run_files(model, tmp_path):
    ck = tmp_path / "ck"
    model.save(ck, extra_files={"metrics.json": '{"x": 1}'})
    (ck / "train_log.jsonl").write_text('{"event": "start"}\n')
    (ck / "resume").mkdir()
    (ck / "resume" / "state.json").write_text("{}")
    inode = (ck / "train_log.jsonl").stat().st_ino
    model.save(ck)        # a second publication over the first
    names = sorted(p.name for p in ck.iterdir())
    assert COMPLETE_MARKER in names and "metrics.json" not in names        # metrics belong to a publication
    assert (ck / "train_log.jsonl").stat().st_ino == inode                 # hard link: appends survive
    assert (ck / "resume" / "state.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]           # no staging left behind
    marker = json.loads((ck / COMPLETE_MARKER).read_text())
    assert marker["files"]["model.safetensors"] == (ck / "model.safetensors").stat().st_size
    assert _same_weights(MultitaskBert.load(ck), model)


def test_v2_without_marker_is_refused_with_a_fix(model, tmp_path):
    ck = tmp_path / "ck"
    model.save(ck)
    (ck / COMPLETE_MARKER).unlink()
    with pytest.raises(CheckpointError, match="COMPLETE marker is missing.*--resume"):
        MultitaskBert.load(ck)


def test_v2_with_truncated_weights_is_refused(model, tmp_path):
    ck = tmp_path / "ck"
    model.save(ck)
    data = (ck / "model.safetensors").read_bytes()
    (ck / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors is corrupt or cut short: .* bytes where COMPLETE lists"):
        MultitaskBert.load(ck)


def test_v1_checkpoint_without_marker_still_loads(model, tmp_path):
    """A checkpoint as the code before format 2 wrote it (no marker, format_version 1),
    e.g. the shipped checkpoints/minbert-multitask/."""
    ck = tmp_path / "v1"
    model.save(ck)
    (ck / COMPLETE_MARKER).unlink()
    meta = json.loads((ck / "config.json").read_text())
    meta["format_version"] = 1
    (ck / "config.json").write_text(json.dumps(meta))
    assert read_checkpoint_meta(ck)["format_version"] == 1
    assert _same_weights(MultitaskBert.load(ck), model)


def test_shipped_checkpoint_if_present_loads():
    from core.model.checkpoint import SHIPPED_DIR
    if not (SHIPPED_DIR / "config.json").is_file():
        pytest.skip("checkpoints/minbert-multitask is not in this checkout")
    assert MultitaskBert.load(SHIPPED_DIR).predict_sentiment(["fine"]).shape == (1, 5)


def test_kill_during_save_leaves_old_checkpoint_intact(model, tmp_path):
    """A real process SIGKILLed in the middle of a publication (after the weights were
    written into the staging directory): the previous checkpoint is untouched."""
    ck = tmp_path / "ck"
    model.save(ck)
    before = (ck / "model.safetensors").read_bytes()
    script = textwrap.dedent(f"""
        import os, signal, torch
        import core.model.multitask as cm
        m = cm.MultitaskBert.load({str(ck)!r})
        with torch.no_grad():
            for p in m.parameters(): p.add_(1.0)
        real = m.tokenizer.save_pretrained
        def die(*a, **k):
            real(*a, **k); os.kill(os.getpid(), signal.SIGKILL)
        m.tokenizer.save_pretrained = die
        m.save({str(ck)!r})
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr[-2000:]
    assert (ck / "model.safetensors").read_bytes() == before
    assert _same_weights(MultitaskBert.load(ck), model)
    model.save(ck)      # the next writer cleans the dead writer's staging directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


# --------------------------------------------------------------------- loading
def test_config_sizes_not_matching_weights_fail_before_allocating(model, tmp_path):
    ck = tmp_path / "ck"
    model.save(ck)
    meta = json.loads((ck / "config.json").read_text())
    meta["encoder_config"]["vocab_size"] = 900_000        # 900k x 32 floats: never allocated
    meta["encoder_config"]["intermediate_size"] = 128
    (ck / "config.json").write_text(json.dumps(meta))
    _reseal(ck)
    with pytest.raises(CheckpointError, match=r"model.safetensors does not match .*config.json.*"
                                              r"word_embeddings.weight: \[30522, 32\] in the file, \[900000, 32\]"):
        MultitaskBert.load(ck)


@pytest.mark.parametrize("change, message", [
    ({"num_attention_heads": 0}, "num_attention_heads must be an integer"),
    ({"hidden_size": 10**12}, "hidden_size must be an integer in 1..1,000,000"),
    ({"hidden_size": "32"}, "hidden_size must be an integer"),
    ({"hidden_act": "swish"}, "hidden_act 'swish' is not supported"),
    ({"layer_norm_eps": -1}, "layer_norm_eps"),
])
def test_corrupt_encoder_config_is_a_checkpoint_error(model, tmp_path, change, message):
    ck = tmp_path / "ck"
    model.save(ck)
    meta = json.loads((ck / "config.json").read_text())
    meta["encoder_config"].update(change)
    (ck / "config.json").write_text(json.dumps(meta))
    _reseal(ck)
    with pytest.raises(CheckpointError, match=message):
        MultitaskBert.load(ck)


def test_unexpected_and_missing_keys_are_named(model, tmp_path):
    ck = tmp_path / "ck"
    model.save(ck)
    state = load_file(str(ck / "model.safetensors"))
    state["extra.weight"] = torch.zeros(2)
    del state["bert.encoder.layer.1.output.dense.bias"]
    save_file(state, str(ck / "model.safetensors"))
    _reseal(ck)
    with pytest.raises(CheckpointError, match=r"1 tensors missing \(\['bert.encoder.layer.1.output.dense.bias'\]\)"
                                              r".*1 unexpected tensors \(\['extra.weight'\]\)"):
        MultitaskBert.load(ck)


def test_checkpoint_without_vocab_files_is_an_error_not_a_fallback(model, tmp_path):
    ck = tmp_path / "ck"
    model.save(ck)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (ck / name).unlink(missing_ok=True)
    _reseal(ck)
    with pytest.raises(CheckpointError, match="no tokenizer files .*copy them from the encoder"):
        MultitaskBert.load(ck)


def test_encoder_shape_mismatch_unexpected_and_missing(tiny_encoder, tmp_path):
    d = tmp_path / "enc"
    shutil.copytree(tiny_encoder, d)
    state = load_file(str(d / "model.safetensors"))
    state["encoder.layer.0.attention.self.query.weight"] = torch.zeros(32, 16)
    state["encoder.layer.9.output.dense.weight"] = torch.zeros(1)
    del state["embeddings.LayerNorm.bias"]
    save_file(state, str(d / "model.safetensors"))
    with pytest.raises(ModelLoadError) as e:
        BertModel.from_pretrained(d)
    msg = str(e.value)
    assert "model.safetensors does not match" in msg and "query.weight: [32, 16] in the file, [32, 32]" in msg
    assert "['embeddings.LayerNorm.bias']" in msg and "['encoder.layer.9.output.dense.weight']" in msg


def test_hub_name_never_downloads(tmp_path, monkeypatch):
    """An unknown hub id fails from the local cache only (no network), as a MinbertError."""
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    import socket
    def no_network(*a, **k):
        raise AssertionError("a load tried to open a network connection")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(ModelLoadError, match="never downloads"):
        BertModel.from_pretrained("some-org/some-bert")
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_old_resume_state_error_is_minbert(tmp_path):
    from core.training.trainer import Trainer
    cfg = Config.from_dict({"model": {"encoder": "minilm"}})
    with pytest.raises(MinbertError, match="nothing to resume"):
        Trainer(cfg, tmp_path / "none", resume=True)


# ------------------------------------------------------- saving (issue 24, item 3)
# small_fs: tests/conftest.py (a real 7 MB tmpfs)


def _same_files(a: Path, before: dict[str, bytes]) -> bool:
    return {p.name: p.read_bytes() for p in a.iterdir() if p.is_file()} == before


def test_disk_full_during_save_names_the_cause_and_keeps_the_old_checkpoint(model, small_fs):
    ck = small_fs / "ck"
    model.save(ck)
    before = {p.name: p.read_bytes() for p in ck.iterdir() if p.is_file()}
    # (once MultitaskBert.save checks free space itself, that check answers first)
    with pytest.raises(CheckpointError, match=r"no space left on device \(.*MB.* free there\); "
                                              r"anything saved there before is unchanged"):
        with atomic.save_errors(ck):
            model.save(ck)
    assert _same_files(ck, before) and sorted(p.name for p in small_fs.iterdir()) == ["ck"]
    assert _same_weights(MultitaskBert.load(ck), model)


def test_disk_full_in_safetensors_is_named(small_fs):
    """safetensors reports it as 'SafetensorError: ... (os error 28)'."""
    with pytest.raises(CheckpointError, match=r"no space left on device \([0-9.,]+ MB free there\)"):
        with atomic.save_errors(small_fs / "w"):
            save_file({"w": torch.zeros(3_000_000)}, str(small_fs / "w.safetensors"))


def test_disk_full_in_torch_save_is_named_too(small_fs):
    """torch's zip writer reports a full disk as '[enforce fail at inline_container.cc]
    unexpected pos', with no errno (the resume state's optimizer.pt goes through it)."""
    with pytest.raises(CheckpointError, match="cannot save the resume state .*no space left on device"):
        with atomic.save_errors(small_fs / "resume", "the resume state"):
            torch.save({"m": torch.zeros(3_000_000)}, small_fs / "optimizer.pt")


def test_read_only_file_system_is_named(model, small_fs):
    ck = small_fs / "ck"
    model.save(ck)
    before = {p.name: p.read_bytes() for p in ck.iterdir() if p.is_file()}
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    try:
        for write in (lambda: model.save(ck), lambda: torch.save({"x": torch.zeros(3)}, ck / "o.pt"),
                      lambda: save_file({"x": torch.zeros(3)}, str(ck / "w.safetensors"))):
            with pytest.raises(CheckpointError, match="read-only file system.*Save to a writable file system"):
                with atomic.save_errors(ck):
                    write()
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    assert _same_files(ck, before)


def test_free_space_check_refuses_before_writing(small_fs):
    atomic.check_free_space(small_fs / "ck", 1 * 2**20)                 # 1 MB + room: fits in 7 MB
    with pytest.raises(CheckpointError, match=r"no space left on device \(it needs about 106 MB, 7.0 MB are free"):
        atomic.check_free_space(small_fs / "ck", 100 * 2**20)
    assert list(small_fs.iterdir()) == []


@pytest.mark.parametrize("raised, cause", [
    (OSError(28, "No space left on device"), "no space left on device"),
    (PermissionError(13, "Permission denied"), "permission denied.*Make the folder writable"),
    (OSError(1, "Operation not permitted"), "operation not permitted"),
    (OSError(30, "Read-only file system"), "read-only file system"),
    (OSError(122, "Disk quota exceeded"), "disk quota exceeded"),
])
def test_every_os_error_of_a_save_is_one_checkpoint_error(model, tmp_path, monkeypatch, raised, cause):
    ck = tmp_path / "ck"
    model.save(ck)
    before = {p.name: p.read_bytes() for p in ck.iterdir() if p.is_file()}
    import safetensors.torch

    def fail(*a, **k):
        raise raised
    monkeypatch.setattr(safetensors.torch, "save_file", fail)
    with pytest.raises(CheckpointError, match=cause):
        with atomic.save_errors(ck):
            model.save(ck)
    assert _same_files(ck, before) and sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_wrapped_writer_errors_are_recognised(tmp_path):
    from safetensors import SafetensorError
    cases = [(SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"), 28),
             (RuntimeError("[enforce fail at inline_container.cc:747] . open file failed with strerror: "
                           "Read-only file system"), 30),
             (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"), 28),
             (RuntimeError("CUDA out of memory"), None), (ValueError("not a write"), None)]
    for exc, err in cases:
        assert atomic.os_errno_of(exc, tmp_path) == err, exc
    with pytest.raises(RuntimeError, match="CUDA out of memory"):       # not a write failure: unchanged
        with atomic.save_errors(tmp_path):
            raise RuntimeError("CUDA out of memory")


def test_cli_prints_one_line_and_exits_2_for_a_checkpoint_error(capsys):
    from core.errors import run_command

    def body():
        with atomic.save_errors("/nowhere/ck"):
            raise OSError(28, "No space left on device")
    assert run_command(body) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot save the checkpoint to /nowhere/ck: no space left on device")
    assert err.count("\n") == 1 and "Traceback" not in err


# ---------------------------------------------------- hostile JSON (issue 24, item 4)
@pytest.mark.parametrize("text, message", [
    ('{"a": ' + "1" * 5000 + "}", "not valid JSON.*4300"),
    ('{"a": 1e999}', "does not fit a 64-bit float"),
    ('{"a": NaN}', "NaN is not a number JSON allows"),
    ('{"a": -Infinity}', "Infinity is not a number JSON allows"),
    ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "not valid JSON"),
    ('{"a": ' + "[" * 40 + "]" * 40 + "}", "nested more than 32 levels"),
    ("[1, 2]", "must hold a JSON object"),
    ('{"a": "\\ud800"}', None),                                         # lone surrogate: valid JSON text
])
def test_read_json_object_refuses_pathological_files(tmp_path, text, message):
    p = tmp_path / "config.json"
    p.write_text(text)
    if message is None:
        assert atomic.read_json_object(p, CheckpointError) == {"a": "\ud800"}
        return
    with pytest.raises(CheckpointError, match=message):
        atomic.read_json_object(p, CheckpointError, "a checkpoint")


def test_read_json_object_refuses_a_huge_file_without_reading_it(tmp_path):
    p = tmp_path / "config.json"
    with p.open("wb") as f:
        f.truncate(atomic.JSON_MAX_BYTES + 1)       # sparse: nothing to read, only its size
    with pytest.raises(CheckpointError, match="16,777,217 bytes"):
        atomic.read_json_object(p, CheckpointError, "a checkpoint")


def test_free_space_check_names_a_read_only_file_system_first(small_fs):
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    try:
        with pytest.raises(CheckpointError, match="read-only file system"):
            atomic.check_free_space(small_fs / "ck", 100 * 2**20)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)


def test_save_errors_leaves_other_user_errors_alone(tmp_path):
    """A DataError raised while handling an OSError (``from None``) stays what it is."""
    from core.errors import DataError
    with pytest.raises(DataError, match="the data file is missing"):
        with atomic.save_errors(tmp_path):
            try:
                open(tmp_path / "missing.csv")
            except OSError:
                raise DataError("the data file is missing") from None
    with pytest.raises(ValueError):
        with atomic.save_errors(tmp_path):
            try:
                raise OSError(28, "No space left on device")
            except OSError:
                raise ValueError("a bug while handling it") from None

"""core.model.guard (issue 24, deliverable 4): every file of a checkpoint directory
checked before use. A real checkpoint of a tiny encoder is saved once per test and then
damaged the way a careless or hostile copy would be."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from core.model import guard
from core.config.schema import Config
from core.errors import CheckpointError
from core.model.guard import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, COMPLETE_MARKER
from core.model.multitask import MultitaskBert

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from conftest import write_tiny_encoder
    encoder = write_tiny_encoder(tmp_path_factory.mktemp("tiny_bert"))
    torch.manual_seed(1)
    return MultitaskBert.from_config(Config.from_dict({"model": {"encoder": str(encoder), "max_len": 32}}))


@pytest.fixture
def ck(model, tmp_path) -> Path:
    return model.save(tmp_path / "ck")


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _reseal(ck: Path) -> None:
    marker = json.loads((ck / COMPLETE_MARKER).read_text())
    marker["files"] = {k: (ck / k).stat().st_size for k in marker["files"] if (ck / k).is_file()}
    (ck / COMPLETE_MARKER).write_text(json.dumps(marker))


def test_the_format_written_into_checkpoints():
    # the values every checkpoint on disk carries (checkpoints/minbert-multitask/config.json:
    # "format": "minbert-checkpoint"; format 2 adds the COMPLETE marker)
    assert (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, COMPLETE_MARKER) == ("minbert-checkpoint", 2, "COMPLETE")


def test_a_fresh_checkpoint_and_the_shipped_one_pass(ck):
    meta = guard.check_checkpoint(ck)
    assert meta["format_version"] == CHECKPOINT_VERSION
    from core.model.checkpoint import SHIPPED_DIR
    if (SHIPPED_DIR / "model.safetensors").is_file():
        assert guard.check_checkpoint(SHIPPED_DIR)["format"] == CHECKPOINT_FORMAT


# ------------------------------------------------------------------ files and links
def test_links_leaving_the_directory_are_refused(ck, tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text((ck / "config.json").read_text())
    (ck / "config.json").unlink()
    (ck / "config.json").symlink_to(outside)
    with pytest.raises(CheckpointError, match="is a link to .*outside.json, outside the checkpoint directory"):
        guard.read_config(ck)


def test_a_link_inside_the_directory_is_fine(ck):
    os.rename(ck / "tokenizer.json", ck / "tokenizer-real.json")
    (ck / "tokenizer.json").symlink_to("tokenizer-real.json")
    guard.check_tokenizer_files(ck)
    assert MultitaskBert.load(ck).predict_sentiment(["fine"]).shape == (1, 5)


@pytest.mark.parametrize("kind", ["dev_zero", "fifo", "directory"])
def test_files_that_never_end_or_are_no_files_are_refused(ck, kind):
    target = ck / "tokenizer.json"
    target.unlink()
    if kind == "dev_zero":
        target.symlink_to("/dev/zero")
        message = "outside the checkpoint directory"
    elif kind == "fifo":
        os.mkfifo(target)
        message = "not a regular file"
    else:
        target.mkdir()
        message = "is a directory"
    with pytest.raises(CheckpointError, match=message):
        guard.check_tokenizer_files(ck)


@pytest.mark.parametrize("name", ["../outside", "/etc/passwd", "sub/file", "..", "", "a\x00b", 7, "x" * 300])
def test_complete_may_list_only_plain_names(ck, name):
    _edit_json(ck / COMPLETE_MARKER, lambda m: m["files"].update({name: 1}) if isinstance(name, str)
               else m.update(files={**m["files"], "7": 1}))
    if not isinstance(name, str):      # JSON keys are strings: a number key arrives as "7", which is missing
        with pytest.raises(CheckpointError, match="7 is missing"):
            guard.check_complete(ck)
        return
    with pytest.raises(CheckpointError, match="not a plain file name inside the checkpoint directory"):
        guard.check_complete(ck)


@pytest.mark.parametrize("size, message", [("12", "not a whole number"), (-1, "not a whole number"),
                                           (10**30, "not a whole number"), (True, "not a whole number"),
                                           (1, "cut short: .* bytes where COMPLETE lists 1")])
def test_complete_sizes_are_checked(ck, size, message):
    _edit_json(ck / COMPLETE_MARKER, lambda m: m["files"].update({"config.json": size}))
    with pytest.raises(CheckpointError, match=message):
        guard.check_complete(ck)


def test_complete_with_a_huge_number_or_too_many_files(ck):
    (ck / COMPLETE_MARKER).write_text('{"files": {"config.json": ' + "9" * 5000 + "}}")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        guard.check_complete(ck)
    (ck / COMPLETE_MARKER).write_text(json.dumps({"files": {f"f{i}": 0 for i in range(100)}}))
    with pytest.raises(CheckpointError, match="at most 64 names"):
        guard.check_complete(ck)
    (ck / COMPLETE_MARKER).unlink()
    with pytest.raises(CheckpointError, match="COMPLETE marker is missing"):
        guard.check_complete(ck)


# ------------------------------------------------------------------ config.json fields
@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(format="pickle"), "not a minBERT checkpoint config"),
    (lambda m: m.update(format_version=True), "format_version must be an integer"),
    (lambda m: m.update(format_version=10**30), "format_version too large"),
    (lambda m: m.update(format_version=-1), "format_version must be >= 0"),
    (lambda m: m.update(tasks=["sst", "sst"]), "tasks must be a list of distinct names"),
    (lambda m: m.update(tasks="sst"), "tasks must be a list"),
    (lambda m: m.update(tasks=[1]), "tasks must be a list"),
    (lambda m: m.update(has_pooler="yes"), "has_pooler must be true or false"),
    (lambda m: m.update(trained={"step": -1}), "trained must be a mapping with whole-number"),
    (lambda m: m.update(trained=[1]), "trained must be a mapping"),
    (lambda m: m.update(weights_dtype="int4"), "weights_dtype must be one of"),
    (lambda m: m.update(exported_from=["x"]), "exported_from must be a name"),
    (lambda m: m.update(config=[]), "config must be a mapping"),
    (lambda m: m.update(encoder_config="bert"), "encoder_config must be a mapping"),
    (lambda m: m["config"]["model"]["sst"].update(layers=10**6), r"model\.sst\.layers = 1000000: out of range"),
    (lambda m: m["config"]["model"]["qqp"].update(hidden=10**12), r"model\.qqp\.hidden"),
    (lambda m: m["config"]["train"].update(seed=2**40), r"train\.seed"),
    (lambda m: m["config"]["train"].update(lr=1e999), "does not fit a 64-bit float"),
    (lambda m: m["encoder_config"].update(hidden_size=10**12), "hidden_size must be an integer in 1..1,000,000"),
    (lambda m: m["config"].update(deep=json.loads("[" * 20 + "]" * 20)), "nested more than 16 levels"),
])
def test_every_config_field_is_checked(ck, change, message):
    if "1e999" in message or "64-bit" in message:
        text = (ck / "config.json").read_text().replace('"lr": 2e-05', '"lr": 1e999')
        assert "1e999" in text
        (ck / "config.json").write_text(text)
    else:
        _edit_json(ck / "config.json", change)
    with pytest.raises(CheckpointError, match=message):
        guard.read_config(ck)


def test_config_json_size_cap_and_missing_file(ck):
    with (ck / "config.json").open("ab") as f:
        f.truncate(guard.MAX_CONFIG_BYTES + 1)
    with pytest.raises(CheckpointError, match="1,048,577 bytes"):
        guard.read_config(ck)
    (ck / "config.json").unlink()
    with pytest.raises(CheckpointError, match="is not a checkpoint: config.json is missing"):
        guard.read_config(ck)


# ------------------------------------------------------------------ tokenizer files
@pytest.mark.parametrize("change, message", [
    ({"tokenizer_file": "../../etc/passwd"}, "tokenizer_file names '../../etc/passwd', which is not a plain"),
    ({"vocab_file": "/etc/passwd"}, "vocab_file names '/etc/passwd'"),
    ({"vocab_file": "missing.txt"}, "missing.txt is missing"),
    ({"auto_map": {"AutoTokenizer": ["evil.Tok", None]}}, "auto_map is not accepted"),
    ({"fast_tokenizer_files": ["../x.json"]}, "fast_tokenizer_files is not accepted"),
    ({"tokenizer_class": "GPT2Tokenizer"}, "tokenizer_class must be one of"),
    ({"added_tokens_decoder": {str(i): {"content": f"t{i}"} for i in range(10_001)}}, "more than 10,000 added"),
])
def test_tokenizer_config_may_not_reach_outside_or_name_code(ck, change, message):
    _edit_json(ck / "tokenizer_config.json", lambda c: c.update(change))
    with pytest.raises(CheckpointError, match=message):
        guard.check_tokenizer_files(ck)


def test_tokenizer_sizes_and_encodings(ck):
    (ck / "vocab.txt").write_bytes(b"[PAD]\n\xff\xfe\n")
    with pytest.raises(CheckpointError, match="vocab.txt is not UTF-8"):
        guard.check_tokenizer_files(ck)
    (ck / "vocab.txt").write_text("[PAD]\n")
    with (ck / "tokenizer.json").open("ab") as f:
        f.truncate(guard.TOKENIZER_LIMITS["tokenizer.json"] + 1)
    with pytest.raises(CheckpointError, match="tokenizer.json is 67,108,865 bytes"):
        guard.check_tokenizer_files(ck)
    (ck / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {f"t{i}": i for i in range(10)}},
                                                   "added_tokens": [{}] * 10_001}))
    with pytest.raises(CheckpointError, match="more than 10,000 added tokens"):
        guard.check_tokenizer_files(ck)
    for name in ("tokenizer.json", "vocab.txt"):
        (ck / name).unlink()
    with pytest.raises(CheckpointError, match="no tokenizer files"):
        guard.check_tokenizer_files(ck)


def test_chat_templates_are_not_part_of_a_bert_checkpoint(ck):
    (ck / "chat_templates").mkdir()
    (ck / "chat_templates" / "x.jinja").write_text("{{ 7 * 7 }}")
    with pytest.raises(CheckpointError, match="chat_templates is not part of a BERT checkpoint"):
        guard.check_tokenizer_files(ck)


# ------------------------------------------------------------------ weights
def test_weights_larger_than_memory_are_refused_before_reading(ck, monkeypatch):
    monkeypatch.setenv("MINBERT_MEMORY_GB", "0.1")
    with (ck / "model.safetensors").open("ab") as f:
        f.truncate(200 * 2**20)            # sparse: 200 MB that are never read
    with pytest.raises(CheckpointError, match=r"0.2 GiB, more than the 0.1 GiB of memory here"):
        guard.check_weights(ck)


@pytest.mark.parametrize("header", [0, 10**12, 2**64 - 1])
def test_a_weights_header_that_cannot_fit_is_refused(ck, header):
    data = (ck / "model.safetensors").read_bytes()
    (ck / "model.safetensors").write_bytes(header.to_bytes(8, "little") + data[8:])
    with pytest.raises(CheckpointError, match="its header length .* does not fit the file"):
        guard.check_weights(ck)
    (ck / "model.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointError, match="header length -1"):
        guard.check_weights(ck)

"""core.config.limits (issue 24, deliverable 1): a declared range for every number of every
config dataclass, seeds in [0, 2**32 - 1], finite numbers, lengths of lists and strings,
overrides that cannot be parsed, and the training-memory estimate against the machine.

References: parameter counts from Hugging Face transformers' own BertModel and from hand
computation; activation memory from torch's autograd (the tensors it saves for backward).
"""
from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import pytest
import torch

from core.config import footprint
from core.config import limits
from core.config.schema import Config, apply_overrides
from core.errors import ConfigError
from core.config.footprint import check_fits, count_parameters, estimate_training_memory
from core.config.limits import RANGES, LENGTHS, SEED_MAX

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def _config_dataclasses() -> list[type]:
    """Every dataclass reachable from Config's field types (LossTerm sits inside
    dict[str, list[LossTerm]])."""
    seen, todo = [], [Config]
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.append(cls)
        for tp in typing.get_type_hints(cls).values():
            stack = [tp]
            while stack:
                t = stack.pop()
                if dataclasses.is_dataclass(t):
                    todo.append(t)
                stack.extend(typing.get_args(t))
    return seen


def _mentions(tp, kinds) -> bool:
    stack = [tp]
    while stack:
        t = stack.pop()
        if t in kinds:
            return True
        stack.extend(typing.get_args(t))
    return False


def test_every_numeric_field_of_every_config_dataclass_has_a_declared_range():
    classes = _config_dataclasses()
    assert {"HeadConfig", "ModelConfig", "TrainConfig", "SmartConfig", "ContrastiveConfig", "LossTerm",
            "DataConfig", "PromptConfig"} <= {c.__name__ for c in classes}
    missing = []
    for cls in classes:
        for name, tp in typing.get_type_hints(cls).items():
            if _mentions(tp, (int, float)) and (cls.__name__, name) not in RANGES:
                missing.append(f"{cls.__name__}.{name}")
    assert not missing, f"declare a range in core/config/limits.py RANGES for: {missing}"


def test_every_list_mapping_and_string_field_has_a_declared_length():
    missing = []
    for cls in _config_dataclasses():
        for f in dataclasses.fields(cls):
            tp = typing.get_type_hints(cls)[f.name]
            if dataclasses.is_dataclass(tp):
                continue
            origin = typing.get_origin(tp)
            sized = origin in (list, dict) or tp is str or _mentions(tp, (str,)) or any(
                typing.get_origin(a) in (list, dict, typing.Literal) for a in typing.get_args(tp))
            if sized and (cls.__name__, f.name) not in LENGTHS:
                missing.append(f"{cls.__name__}.{f.name}")
    assert not missing, f"declare a length in core/config/limits.py LENGTHS for: {missing}"


def test_declared_ranges_name_real_fields():
    fields = {(c.__name__, f.name) for c in _config_dataclasses() for f in dataclasses.fields(c)}
    assert set(RANGES) <= fields and set(LENGTHS) <= fields


# ------------------------------------------------------------------ the issue's cases
ISSUE_CASES = [
    ("model.sst.layers=1000000", "model.sst.layers"),
    ("model.qqp.hidden=1000000000000", "model.qqp.hidden"),
    ("train.lr=.inf", "train.lr"),
    ("train.weight_decay=.inf", "train.weight_decay"),
    ("train.lr=.nan", "train.lr"),
    ("train.seed=-1", "train.seed"),
    (f"train.seed={2**32}", "train.seed"),
    ("train.seed=" + "9" * 5000, "train.seed"),
    ("train.batch_size=100000000", "train.batch_size"),
    ("model.sst.kernel_sizes=[2, 100000]", "model.sst.kernel_sizes"),
    ("model.qqp.features=[" + ", ".join(["u"] * 100) + "]", "model.qqp.features"),
    ("description=" + "x" * 3000, "description"),
    ("train.smart.ascent_steps=100000", "train.smart.ascent_steps"),
]


@pytest.mark.parametrize("override,key", ISSUE_CASES, ids=[k for _, k in ISSUE_CASES])
def test_out_of_range_values_are_one_config_error_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("[", r"\[")):
        Config.from_yaml(REPO / "configs" / "quick.yaml", [override])


def test_seed_bounds_are_inclusive():
    assert Config.from_dict({"train": {"seed": 0}}).train.seed == 0
    assert Config.from_dict({"train": {"seed": SEED_MAX}}).train.seed == 2**32 - 1
    import numpy as np
    np.random.default_rng(SEED_MAX)          # the bound is numpy's own
    with pytest.raises(ValueError):
        np.random.seed(SEED_MAX + 1)


def test_a_stage_value_is_checked_and_named_with_its_stage():
    raw = {"stages": [{"name": "warm", "lr": 1e-5}, {"name": "hot", "lr": float("inf")}]}
    with pytest.raises(ConfigError, match=r"stages\[1\] \(hot\).*train\.lr"):
        Config.from_dict(raw)
    raw = {"stages": [{"name": "a", "seed": -3}]}
    with pytest.raises(ConfigError, match=r"stages\[0\] \(a\).*train\.seed"):
        Config.from_dict(raw)


def test_loss_terms_inside_a_mapping_are_checked():
    raw = {"train": {"losses": {"qqp": [{"name": "bce"}, {"name": "mnrl", "weight": 1e9}]}}}
    with pytest.raises(ConfigError, match=r"train\.losses\.qqp\[1\]\.weight"):
        Config.from_dict(raw)


def test_override_values_python_cannot_parse_are_config_errors():
    with pytest.raises(ConfigError, match="not a usable value"):
        apply_overrides({}, ["train.seed=" + "1" * 5000])
    with pytest.raises(ConfigError, match="characters long"):
        apply_overrides({}, ["description=" + "y" * 10_000])
    # YAML aliases: a self-containing list and a billion-laughs value stay plain text
    laughs = "[" + ", ".join(["&a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"] + ["*a"] * 9) + "]"
    assert limits.parse_override_value("k", "&a [*a]") == "&a [*a]"
    assert limits.parse_override_value("k", laughs) == laughs
    assert limits.parse_override_value("k", "!!python/object/apply:os.system [ls]") == \
        "!!python/object/apply:os.system [ls]"


def test_every_shipped_recipe_study_row_and_checkpoint_passes():
    from core.experiments.study import load_plan
    for path in sorted((REPO / "configs").glob("*.yaml")):
        if path.name.startswith("study"):
            for row in load_plan(path).rows:
                assert row.config is not None
        else:
            Config.from_yaml(path)
    for meta in sorted((REPO / "checkpoints").glob("**/config.json")):
        raw = json.loads(meta.read_text())
        if isinstance(raw, dict) and raw.get("format") == "minbert-checkpoint":
            Config.from_dict(raw["config"])


# ------------------------------------------------------------------ memory
def test_encoder_parameters_match_transformers_own_count():
    transformers = pytest.importorskip("transformers")
    from core.model.bert import packaged_model_dir
    hf_config = transformers.BertConfig.from_pretrained(str(packaged_model_dir()))
    with torch.device("meta"):
        reference = transformers.BertModel(hf_config).num_parameters()   # pooler included, as ours
    encoder, _ = count_parameters(Config())
    assert encoder == reference == 22_713_216


def test_head_parameters_match_a_hand_count():
    # MiniLM: hidden 384, mean pooling. sst: MLP 384 -> 256 -> 5; qqp: bi features (u, v,
    # |u-v|, u*v) = 1536 -> 1 (one linear layer); sts: cosine, no weights.
    cfg = Config.from_dict({"model": {"sst": {"mode": "single", "layers": 2, "hidden": 256},
                                      "qqp": {"mode": "bi", "layers": 1}, "sts": {"mode": "cosine"}}})
    hand = (384 * 256 + 256) + (256 * 5 + 5) + (1536 * 1 + 1) + 0
    assert count_parameters(cfg)[1] == hand == 101_382


def _saved_activation_bytes(bert_config, batch: int, seq: int) -> int:
    """Bytes of the tensors autograd keeps for backward in one training forward pass of
    core.model.bert.BertModel (distinct storages, parameters excluded)."""
    from core.model.bert import BertModel
    torch.manual_seed(0)
    model = BertModel(bert_config).train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t
    ids = torch.randint(0, bert_config.vocab_size, (batch, seq))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(ids, attention_mask=torch.ones_like(ids)).last_hidden_state.sum()
    return sum(seen.values())


@pytest.mark.parametrize("h,heads,layers,batch,seq", [(64, 4, 2, 4, 32), (128, 4, 2, 8, 128), (96, 12, 1, 2, 256)])
def test_activation_estimate_bounds_what_autograd_keeps(h, heads, layers, batch, seq):
    from core.model.bert import BertConfig
    cfg = BertConfig(vocab_size=1000, hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=4 * h, max_position_embeddings=512)
    measured = _saved_activation_bytes(cfg, batch, seq)
    estimate = footprint.activation_bytes(cfg, batch, seq)
    assert measured <= estimate <= 1.25 * measured, (measured, estimate)


def test_a_recipe_too_big_for_the_machine_is_refused_before_anything_is_built():
    huge = Config.from_dict({"model": {"sst": {"mode": "single", "layers": 64, "hidden": 65_536}}})  # in range
    est = estimate_training_memory(huge)
    assert est["parameters"] > 62 * 65_536**2        # 64 linear layers: 384 -> h, 62 x (h -> h), h -> 5
    with pytest.raises(ConfigError, match=r"GiB to train .*model\.<task>\.hidden"):
        check_fits(huge, memory_bytes=64 * 2**30)
    quick = Config.from_yaml(REPO / "configs" / "quick.yaml")
    assert check_fits(quick, memory_bytes=16 * 2**30)["total_bytes"] < 16 * 2**30
    with pytest.raises(ConfigError, match="more than the 1.0 GiB of a test machine"):
        check_fits(quick, memory_bytes=2**30, where="a test machine")


def test_machine_memory_reads_the_setting_and_refuses_a_bad_one(monkeypatch):
    monkeypatch.setenv("MINBERT_MEMORY_GB", "2")
    assert limits.machine_memory() == 2 * 2**30
    monkeypatch.setenv("MINBERT_MEMORY_GB", "lots")
    with pytest.raises(ConfigError, match=r"\$MINBERT_MEMORY_GB='lots'"):
        limits.machine_memory()
    monkeypatch.delenv("MINBERT_MEMORY_GB")
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        total_kb = int(meminfo.read_text().split("MemTotal:")[1].split()[0])
        assert limits.machine_memory() <= total_kb * 1024 * 1.01

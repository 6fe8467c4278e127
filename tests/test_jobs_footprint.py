"""core/config/footprint.py counts parameters by arithmetic (no torch in the job system):
the count must equal the parameters of the model the recipe builds, here built on torch's
"meta" device (nothing allocated) for every head layout the config offers. The reference is
torch's own ``numel`` of the built modules, not the code under test."""
from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from core.config.schema import Config
from core.errors import ConfigError
from core.config import footprint
from core.model.bert import BertConfig, BertModel, read_bert_config, resolve_model_dir
from core.model.multitask import MultitaskBert

SMALL = BertConfig(vocab_size=1000, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=96, max_position_embeddings=64, type_vocab_size=3)


def _meta_count(cfg: Config, bert_config: BertConfig) -> tuple[int, int]:
    with torch.device("meta"):
        model = MultitaskBert(cfg, BertModel(bert_config), None)
    encoder = sum(p.numel() for p in model.bert.parameters())
    return encoder, sum(p.numel() for p in model.parameters()) - encoder


HEADS = [
    {"qqp": {"mode": "bi"}, "sts": {"mode": "cosine"}},
    {"qqp": {"mode": "cross", "layers": 3, "hidden": 17}, "sts": {"mode": "bi", "cosine_feature": True,
                                                                  "features": ["u", "abs_diff"]}},
    {"qqp": {"mode": "hybrid"}, "sts": {"mode": "hybrid", "layers": 2, "hidden": 9}},
    {"sst": {"mode": "single", "arch": "deep_ffn", "layers": 3, "hidden": 11}, "qqp": {"mode": "cross", "arch": "deep_ffn"}},
    {"sst": {"mode": "single", "arch": "cnn", "hidden": 7, "kernel_sizes": [1, 3]},
     "qqp": {"mode": "bi", "arch": "bilstm", "hidden": 5}, "sts": {"mode": "cosine", "arch": "cnn", "hidden": 6}},
    {"sst": {"mode": "single", "arch": "pooled_linear", "out_features": 13},
     "qqp": {"mode": "bi", "arch": "pooled_cnn", "hidden": 8, "vectors": 4, "upscale_kernel": 5},
     "sts": {"mode": "cross", "arch": "pooled_bilstm", "hidden": 6, "out_features": 10}},
]
MODELS = [
    {},
    {"pooling": "mean_max"},
    {"pooling": "cls", "sts": {"pooling": "mean_max"}},
    {"shared_projection": 20},
    {"shared_projection": 20, "shared_projection_bias": False, "pooling": "max"},
]


@pytest.mark.parametrize("heads,model", list(itertools.product(range(len(HEADS)), range(len(MODELS)))))
def test_the_parameter_count_is_the_built_models(heads, model):
    spec = json.loads(json.dumps(MODELS[model]))
    for task, head in HEADS[heads].items():
        spec[task] = {**spec.get(task, {}), **head}
    cfg = Config.from_dict({"model": spec})
    assert footprint.count_parameters(cfg, SMALL) == _meta_count(cfg, SMALL)


def test_shared_upscale_and_single_task_stages_are_counted_like_the_model():
    for model in ({"shared_upscale": True, "sst": {"mode": "single", "arch": "pooled_cnn", "hidden": 8},
                   "qqp": {"mode": "bi", "arch": "pooled_bilstm", "hidden": 4}},
                  {"shared_upscale": True, "shared_projection": 16,
                   "sts": {"mode": "cross", "arch": "pooled_cnn", "vectors": 3, "upscale_kernel": 1}}):
        for train in ({}, {"tasks": ["sst"]}, {"tasks": ["sts"]}):
            try:
                cfg = Config.from_dict({"model": model, "train": train})
            except ConfigError:
                continue   # a combination the config refuses: nothing to count
            assert footprint.count_parameters(cfg, SMALL) == _meta_count(cfg, SMALL), (model, train)


def test_the_encoder_sizes_come_from_its_config_json_as_the_model_reads_them(tmp_path):
    cfg = Config()
    expected = read_bert_config(resolve_model_dir(cfg.model.encoder))
    sizes = footprint.encoder_sizes(cfg)
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "max_position_embeddings", "type_vocab_size"):
        assert getattr(sizes, name) == getattr(expected, name), name
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": "wide"}))
    with pytest.raises(ConfigError, match=r"model\.encoder .*hidden_size must be a whole number"):
        footprint.encoder_sizes(Config.from_dict({"model": {"encoder": str(tmp_path)}}))
    with pytest.raises(ConfigError, match=r"model\.encoder"):
        footprint.encoder_sizes(Config.from_dict({"model": {"encoder": str(tmp_path / "absent")}}))


def test_the_estimate_needs_no_torch():
    """The job system's fit check runs without torch ever being imported."""
    code = ("import sys; from core.config.schema import Config; from core.config.footprint import check_fits; "
            "check_fits(Config(), 64 * 2**30); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"

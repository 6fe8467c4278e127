"""The typed config: one parse, strict validation, overrides, round-trip."""
from __future__ import annotations

import pytest

from conftest import REPO
from core.config.schema import Config, apply_overrides
from core.errors import ConfigError


def test_recipe_round_trips_through_dict():
    cfg = Config.from_yaml(REPO / "configs" / "quick.yaml")
    assert cfg.name == "quick"
    again = Config.from_dict(cfg.to_dict())
    assert again == cfg
    assert Config.from_dict(__import__("yaml").safe_load(cfg.to_yaml())) == cfg


@pytest.mark.parametrize("raw,needle", [
    ({"trian": {}}, "unknown key(s) trian"),
    ({"train": {"lr": "fast"}}, "train.lr must be a number"),
    ({"train": {"lr": 0}}, "train.lr must be > 0"),
    ({"train": {"epochs": 1.5}}, "train.epochs must be an integer"),
    ({"train": {"tasks": ["sst", "mnli"]}}, "train.tasks[1] must be one of"),
    ({"train": {"freeze_encoder": "yes"}}, "must be true or false"),
    ({"model": {"pooling": "avg"}}, "model.pooling must be one of"),
    ({"model": {"qqp": {"mode": "cosine"}}}, "for similarity only"),
    ({"model": {"sts": {"dropout": 1.0}}}, "model.sts.dropout"),
    ({"model": {"max_len": 4}}, "model.max_len"),
    ({"train": {"loss_weights": {"sst": 1, "nli": 1}}}, "unknown tasks"),
    ({"model": "minilm"}, "model must be a mapping"),
])
def test_bad_values_are_rejected_with_the_key(raw, needle):
    with pytest.raises(ConfigError) as err:
        Config.from_dict(raw)
    assert needle in str(err.value)


def test_overrides_parse_yaml_values():
    raw = apply_overrides({}, ["train.lr=3e-5", "train.tasks=[sst, sts]", "data.limit=null",
                               "model.sts.mode=cross", "train.freeze_encoder=true"])
    cfg = Config.from_dict(raw)
    assert cfg.train.lr == 3e-5 and cfg.train.tasks == ["sst", "sts"] and cfg.data.limit is None
    assert cfg.model.sts.mode == "cross" and cfg.train.freeze_encoder is True
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["train.lr"])


def test_yaml_errors_name_the_file(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml is not valid YAML"):
        Config.from_yaml(p)
    with pytest.raises(ConfigError, match="config file not found"):
        Config.from_yaml(tmp_path / "missing.yaml")
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        Config.from_yaml(p)


def test_option_help_lives_in_the_field_metadata_and_reaches_help_and_the_form():
    from core.config.schema import format_option_help, option_help
    from core.config.recipes import recipe_fields
    from core.training.cli import make_parser
    helps = option_help()
    # every leaf field of the recipe has its one line
    fields = recipe_fields(Config())
    assert {f.key for f in fields} == set(helps)
    assert all(f.help == helps[f.key] for f in fields)
    assert "0.3" in helps["model.encoder_dropout"] and "cyclic" in helps["train.backward"]
    text = make_parser().format_help()
    assert "train.backward" in text and format_option_help().splitlines()[1].strip() in text


def test_old_checkpoint_configs_load_with_todays_behaviour():
    """A config.json written before the new fields existed (the shipped checkpoint's)."""
    import json
    from conftest import REPO
    raw = json.loads((REPO / "checkpoints" / "minbert-multitask" / "config.json").read_text())["config"]
    assert "losses" not in raw["train"] and "encoder_dropout" not in raw["model"]
    cfg = Config.from_dict(raw)
    t = cfg.train
    assert t.losses == {} and t.backward == "joint" and t.task_batch_size == {} and t.select == "mean"
    assert [x.name for x in t.task_losses("sst")] == ["ce"] and [x.name for x in t.task_losses("qqp")] == ["bce"]
    assert cfg.model.encoder_dropout is None and cfg.model.shared_projection is None
    assert all(getattr(cfg.model, task).pooling is None for task in ("sst", "qqp", "sts"))
    assert t.contrastive.triplet_layout == "mixed"


def test_recipe_files_with_huge_numbers_or_aliases_are_one_config_error(tmp_path):
    """Issue 24: a recipe FILE (not only --set) with a 5,000-digit number, an integer beyond
    a float's range in a float field, or a YAML alias bomb is a ConfigError naming the file."""
    from core.errors import ConfigError
    cases = {"digits.yaml": "train:\n  seed: " + "7" * 5000 + "\n",
             "overflow.yaml": "train:\n  lr: " + "1" + "0" * 400 + "\n",
             "alias.yaml": "train:\n  tasks: &t [sst]\nstages:\n  - {name: s, tasks: *t}\n"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match=name.split(".")[0] if name != "overflow.yaml" else "too large|range"):
            Config.from_yaml(tmp_path / name)

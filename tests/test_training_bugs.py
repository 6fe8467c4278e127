"""Two training bugs of issue #23, each pinned by a test that fails on the code before the fix:

(a) an STS loss of ``mse_cosine`` alone with a ``bi`` or ``hybrid`` STS head passed
    validation but never trained the head that makes the prediction (the loss reads only
    the sentence vectors): Config validation refuses it, saying what to do;
(b) frozen-encoder hybrid heads on the cached-vector fast path dropped their branch losses
    (``train.hybrid_aux_weight`` was ignored there): they apply there too.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, write_tiny_encoder
from core.config.schema import Config
from core.errors import ConfigError, MinbertError

pytestmark = pytest.mark.usefixtures("one_thread")


def _raw(mode: str, losses: list[dict]) -> dict:
    return {"model": {"sts": {"mode": mode}}, "train": {"tasks": ["sts"], "losses": {"sts": losses}}}


@pytest.mark.parametrize("mode", ["bi", "hybrid"])
def test_mse_cosine_alone_with_a_head_that_predicts_is_refused(mode):
    with pytest.raises(ConfigError, match="mse_cosine alone") as e:
        Config.from_dict(_raw(mode, [{"name": "mse_cosine"}]))
    assert isinstance(e.value, MinbertError)
    assert "name: mse" in str(e.value) and "cosine" in str(e.value)      # says what to do
    with pytest.raises(ConfigError, match="mse_cosine alone"):        # MNRL beside it trains no head either
        Config.from_dict(_raw(mode, [{"name": "mse_cosine"}, {"name": "mnrl"}]))
    # in a stage of a multi-stage recipe too
    with pytest.raises(ConfigError, match="stage 'sts'"):
        Config.from_dict({"model": {"sts": {"mode": mode}},
                          "stages": [{"name": "sts", "tasks": ["sts"], "losses": {"sts": [{"name": "mse_cosine"}]}}]})


def test_mse_cosine_is_accepted_where_the_head_is_trained_or_is_the_cosine():
    Config.from_dict(_raw("cosine", [{"name": "mse_cosine"}]))                       # the prediction is cos(u, v)
    Config.from_dict(_raw("bi", [{"name": "mse"}, {"name": "mse_cosine"}]))          # the head's own loss beside it
    Config.from_dict(_raw("hybrid", [{"name": "mse"}, {"name": "mse_cosine", "weight": 0.5}]))
    Config.from_dict({"model": {"sts": {"mode": "bi"}},                              # STS not trained in the stage
                      "train": {"tasks": ["sst"], "losses": {"sts": [{"name": "mse_cosine"}]}}})


def test_every_recipe_still_validates():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        if path.name.startswith("study"):
            continue
        Config.from_yaml(path)


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    return write_tiny_encoder(tmp_path_factory.mktemp("tiny_bert"), max_position_embeddings=64)


def test_frozen_hybrid_head_on_cached_vectors_trains_its_branches(tiny_encoder, tmp_path):
    from core.training.trainer import Trainer
    raw = {"model": {"encoder": str(tiny_encoder), "max_len": 24, "sts": {"mode": "hybrid", "layers": 1}},
           "data": {"dir": str(REPO / "data"), "limit": 16, "eval_limit": 8},
           "train": {"tasks": ["sts"], "freeze_encoder": True, "batch_size": 8, "steps_per_epoch": 2,
                     "epochs": 1, "lr": 1e-3, "warmup_ratio": 0.0, "hybrid_aux_weight": 0.5}}
    trainer = Trainer(Config.from_dict(raw), tmp_path / "run", progress=False)
    trainer.setup()
    trainer.start_stage(trainer.stages[0])
    stream = trainer.streams["sts"]
    assert stream.cache is not None                          # the fast path under test
    idx = list(range(8))
    trainer.objective.train_mode()
    torch.manual_seed(0)
    aux: dict = {}
    loss, total = trainer.objective("sts", idx, len(idx), aux)
    # by hand, from the head's three outputs on the cached pooled vectors: the task's own
    # loss (MSE of the 0..5 score) on the combined output, + 0.5 x the same loss on each branch
    from core.model.heads import Encoding
    a = Encoding(None, None, stream.cache["a"][idx], joint=Encoding(None, None, stream.cache["ab"][idx]))
    b = Encoding(None, None, stream.cache["b"][idx])
    torch.manual_seed(0)
    out = trainer.model.heads["sts"].branches(a, b)
    y = stream.labels[idx].float()
    mse = lambda x: F.mse_loss(x.reshape(-1).float(), y)
    assert loss.item() == pytest.approx(mse(out["output"]).item(), rel=1e-5)
    expected = mse(out["output"]) + 0.5 * (mse(out["cross"]) + mse(out["bi"]))
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert {"sts_cross", "sts_bi"} <= set(aux)
    step = trainer.train_step()
    assert {"sts_cross", "sts_bi"} <= set(step["aux"])      # logged as on the encoder path

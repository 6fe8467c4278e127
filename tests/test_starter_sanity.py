"""The starter recipe on a seeded, label-stratified training sample is sane on obvious
sentences (issue #26). Trained on the file's first rows (5 % negatives, what data.limit
kept before), the same run called "The worst film I have seen this year." very positive.

Sized for the suite: the starter's frozen encoder and heads, the sentiment task alone,
400 training sentences (a stratified sample of the 8,544), 150 steps, one thread."""
from __future__ import annotations

import numpy as np

from conftest import REPO

NEGATIVE = ["The worst film I have seen this year.", "A dull, lifeless and utterly boring mess.",
            "Terrible acting and a stupid plot."]
POSITIVE = ["A masterpiece: moving, funny and beautifully acted.", "One of the best films of the year, a pure joy.",
            "Brilliant, gorgeous and deeply moving."]


def test_starter_calls_obvious_negatives_negative_and_raves_positive(tmp_path, one_thread):
    from core.config.schema import Config
    from core.model.multitask import MultitaskBert
    from core.training.trainer import Trainer
    cfg = Config.from_yaml(REPO / "configs" / "starter.yaml", [
        f"data.dir={REPO / 'data'}", "train.tasks=[sst]", "data.limit=400", "data.eval_limit=20",
        "train.steps_per_epoch=150", "model.max_len=48", "train.log_every=1000"])
    trainer = Trainer(cfg, tmp_path / "starter", progress=False)
    summary = trainer.run()
    sample = trainer.train_data["sst"].subset
    assert sample is not None, ("the trainer read the first data.limit rows: core/training/stages.py's load_data must "
                                "load with core.data.datasets.load_subset (issue #26)")
    assert (sample.n, sample.of, sample.sampling) == (400, 8544, "stratified")
    assert summary["dev"]["subset"]["sst"]["n"] == 20          # the dev figures say they are a subset
    probs = MultitaskBert.load(tmp_path / "starter").predict_sentiment(NEGATIVE + POSITIVE)
    neg, pos = probs[:len(NEGATIVE)], probs[len(NEGATIVE):]
    # labels 0 very negative, 1 negative, 2 neutral, 3 positive, 4 very positive
    assert set(neg.argmax(1)) <= {0, 1} and (neg[:, :2].sum(1) > 0.5).all(), np.round(neg, 2)
    assert set(pos.argmax(1)) <= {3, 4} and (pos[:, 3:].sum(1) > 0.5).all(), np.round(pos, 2)

"""Fit the zero-shot paraphrase calibration: p = sigmoid((cos - center) * scale).

    python -m core.evaluation.zeroshot [--n 4000]

Cosines of mean-pooled all-MiniLM-L6-v2 embeddings on the first N quora-train pairs
(never dev), a one-feature logistic regression, and the two constants it implies.
They are written into ``core.model.multitask.ZERO_SHOT_PARAPHRASE`` by hand, with this command.
"""
from __future__ import annotations

import argparse
import json



def fit(n: int = 4000, data_dir: str = "data") -> dict:
    from sklearn.linear_model import LogisticRegression

    from core.data.datasets import load_task
    from core.evaluation.evaluator import cosine_scores
    from core.model.multitask import MultitaskBert
    model = MultitaskBert.load("pretrained")
    data = load_task("qqp", "train", data_dir, limit=n)
    cos = cosine_scores(model.embed(data.texts_a), model.embed(data.texts_b))
    lr = LogisticRegression(C=1e4).fit(cos[:, None], data.labels)
    scale = float(lr.coef_[0, 0])
    return {"center": round(-float(lr.intercept_[0]) / scale, 4), "scale": round(scale, 4), "n": len(data)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--data-dir", default="data")
    args = parser.parse_args()
    print(json.dumps(fit(args.n, args.data_dir)))

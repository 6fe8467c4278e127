"""What only the app shows: the Predict page's examples and the frame behind its chart.

No Streamlit calls here (plain data and pandas), so the pages stay short and this
content can be read and edited on its own.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd

from core.data import TASK_LABELS

SENTIMENT_LABELS = TASK_LABELS["sst"]

EXAMPLES: dict[str, list] = {
    "sst": [
        "A gorgeous, witty, seductive movie.",
        "The plot is paper-thin and the jokes fall flat.",
        "It's not a masterpiece, but it's an enjoyable way to spend two hours.",
        "An utterly joyless, interminable slog.",
        "The performances are fine; the script is merely adequate.",
    ],
    "qqp": [
        ("How do I learn Python quickly?", "What is the fastest way to learn Python?"),
        ("How do I lose weight fast?", "How can I gain weight in a healthy way?"),
        ("What is the capital of Australia?", "Which city is Australia's capital?"),
        ("Why is the sky blue?", "Why do cats purr?"),
    ],
    "sts": [
        ("A man is playing a guitar.", "A person plays the guitar."),
        ("A woman is slicing an onion.", "A woman is cutting an onion."),
        ("A dog runs across the field.", "A cat is sleeping on the sofa."),
        ("The stock market fell sharply today.", "Shares dropped steeply on Monday."),
    ],
}


def sentiment_frame(results: Mapping[str, Sequence[float]]) -> pd.DataFrame:
    """Long table (model, label, probability) for a grouped bar chart."""
    rows = [{"model": name, "label": SENTIMENT_LABELS[k], "probability": float(p)}
            for name, probs in results.items() for k, p in enumerate(probs)]
    return pd.DataFrame(rows, columns=["model", "label", "probability"])

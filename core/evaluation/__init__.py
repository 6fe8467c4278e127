"""Evaluation: metrics, dev-set evaluation of a checkpoint, the content-keyed cache, zero-shot fits."""

"""Serving: predictions for people (batched, long text in windows) and exports (HF, ONNX, int8)."""

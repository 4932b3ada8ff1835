"""Feature extraction: the encoder stays frozen and runs once; heads train on its cached layers.

The outputs of every layer (embeddings first) of every token (texts) or unit (tagging)
are cached in fp16, in memory or on disk under a key made of the encoder's weights and
the exact token ids fed to it, so a changed model, text, truncation or window never
reuses a stale cache. After that first pass an epoch costs only the head.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from plmkit import __version__
from plmkit.config import TrainConfig, to_dict
from plmkit.data.batching import length_mask
from plmkit.data.examples import Example
from plmkit.data.truncation import backend_and_layout, encode
from plmkit.errors import ConfigError, DataError, ModelError
from plmkit.io import atomic_path, atomic_write_json
from plmkit.models.encoders import check_tokenizer_matches, load_config, load_tokenizer, read_plmkit_meta, resolve_model
from plmkit.models.feature_heads import FeatureModel, build_feature_model, check_head
from plmkit.models.saving import save_model_dir
from plmkit.models.tagger import load_encoder
from plmkit.registry import TASKS
from plmkit.tasks.base import Task
from plmkit.train.finetune import check_finite
from plmkit.train.loop import LoopState, train_loop

CACHE_FORMAT = 1


@dataclass
class FeatureSet:
    """Every layer's output for the kept positions of N items, stored flat."""

    values: torch.Tensor  # (P, L, H) fp16: P kept positions of all items together
    offsets: torch.Tensor  # (N + 1,) int64: item i is values[offsets[i]:offsets[i + 1]]
    segments: torch.Tensor  # (P,) int8: 1 text, 2 text pair, 0 special token

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_layers(self) -> int:
        return self.values.shape[1]

    def length(self, i: int) -> int:
        return int(self.offsets[i + 1] - self.offsets[i])


def cache_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.cache_dir or os.environ.get("PLMKIT_CACHE") or Path.home() / ".cache" / "plmkit" / "features")


def fingerprint(encoder: torch.nn.Module) -> str:
    """A digest of the encoder's configuration and every weight's bytes."""
    h = hashlib.sha256(encoder.config.to_json_string(use_diff=False).encode())
    for name, t in sorted(encoder.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def items_digest(items: Sequence[dict[str, Any]]) -> str:
    """A digest of exactly what the encoder reads and which positions are kept."""
    h = hashlib.sha256()
    for it in items:
        h.update(repr((it["input_ids"], it.get("token_type_ids"), it.get("keep"), it["segments"])).encode())
    return h.hexdigest()


def _encoder_inputs(encoder, items: Sequence[dict[str, Any]], pad_id: int, device) -> dict[str, torch.Tensor]:
    from plmkit.data.batching import pad

    ids = pad([it["input_ids"] for it in items], pad_id)  # (B, T)
    lengths = torch.tensor([len(it["input_ids"]) for it in items])  # (B,)
    inputs = {"input_ids": ids, "attention_mask": length_mask(lengths, ids.shape[1]).long()}
    if getattr(encoder.config, "type_vocab_size", 0) > 1 and items[0].get("token_type_ids") is not None:
        inputs["token_type_ids"] = pad([it["token_type_ids"] for it in items], 0)  # (B, T)
    return {k: v.to(device) for k, v in inputs.items()}


def extract(encoder: torch.nn.Module, items: Sequence[dict[str, Any]], pad_id: int, batch_size: int = 64,
            device: torch.device | None = None, progress: bool = False, desc: str = "extracting",
            allocate: Callable[[tuple[int, int, int]], torch.Tensor] | None = None) -> FeatureSet:
    """Run the frozen encoder once over `items` ({input_ids, token_type_ids?, keep?, segments});
    keep every layer's output at the `keep` positions (all positions when absent). `allocate(shape)`
    gives the fp16 tensor (P, L, H) to fill (default: one in memory; a disk cache maps its file)."""
    from tqdm.auto import tqdm

    device = device or next(encoder.parameters()).device
    keep = [it.get("keep") or list(range(len(it["input_ids"]))) for it in items]
    offsets = torch.zeros(len(items) + 1, dtype=torch.long)
    offsets[1:] = torch.tensor([len(k) for k in keep], dtype=torch.long).cumsum(0)
    segments = torch.tensor([s for it in items for s in it["segments"]], dtype=torch.int8)  # (P,)
    if len(segments) != int(offsets[-1]):
        raise ValueError("each item needs one segment id per kept position")
    values: torch.Tensor | None = None
    order = sorted(range(len(items)), key=lambda i: len(items[i]["input_ids"]))
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False, disable=not progress):
            idx = order[start : start + batch_size]
            out = encoder(**_encoder_inputs(encoder, [items[i] for i in idx], pad_id, device), output_hidden_states=True)
            layers = torch.stack(out.hidden_states, 2)  # (B, T, L, H)
            if values is None:
                shape = (int(offsets[-1]), layers.shape[2], layers.shape[3])
                values = allocate(shape) if allocate else torch.empty(shape, dtype=torch.float16)
            for row, i in enumerate(idx):
                values[offsets[i] : offsets[i + 1]] = layers[row, keep[i]].to("cpu", torch.float16)
    encoder.train(was_training)
    if values is None:
        n_layers = encoder.config.num_hidden_layers + 1
        values = torch.empty(0, n_layers, encoder.config.hidden_size, dtype=torch.float16)
    return FeatureSet(values, offsets, segments)


def read_cache(path: Path) -> dict[str, torch.Tensor] | None:
    """A cache file's tensors, mapped from disk (never read whole into memory), or None (with a
    warning) when it is unreadable: it is only a cache, so the features are extracted again and the
    file replaced."""
    from plmkit.train.feature_cache import CacheFormatError, read_mapped

    try:
        t = read_mapped(path)
    except (CacheFormatError, OSError) as e:
        print(f"warning: feature cache {path} is unreadable ({e}); extracting again", file=sys.stderr)
        return None
    if not {"values", "offsets", "segments"} <= set(t):
        print(f"warning: feature cache {path} lacks tensors; extracting again", file=sys.stderr)
        return None
    return t


def cached_features(encoder, key_model: Callable[[], str], items: Sequence[dict[str, Any]], pad_id: int, cfg: TrainConfig,
                    desc: str) -> tuple[FeatureSet, bool]:
    """(features, whether they came from the disk cache): extracted once, then read back. With the
    disk cache the extraction writes straight into the cache file's mapping, so neither it nor
    training holds every layer of every position in memory."""
    from contextlib import ExitStack

    from plmkit.train.feature_cache import write_mapped

    path = None
    if cfg.feature_cache == "disk":  # the key hashes every weight: only worth it when a file is read or written
        key = hashlib.sha256(f"{CACHE_FORMAT}:{key_model()}:{items_digest(items)}".encode()).hexdigest()[:40]
        path = cache_dir(cfg) / f"{key}.safetensors"
    if path is not None and path.is_file():
        t = read_cache(path)
        if t is not None and len(t["offsets"]) == len(items) + 1:
            return FeatureSet(t["values"], t["offsets"], t["segments"]), True
    device = next(encoder.parameters()).device
    if path is None:
        return extract(encoder, items, pad_id, cfg.loop.eval_batch_size, device, cfg.loop.progress, desc), False
    meta = {"format": str(CACHE_FORMAT), "items": str(len(items))}
    with ExitStack() as stack:
        mapped: dict[str, torch.Tensor] = {}

        def allocate(shape: tuple[int, int, int]) -> torch.Tensor:
            specs = {"offsets": (torch.int64, (len(items) + 1,)), "values": (torch.float16, shape),
                     "segments": (torch.int8, (shape[0],))}
            mapped.update(stack.enter_context(write_mapped(path, specs, meta)))
            return mapped["values"]

        feats = extract(encoder, items, pad_id, cfg.loop.eval_batch_size, device, cfg.loop.progress, desc, allocate)
        if not mapped:  # no items: nothing worth a file
            return feats, False
        mapped["offsets"].copy_(feats.offsets)
        mapped["segments"].copy_(feats.segments)
        mapped.clear()  # the writable views go, so that the mapping closes and the file is renamed into place
        del feats
    t = read_cache(path)
    if t is None:
        raise ModelError(f"feature cache {path}: just written, and unreadable")
    return FeatureSet(t["values"], t["offsets"], t["segments"]), False


def collate_cached(items: list[tuple[int, int, dict[str, Any]]], store: FeatureSet) -> dict[str, torch.Tensor]:
    """values (B, T, L, H), mask and segments (B, T), and labels (B,) or tags (B, T) when present."""
    feats = [f for _, _, f in items]
    idx = [f["index"] for f in feats]
    lengths = [store.length(i) for i in idx]
    T = max(lengths) if lengths else 0
    values = torch.zeros(len(idx), T, store.values.shape[1], store.values.shape[2], dtype=torch.float16)  # (B, T, L, H)
    segments = torch.zeros(len(idx), T, dtype=torch.long)  # (B, T)
    for row, i in enumerate(idx):
        a, b = int(store.offsets[i]), int(store.offsets[i + 1])
        values[row, : b - a] = store.values[a:b]
        segments[row, : b - a] = store.segments[a:b].long()
    batch = {"values": values, "mask": length_mask(torch.tensor(lengths), T), "segments": segments}
    if feats and feats[0].get("label") is not None:
        batch["labels"] = torch.tensor([f["label"] for f in feats])  # (B,)
    if feats and feats[0].get("tags") is not None:
        from plmkit.data.batching import pad

        batch["tags"] = pad([f["tags"] for f in feats], 0)  # (B, T)
    return batch


def run_head(model: FeatureModel, store: FeatureSet, batch_size: int, device=None) -> list[torch.Tensor]:
    """The head's output per item, in input order: logits (C,) for texts, tag ids (U,) for tagging."""
    from plmkit.models.tagger import Tagger

    device = device or next(model.parameters()).device
    order = sorted(range(len(store)), key=store.length)
    out: list[torch.Tensor | None] = [None] * len(store)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = {k: v.to(device) for k, v in collate_cached([(0, 0, {"index": i}) for i in idx], store).items()}
            scores = model(batch)
            if isinstance(model.head, Tagger):
                scores = model.head.decode(scores, batch["mask"])  # (B, U)
            for row, i in enumerate(idx):
                out[i] = scores[row, : store.length(i)].cpu() if isinstance(model.head, Tagger) else scores[row].float().cpu()
    model.train(was_training)
    return out  # type: ignore[return-value]


# --- what differs between texts and tagging: items, targets, scores --------------------------------------------


@dataclass
class Prepared:
    """One data set made ready for the encoder: its items and what scoring needs."""

    items: list[dict[str, Any]]
    targets: list[Any] | None  # label ids / floats (texts) or tag-id lists (tagging windows)
    gold: Any  # what task.metrics compares against
    encoded: Any = None  # tagging: the Encoded sentences, for stitching windows


def _kind(task: Task) -> str:
    return "tagging" if task.kind == "tagging" else "pair" if task.pair else "sequence"


def default_head(task: Task) -> str:
    return {"tagging": "bilstm_crf", "pair": "esim", "sequence": "mlp"}[_kind(task)]


def prepare_texts(examples: Sequence[Example], tokenizer, cfg: TrainConfig, targets: Sequence[Any] | None) -> Prepared:
    items = []
    for ex in examples:
        enc = encode(tokenizer, ex.text, ex.text_pair, cfg.max_length, cfg.truncation, cfg.head_tokens)
        items.append({"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"], "segments": enc["segments"]})
    return Prepared(items, list(targets) if targets is not None else None, targets)


def prepare_tagging(sentences, tokenizer, scheme: str, cfg: TrainConfig, index: dict[str, int] | None,
                    encoded=None) -> Prepared:
    from plmkit.tasks.tagging import encode_sentences, make_features

    encoded = encoded if encoded is not None else encode_sentences(sentences, tokenizer, scheme, cfg.unit_tokens)
    prefix, suffix = backend_and_layout(tokenizer)[1].single
    windows = make_features(encoded, prefix, suffix, cfg.max_length, cfg.window_overlap, index)
    items = [{"input_ids": w["input_ids"], "keep": w["unit_pos"], "segments": [1] * len(w["unit_pos"]), "window": w}
             for w in windows]
    targets = [w["tags"] for w in windows] if index is not None else None
    return Prepared(items, targets, [e.tags for e in encoded], encoded)


def score(task: Task, model: FeatureModel, store: FeatureSet, data: Prepared, labels: list[str], scheme: str | None,
          batch_size: int, device=None) -> tuple[dict[str, Any], Any]:
    """(metrics, predictions): logits (N, C) for texts, tags per unit of each sentence for tagging."""
    outputs = run_head(model, store, batch_size, device)
    if task.kind == "tagging":
        from plmkit.tasks.tagging import stitch

        pred = stitch(data.encoded, [it["window"] for it in data.items], [o.tolist() for o in outputs], labels,
                      task.default_tag)
        labelled = data.gold is not None and all(g is not None for g in data.gold)
        return (task.metrics(data.gold, pred, scheme) if labelled else {}), pred
    logits = torch.stack(outputs) if outputs else torch.zeros(0, max(1, len(labels)))
    metrics = {}
    if data.gold is not None:
        metrics = task.metrics(logits, torch.tensor(data.gold, dtype=torch.long if labels else torch.float), labels)
    return metrics, logits


# --- train, load, evaluate, predict -----------------------------------------------------------------------------


def check_options(cfg: TrainConfig) -> None:
    if cfg.feature_cache not in ("disk", "memory"):
        raise ConfigError(f"feature_cache: unknown {cfg.feature_cache!r}; known: disk, memory")
    for key, off in (("layer_lr_decay", 1.0), ("gradual_unfreeze", False)):
        if getattr(cfg, key) != off:
            raise ConfigError(f"{key}: applies to mode finetune; in mode features the encoder is frozen")
    if cfg.keep_layers:
        raise ConfigError("keep_layers: applies to modes finetune and partial; in mode features, layers=N reads layer N")
    if cfg.bigram_buckets:
        raise ConfigError("bigram_buckets: applies to tagging in modes finetune and partial, not features")


def _load_task_data(task: Task, spec: str, cfg: TrainConfig, tokenizer, train_labels: dict | None):
    """(Prepared, labels, scheme) for a data spec; labels and scheme come from training when given."""
    if task.kind == "tagging":
        from plmkit.tasks.tagging import encode_sentences
        from plmkit.train.tagging import check_known, label_set, load_sentences, scheme_of

        sentences = load_sentences(spec, task, cfg.encoding)
        scheme = scheme_of(sentences, task, spec) if train_labels is None else train_labels["scheme"]
        encoded = encode_sentences(sentences, tokenizer, scheme, cfg.unit_tokens)
        labels = label_set(encoded, scheme) if train_labels is None else train_labels["labels"]
        check_known(encoded, labels, spec)
        index = {t: i for i, t in enumerate(labels)}
        return prepare_tagging(sentences, tokenizer, scheme, cfg, index, encoded), labels, scheme
    from plmkit.train.finetune import label_ids, load_data

    examples = load_data(spec, task, cfg)
    if task.label_type == "class":
        labels = sorted({str(ex.label) for ex in examples}) if train_labels is None else train_labels["labels"]
        if train_labels is None and len(labels) < 2:
            raise DataError(f"the label column has one class ({labels[0]!r}); classification needs at least two",
                            path=spec, field=cfg.label_column)
        targets: list[Any] = label_ids(examples, labels, spec, cfg.label_column)
    else:
        labels, targets = [], [float(ex.label) for ex in examples]
    return prepare_texts(examples, tokenizer, cfg, targets), labels, None


def train(train_spec: str, output: str | Path, cfg: TrainConfig, *, dev_spec: str | None = None, resume: bool = False,
          command: str | None = None, callbacks: Sequence[Callable[[LoopState], None]] = ()) -> dict[str, Any]:
    """Extract (or read back) every layer of the frozen encoder, then train a head on them."""
    check_options(cfg)
    task: Task = TASKS.get(cfg.task)
    head = cfg.head or default_head(task)
    check_head(_kind(task), head)  # before the encoder runs over the data, not after
    output = Path(output)
    started = time.time()
    if dev_spec is None and train_spec.startswith("builtin:"):
        dev_spec = ":".join(train_spec.split(":")[:2]) + ":dev"
    source = resolve_model(cfg.model)
    model_config = load_config(source, cfg.trust_remote_code)
    tokenizer = load_tokenizer(source, cfg.trust_remote_code)
    from plmkit.train.finetune import check_limits

    check_limits(source, cfg, model_config, tokenizer)
    train_data, labels, scheme = _load_task_data(task, train_spec, cfg, tokenizer, None)
    dev_data = _load_task_data(task, dev_spec, cfg, tokenizer, {"labels": labels, "scheme": scheme})[0] if dev_spec else None
    if not train_data.items:
        raise DataError("no example has a token the tokenizer keeps", path=train_spec)

    encoder = load_encoder(source, trust_remote_code=cfg.trust_remote_code)
    encoder.requires_grad_(False)
    from accelerate import PartialState

    encoder.to(PartialState().device)  # this process's GPU under `accelerate launch`; the CPU otherwise
    extract_started = time.time()
    key_model = functools.cache(lambda: fingerprint(encoder))  # hashed once, and only for the disk cache
    pad_id = tokenizer.pad_token_id
    train_store, hit_train = cached_features(encoder, key_model, train_data.items, pad_id, cfg, "extracting train")
    dev_store, hit_dev = (cached_features(encoder, key_model, dev_data.items, pad_id, cfg, "extracting dev")
                          if dev_data else (None, True))
    extract_seconds = round(time.time() - extract_started, 1)
    encoder.cpu()

    torch.manual_seed(cfg.loop.seed)
    model = build_feature_model(_kind(task), head, train_store.n_layers, train_store.values.shape[2], cfg.layers,
                                labels, scheme, cfg.dropout)
    feats = [{"index": i, ("tags" if task.kind == "tagging" else "label"): y} for i, y in enumerate(train_data.targets)]
    if task.kind == "tagging":
        loss_fn = lambda m, b: m.head.loss(m(b), b["tags"], b["mask"])  # noqa: E731
    else:
        loss_fn = lambda m, b: task.loss(m(b), b["labels"])  # noqa: E731

    def evaluate(model, accelerator) -> dict[str, float]:
        metrics, _ = score(task, accelerator.unwrap_model(model), dev_store, dev_data, labels, scheme,
                           cfg.loop.eval_batch_size, accelerator.device)
        return {f"dev_{k}": v for k, v in metrics.items() if isinstance(v, float)}

    from plmkit.tasks.tagging import unit_tokens_for

    meta = {
        "plmkit_version": __version__, "task": task.name, "mode": "features", "head": head, "layers": cfg.layers,
        "labels": labels, "scheme": scheme, "base_model": cfg.model, "max_length": cfg.max_length,
        "truncation": cfg.truncation, "head_tokens": cfg.head_tokens, "window_overlap": cfg.window_overlap,
        "unit_tokens": unit_tokens_for(tokenizer, cfg.unit_tokens), "text_column": cfg.text_column,
        "text_pair_column": cfg.text_pair_column, "label_column": cfg.label_column,
        "train": train_spec, "dev": dev_spec, "command": command, "seed": cfg.loop.seed, "config": to_dict(cfg),
    }
    save_best = feature_model_saver(output, encoder, tokenizer, meta)
    state = train_loop(
        model, loss_fn, feats, [train_store.length(i) for i in range(len(train_store))],
        partial(collate_cached, store=train_store), cfg.loop, output,
        evaluate=evaluate if dev_store is not None and len(dev_store) else None, metric=f"dev_{task.main_metric}",
        greater_is_better=task.greater_is_better, save_best=save_best, resume=resume, callbacks=callbacks,
    )
    if dev_store is None or not len(dev_store):
        save_best(model, state)
    from plmkit.train.finetune import run_summary

    saved = read_plmkit_meta(str(output)) or {}  # the best epoch's head, as saved
    return run_summary(output, state, started) | {
        "mode": "features", "head": head, "layers": cfg.layers, "layer_weights": saved.get("layer_weights"),
        "gamma": saved.get("gamma"), "extract_seconds": extract_seconds, "cache_hit": hit_train and hit_dev,
    }


def feature_model_saver(output: Path, encoder, tokenizer, meta: dict[str, Any]) -> Callable[[FeatureModel, LoopState], None]:
    """The encoder and tokenizer once, then the head (head.safetensors) and plmkit.json, last, at each improvement."""
    from safetensors.torch import save_file

    saved_encoder = False

    def save_best(model: FeatureModel, state: LoopState) -> None:
        nonlocal saved_encoder
        check_finite(model)
        if not saved_encoder:
            save_model_dir(output, encoder, tokenizer)
            saved_encoder = True
        with atomic_path(output / "head.safetensors") as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp),
                      metadata={"format": "pt"})
        weights = model.layers.layer_weights()
        gamma = round(float(model.layers.gamma.detach()), 6) if model.layers.index is None else None
        if model.layers.index is None:
            from plmkit.report.plots import plot_layer_weights

            plot_layer_weights(weights, output / "layer_weights.png", gamma=gamma)
        best = state.history[-1] if state.history else {}
        atomic_write_json(output / "plmkit.json", meta | {"layer_weights": weights, "gamma": gamma, "dev_metrics": best,
                                                          "history": state.history})

    return save_best


def load_trained(model_dir: str | Path):
    """(bundle, tokenizer, task, meta) of a directory that feature-mode `train` wrote; bundle = (encoder, head model)."""
    from safetensors.torch import load_file

    source = resolve_model(str(model_dir))
    meta = read_plmkit_meta(source)
    if meta is None or meta.get("mode") != "features":
        raise ModelError(f"{source}: not a feature-mode model (plmkit.json has no mode: features)")
    head_file = Path(source) / "head.safetensors"
    if not head_file.is_file():
        raise ModelError(f"{source}: head.safetensors is missing")
    task: Task = TASKS.get(meta["task"])
    encoder = load_encoder(source)
    state = load_file(str(head_file))
    n_layers, hidden = encoder.config.num_hidden_layers + 1, encoder.config.hidden_size
    model = build_feature_model(_kind(task), meta["head"], n_layers, hidden, meta["layers"], meta["labels"], meta["scheme"])
    model.load_state_dict(state, strict=True)
    tokenizer = load_tokenizer(source)
    check_tokenizer_matches(source, tokenizer, encoder.config)
    model.eval()
    return (encoder, model), tokenizer, task, meta


def _cfg_from_meta(meta: dict[str, Any], encoding: str | None) -> TrainConfig:
    """The fine-tuning runner's, plus what feature mode reads: windows, and no cache at prediction."""
    from plmkit.train.finetune import _cfg_from_meta as base

    cfg = base(meta, encoding)
    cfg.window_overlap, cfg.feature_cache, cfg.loop.progress = meta["window_overlap"], "memory", False
    cfg.unit_tokens = meta.get("unit_tokens", "word")  # models saved before the choice existed used word
    return cfg


def evaluate(model_dir: str | Path, data_spec: str, *, encoding: str | None = None, batch_size: int = 64) -> dict[str, Any]:
    (encoder, model), tokenizer, task, meta = load_trained(model_dir)
    cfg = _cfg_from_meta(meta, encoding)
    data, _, _ = _load_task_data(task, data_spec, cfg, tokenizer, {"labels": meta["labels"], "scheme": meta["scheme"]})
    store = extract(encoder, data.items, tokenizer.pad_token_id, batch_size, progress=len(data.items) > 1000)
    metrics, _ = score(task, model, store, data, meta["labels"], meta["scheme"], batch_size)
    return metrics | ({"sentences": len(data.gold)} if task.kind == "tagging" else {"examples": len(data.items)})


def predict(model_dir: str | Path, inputs: Sequence[Any], *, batch_size: int = 64, loaded=None) -> list[dict[str, Any]]:
    """Texts (tagging) or Examples (text tasks) -> one row per input, in input order."""
    (encoder, model), tokenizer, task, meta = loaded or load_trained(model_dir)
    cfg = _cfg_from_meta(meta, None)
    if task.kind == "tagging":
        from plmkit.data.tagging import Sentence

        data = prepare_tagging([Sentence(t, None) for t in inputs], tokenizer, meta["scheme"], cfg, None)
        data.gold = None
    else:
        for ex in inputs:
            if task.pair and ex.text_pair is None:
                raise DataError("this model needs a text pair", path=ex.where or None)
        data = prepare_texts(inputs, tokenizer, cfg, None)
    store = extract(encoder, data.items, tokenizer.pad_token_id, batch_size, progress=len(data.items) > 1000)
    _, pred = score(task, model, store, data, meta["labels"], meta["scheme"], batch_size)
    if task.kind == "tagging":
        return [{"text": e.sentence.text} | task.decode(e, tags, meta["scheme"]) for e, tags in zip(data.encoded, pred)]
    rows = []
    for ex, decoded in zip(inputs, task.decode(pred, meta["labels"])):
        rows.append({"text": ex.text} | ({"text_pair": ex.text_pair} if ex.text_pair is not None else {}) | decoded)
    return rows

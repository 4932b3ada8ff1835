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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from plmkit.config import TrainConfig
from plmkit.data.batching import length_mask
from plmkit.errors import ModelError
from plmkit.models.encoders import check_tokenizer_matches
from plmkit.models.feature_heads import FeatureModel, build_feature_model
from plmkit.models.saving import save_model_dir
from plmkit.models.tagger import load_encoder
from plmkit.tasks.base import Featurized, Task
from plmkit.train.infer import evaluating, in_sorted_batches, run_model
from plmkit.train.loop import LoopState
from plmkit.train.plan import Plan, check_finite

CACHE_FORMAT = 1


@dataclass
class FeatureSet:
    """Every layer's output for the kept positions of N items, stored flat."""

    values: torch.Tensor  # (P, N+1, H) fp16: P kept positions of all items together
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
    return Path(
        cfg.features.cache_dir or os.environ.get("PLMKIT_CACHE") or Path.home() / ".cache" / "plmkit" / "features"
    )


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


def extract(
    encoder: torch.nn.Module,
    items: Sequence[dict[str, Any]],
    pad_id: int,
    batch_size: int = 64,
    device: torch.device | None = None,
    progress: bool = False,
    desc: str = "extracting",
    allocate: Callable[[tuple[int, int, int]], torch.Tensor] | None = None,
) -> FeatureSet:
    """Run the frozen encoder once over `items` ({input_ids, token_type_ids?, keep?, segments});
    keep every layer's output at the `keep` positions (all positions when absent). `allocate(shape)`
    gives the fp16 tensor (P, N+1, H) to fill (default: one in memory; a disk cache maps its file)."""
    device = device or next(encoder.parameters()).device
    keep = [it.get("keep") or list(range(len(it["input_ids"]))) for it in items]
    offsets = torch.zeros(len(items) + 1, dtype=torch.long)
    offsets[1:] = torch.tensor([len(k) for k in keep], dtype=torch.long).cumsum(0)
    segments = torch.tensor([s for it in items for s in it["segments"]], dtype=torch.int8)  # (P,)
    if len(segments) != int(offsets[-1]):
        raise ValueError("each item needs one segment id per kept position")
    values: torch.Tensor | None = None

    def run(idx: list[int]) -> list[None]:
        nonlocal values
        out = encoder(**_encoder_inputs(encoder, [items[i] for i in idx], pad_id, device), output_hidden_states=True)
        layers = torch.stack(out.hidden_states, 2)  # (B, T, N+1, H)
        if values is None:
            shape = (int(offsets[-1]), layers.shape[2], layers.shape[3])
            values = allocate(shape) if allocate else torch.empty(shape, dtype=torch.float16)
        for row, i in enumerate(idx):
            values[offsets[i] : offsets[i + 1]] = layers[row, keep[i]].to("cpu", torch.float16)
        return [None] * len(idx)

    with evaluating(encoder):
        in_sorted_batches([len(it["input_ids"]) for it in items], batch_size, run, progress=progress, desc=desc)
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


def cached_features(
    encoder, key_model: Callable[[], str], items: Sequence[dict[str, Any]], pad_id: int, cfg: TrainConfig, desc: str
) -> tuple[FeatureSet, bool]:
    """(features, whether they came from the disk cache): extracted once, then read back. With the
    disk cache the extraction writes straight into the cache file's mapping, so neither it nor
    training holds every layer of every position in memory.

    Under `accelerate launch` with the disk cache the main process extracts (or finds) the file first and the
    others wait for it, then map it (the page cache holds it once for all the processes of a machine); a
    process that cannot see the file (another machine, without a shared file system) extracts for itself,
    in memory: only the main process writes a cache. With feature_cache=memory each process extracts."""
    from plmkit.train.processes import is_main_process, launched, main_first

    if not (launched() and cfg.features.feature_cache == "disk"):
        return _cached_features(encoder, key_model, items, pad_id, cfg, desc)
    return main_first(lambda: _cached_features(encoder, key_model, items, pad_id, cfg, desc, write=is_main_process()))


def _cached_features(
    encoder,
    key_model: Callable[[], str],
    items: Sequence[dict[str, Any]],
    pad_id: int,
    cfg: TrainConfig,
    desc: str,
    write: bool = True,
) -> tuple[FeatureSet, bool]:
    from contextlib import ExitStack

    from plmkit.train.feature_cache import write_mapped

    path = None
    if (
        cfg.features.feature_cache == "disk"
    ):  # the key hashes every weight: only worth it when a file is read or written
        key = hashlib.sha256(f"{CACHE_FORMAT}:{key_model()}:{items_digest(items)}".encode()).hexdigest()[:40]
        path = cache_dir(cfg) / f"{key}.safetensors"
    if path is not None and path.is_file():
        t = read_cache(path)
        if t is not None and len(t["offsets"]) == len(items) + 1:
            return FeatureSet(t["values"], t["offsets"], t["segments"]), True
    device = next(encoder.parameters()).device
    if path is None or not write:
        return extract(encoder, items, pad_id, cfg.loop.eval_batch_size, device, cfg.loop.progress, desc), False
    meta = {"format": str(CACHE_FORMAT), "items": str(len(items))}
    with ExitStack() as stack:
        mapped: dict[str, torch.Tensor] = {}

        def allocate(shape: tuple[int, int, int]) -> torch.Tensor:
            specs = {
                "offsets": (torch.int64, (len(items) + 1,)),
                "values": (torch.float16, shape),
                "segments": (torch.int8, (shape[0],)),
            }
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


def collate_cached(feats: list[dict[str, Any]], store: FeatureSet) -> dict[str, torch.Tensor]:
    """values (B, T, N+1, H), mask and segments (B, T), and labels (B,) or tags (B, T) when present. The
    kept positions of a tagging window are its units, so the mask is also the batch's `unit_mask`."""
    from plmkit.data.batching import pad

    idx = [f["index"] for f in feats]
    lengths = [store.length(i) for i in idx]
    T = max(lengths) if lengths else 0
    shape = (len(idx), T, store.values.shape[1], store.values.shape[2])
    values = torch.zeros(shape, dtype=torch.float16)  # (B, T, N+1, H)
    segments = torch.zeros(len(idx), T, dtype=torch.long)  # (B, T)
    for row, i in enumerate(idx):
        a, b = int(store.offsets[i]), int(store.offsets[i + 1])
        values[row, : b - a] = store.values[a:b]
        segments[row, : b - a] = store.segments[a:b].long()
    mask = length_mask(torch.tensor(lengths), T)  # (B, T)
    batch = {"values": values, "mask": mask, "unit_mask": mask, "segments": segments}
    if feats and feats[0].get("label") is not None:
        batch["labels"] = torch.tensor([f["label"] for f in feats])  # (B,)
    if feats and feats[0].get("tags") is not None:
        batch["tags"] = pad([f["tags"] for f in feats], 0)  # (B, T)
    return batch


def forward_cached(model: FeatureModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(batch)  # logits (B, C) or emissions (B, U, K)


def run_head(
    task: Task, model: FeatureModel, store: FeatureSet, batch_size: int, device=None, across: bool = False
) -> list[Any]:
    """The task's outputs per item of `store`, in input order (`across`: see run_model)."""
    lengths = [store.length(i) for i in range(len(store))]
    return run_model(
        model,
        [{"index": i} for i in range(len(store))],
        partial(collate_cached, store=store),
        forward_cached,
        task.outputs,
        batch_size,
        device,
        lengths=lengths,
        across=across,
    )


# --- the mode: train, save, load ----------------------------------------------------------------------------------


def features_plan(
    task: Task,
    source: str,
    tokenizer,
    cfg: TrainConfig,
    train: Featurized,
    dev: Featurized | None,
    output: Path,
    meta: dict[str, Any],
):
    """Extract (or read back) every layer of the frozen encoder, then train a head on them."""
    from plmkit.train.processes import process_state

    encoder = load_encoder(source, trust_remote_code=cfg.trust_remote_code)
    encoder.requires_grad_(False)
    encoder.to(process_state().device)  # this process's GPU under `accelerate launch`; the CPU otherwise
    started = time.time()
    key_model = functools.cache(lambda: fingerprint(encoder))  # hashed once, and only for the disk cache
    pad_id = tokenizer.pad_token_id
    train_store, hit_train = cached_features(encoder, key_model, train.items, pad_id, cfg, "extracting train")
    dev_store, hit_dev = (
        cached_features(encoder, key_model, dev.items, pad_id, cfg, "extracting dev")
        if dev is not None and dev.items
        else (None, True)
    )
    extra = {
        "mode": "features",
        "head": cfg.head,
        "layers": cfg.features.layers,
        "layer_weights": None,
        "gamma": None,
        "extract_seconds": round(time.time() - started, 1),
        "cache_hit": hit_train and hit_dev,
    }
    encoder.cpu()

    torch.manual_seed(cfg.loop.seed)
    labels = train.labels
    model = build_feature_model(
        task.feature_kind,
        cfg.head,
        train_store.n_layers,
        train_store.values.shape[2],
        cfg.features.layers,
        labels.names,
        labels.scheme,
        cfg.dropout,
    )
    key = task.target_key
    items = [{"index": i, key: it[key]} for i, it in enumerate(train.items)]
    predict_dev = None
    if dev_store is not None:
        predict_dev = lambda m, device: run_head(  # noqa: E731
            task, m, dev_store, cfg.loop.eval_batch_size, device, across=True
        )
    return Plan(
        model,
        items,
        [train_store.length(i) for i in range(len(train_store))],
        partial(collate_cached, store=train_store),
        forward_cached,
        save=feature_model_saver(output, encoder, tokenizer, meta | {"layers": cfg.features.layers}, extra),
        predict_dev=predict_dev,
        extra=extra,
    )


def feature_model_saver(
    output: Path, encoder, tokenizer, meta: dict[str, Any], extra: dict[str, Any]
) -> Callable[[FeatureModel, LoopState], None]:
    """The encoder and tokenizer once, then the head (head.safetensors) and plmkit.json, together, at each
    improvement; the scalar mix's weights go into `extra` too."""
    from safetensors.torch import save_file

    saved_encoder = False

    def save_best(model: FeatureModel, state: LoopState) -> None:
        nonlocal saved_encoder
        check_finite(model)
        if not saved_encoder:
            save_model_dir(output, encoder, tokenizer)
            saved_encoder = True
        weights = model.layers.layer_weights()
        gamma = round(float(model.layers.gamma.detach()), 6) if model.layers.index is None else None
        if model.layers.index is None:
            from plmkit.report.plots import plot_layer_weights

            plot_layer_weights(weights, output / "layer_weights.png", gamma=gamma)
        extra.update(layer_weights=weights, gamma=gamma)
        best = state.history[-1] if state.history else {}
        head = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_model_dir(  # the head and plmkit.json together, beside the encoder saved once
            output,
            extra={
                "plmkit.json": meta
                | {"layer_weights": weights, "gamma": gamma, "dev_metrics": best, "history": state.history}
            },  # fmt: skip
            files={"head.safetensors": lambda p: save_file(head, str(p), metadata={"format": "pt"})},
        )

    return save_best


def load_feature_model(source: str, task: Task, meta: dict[str, Any], tokenizer, batch_size: int):
    """((encoder, head model), outputs(items, progress)) of a directory that feature-mode `train` wrote."""
    from safetensors.torch import load_file

    head_file = Path(source) / "head.safetensors"
    if not head_file.is_file():
        raise ModelError(f"{source}: head.safetensors is missing")
    encoder = load_encoder(source)
    n_layers, hidden = encoder.config.num_hidden_layers + 1, encoder.config.hidden_size
    model = build_feature_model(
        task.feature_kind, meta["head"], n_layers, hidden, meta["layers"], meta["labels"], meta["scheme"]
    )
    model.load_state_dict(load_file(str(head_file)), strict=True)
    check_tokenizer_matches(source, tokenizer, encoder.config)
    model.eval()

    def outputs(items: list[dict[str, Any]], progress: bool) -> list[Any]:
        store = extract(encoder, items, tokenizer.pad_token_id, batch_size, progress=progress)
        return run_head(task, model, store, batch_size)

    return (encoder, model), outputs

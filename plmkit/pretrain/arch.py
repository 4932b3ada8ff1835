"""The record of a model family that `plmkit pretrain --arch NAME` trains, its registry, and the helpers
the families share (plmkit.pretrain.archs registers them)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from plmkit.config import PretrainConfig
from plmkit.errors import ModelError
from plmkit.models.saving import save_model_dir
from plmkit.pretrain.objectives import mlm_collate
from plmkit.pretrain.tokenizer import train_wordpiece
from plmkit.registry import Registry

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Arch:
    name: str
    objective: str  # what the log and the loss plot call the loss
    # (lines, cfg) -> a tokenizer trained on them; lines may be iterated more than once (CorpusLines reads its
    # files anew each time: a corpus larger than memory)
    make_tokenizer: Callable[[Iterable[str], PretrainConfig], Any]
    build: Callable[[PretrainConfig, Any], nn.Module]  # (cfg, tokenizer) -> a fresh pretraining model
    load: Callable[[str, PretrainConfig, Any], nn.Module]  # (checkpoint dir, cfg, tokenizer) -> pretraining model
    collate: Callable[..., Batch]  # (items, tokenizer, cfg, pool) -> batch; items are (epoch, index, segment)
    loss: Callable[[nn.Module, Batch], torch.Tensor]
    save: Callable[[nn.Module, Any, Path, dict], None] = lambda model, tok, out, extra: save_model_dir(
        out, model, tok, extra
    )
    model_types: tuple[str, ...] = ()  # checkpoints `init` may name
    masks: bool = True  # whole_word and mask_rate apply


ARCHS: Registry[Arch] = Registry("arch")


def load_checked(auto_class, source: str, arch: Arch):
    """`auto_class.from_pretrained(source)`, refusing a checkpoint of another family."""
    from plmkit.models.encoders import load_config

    model_type = load_config(source).model_type
    if model_type not in arch.model_types:
        raise ModelError(
            f"{source}: a {model_type} checkpoint cannot continue as arch {arch.name!r} "
            f"(it takes {', '.join(arch.model_types)})"
        )
    return auto_class.from_pretrained(source, use_safetensors=True)


def positions(cfg: PretrainConfig) -> int:
    return max(512, cfg.max_length)


def wordpiece(lines: Iterable[str], cfg: PretrainConfig):
    return train_wordpiece(lines, cfg.vocab_size, positions(cfg))


def masking(cfg: PretrainConfig) -> dict[str, Any]:
    """The masking options every MLM collate takes."""
    return {"seed": cfg.loop.seed, "rate": cfg.mask_rate, "whole_word": cfg.whole_word, "dynamic": cfg.dynamic_masking}


def mlm_items(items, tokenizer, cfg: PretrainConfig, pool) -> Batch:
    return mlm_collate(items, tokenizer=tokenizer, **masking(cfg))


def model_inputs(batch: Batch, with_types: bool = False) -> Batch:
    keys = ("input_ids", "attention_mask", "token_type_ids") if with_types else ("input_ids", "attention_mask")
    return {k: batch[k] for k in keys if k in batch}

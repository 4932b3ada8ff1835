"""A task is one record: how to read it, build its model, score, and decode predictions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from plmkit.data.batching import length_mask, pad


@dataclass(frozen=True)
class Task:
    """The fields' call signatures belong to the task's kind, whose runner calls them:
    kind "sequence" (plmkit.train.finetune): one prediction per text or pair;
    kind "tagging" (plmkit.train.tagging): one tag per character or word."""

    name: str
    pair: bool  # needs text_pair
    label_type: str  # "class", "float" or "tags"
    build_model: Callable[..., torch.nn.Module]  # sequence: (source, labels, dropout, trust_remote_code) -> model with .logits
    loss: Callable[..., torch.Tensor]  # sequence: (logits, labels); tagging: (model, batch) -> scalar
    metrics: Callable[..., dict[str, Any]]  # sequence: (logits (N, C), gold (N,), labels); tagging: (gold, pred, scheme)
    decode: Callable[..., Any]  # sequence: (logits (N, C), labels) -> a dict per example; tagging: (encoded, tags, scheme)
    main_metric: str
    greater_is_better: bool = True
    kind: str = "sequence"


def pad_hidden(feats: list[dict[str, Any]]) -> torch.Tensor:
    """Cached hidden states (mode=partial), (T_i, H) each, padded with zeros to (B, T, H) in fp32."""
    lengths = [f["hidden"].shape[0] for f in feats]
    out = torch.zeros(len(feats), max(lengths), feats[0]["hidden"].shape[1])  # (B, T, H)
    for row, f in enumerate(feats):
        out[row, : lengths[row]] = f["hidden"].float()
    return out


def collate_encoded(items: list[tuple[int, int, dict[str, Any]]], pad_id: int, label_dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Dynamic padding of encoded examples: input_ids, token_type_ids, attention_mask (B, T), labels (B,);
    hidden (B, T, H) when the examples carry cached states (mode=partial)."""
    feats = [f for _, _, f in items]
    input_ids = pad([f["input_ids"] for f in feats], pad_id)  # (B, T)
    lengths = torch.tensor([len(f["input_ids"]) for f in feats])  # (B,)
    batch = {
        "input_ids": input_ids,
        "token_type_ids": pad([f["token_type_ids"] for f in feats], 0),  # (B, T)
        "attention_mask": length_mask(lengths, input_ids.shape[1]).long(),  # (B, T)
    }
    if feats and feats[0].get("label") is not None:
        batch["labels"] = torch.tensor([f["label"] for f in feats], dtype=label_dtype)  # (B,)
    if feats and "hidden" in feats[0]:
        batch["hidden"] = pad_hidden(feats)  # (B, T, H)
    return batch

"""`mode=partial`: the frozen bottom of the encoder runs once; the top layers and the head train
on its cached output (see plmkit.models.partial for the split itself).

The cache lives in memory for the run: hidden states (T, H) per example, in fp16 under mixed
precision (about 50 KB for a 64-token text at H=384), fp32 without. Dropout inside the frozen
layers is off while caching (they run in eval mode); everything above trains as in fine-tuning. Shapes: B batch,
T tokens, H hidden.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from plmkit.models.partial import run_bottom
from plmkit.train.infer import evaluating, in_sorted_batches


def cache_hidden(
    bottom: torch.nn.Module,
    feats: Sequence[dict[str, Any]],
    collate,
    batch_size: int,
    precision: str,
    progress: bool = False,
    desc: str = "caching",
) -> list[torch.Tensor]:
    """Hidden states (T_i, H) after the bottom layers, one per encoded example (anything with
    input_ids that `collate` batches), in input order: fp16 under mixed precision (the top reads
    them in 16 bits anyway), fp32 without, so an fp32 run trains exactly as fine-tuning would."""
    device = next(bottom.parameters()).device
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def run(idx: list[int]) -> list[torch.Tensor]:
        batch = {k: v.to(device) for k, v in collate([feats[i] for i in idx]).items()}
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            hidden = run_bottom(bottom, batch)  # (B, T, H)
        return [
            hidden[row, : len(feats[i]["input_ids"])].to("cpu", torch.float16 if dtype else torch.float32)
            for row, i in enumerate(idx)
        ]

    with evaluating(bottom):
        return in_sorted_batches([len(f["input_ids"]) for f in feats], batch_size, run, progress=progress, desc=desc)


def with_hidden(feats: Sequence[dict[str, Any]], hidden: Sequence[torch.Tensor]) -> list[dict[str, Any]]:
    """The encoded examples with their cached states beside them: the collates pad "hidden" into
    the batch, and the task's forward feeds it to the top view as `inputs_embeds`."""
    return [{**f, "hidden": h} for f, h in zip(feats, hidden)]


def prepare(
    model: torch.nn.Module, cfg, train_feats: list[dict[str, Any]], dev_feats: list[dict[str, Any]], collate
) -> tuple[torch.nn.Module, list[dict[str, Any]], list[dict[str, Any]]]:
    """(top view to train, train and dev examples with their cached states): split `model` below
    layer `cfg.finetune.freeze_layers` and run the bottom once over both sets, on the device and in the
    precision the loop will use."""
    from plmkit.models.partial import split
    from plmkit.train.loop import prefer_fast_attention, resolve_precision
    from plmkit.train.processes import process_state

    bottom, top = split(model, cfg.finetune.freeze_layers)
    precision = resolve_precision(cfg.loop.mixed_precision)
    device = process_state().device
    model.to(device)
    prefer_fast_attention(model, precision, device)

    def run(feats, desc):
        return with_hidden(
            feats, cache_hidden(bottom, feats, collate, cfg.loop.eval_batch_size, precision, cfg.loop.progress, desc)
        )

    return top, run(train_feats, "caching train"), run(dev_feats, "caching dev")

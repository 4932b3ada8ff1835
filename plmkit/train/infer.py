"""Batched inference without gradients, the one way plmkit runs a model over data outside training:
predicting, scoring the dev set, extracting features and caching a frozen bottom all call it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import torch

R = TypeVar("R")


@contextmanager
def evaluating(*modules: torch.nn.Module) -> Iterator[None]:
    """Every module in eval mode (no dropout) and no gradients inside; training flags restored after."""
    was = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, flag in zip(modules, was):
            m.train(flag)


def in_sorted_batches(
    lengths: Sequence[int],
    batch_size: int,
    run: Callable[[list[int]], Sequence[R]],
    *,
    progress: bool = False,
    desc: str = "predicting",
) -> list[R]:
    """`run(indices)` over batches of item indices sorted by length (so that batches pad little),
    one result per index, returned in input order. The progress bar shows on a terminal only."""
    from tqdm.auto import tqdm

    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    out: list[Any] = [None] * len(lengths)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False, disable=None if progress else True):
        idx = order[start : start + batch_size]
        for i, result in zip(idx, run(idx)):
            out[i] = result
    return out


def run_model(
    model: torch.nn.Module,
    items: Sequence[dict[str, Any]],
    collate: Callable[[list], dict],
    forward: Callable,
    outputs: Callable,
    batch_size: int,
    device: torch.device | None = None,
    progress: bool = False,
    lengths: Sequence[int] | None = None,
) -> list[Any]:
    """The task's outputs for every item, in input order: `collate` batches the items, `forward` scores
    the batch, `outputs(model, scores, batch)` splits the scores into one output per item. `lengths`
    sort the batches (default: each item's input_ids)."""
    device = device or next(model.parameters()).device

    def run(idx: list[int]) -> list[Any]:
        batch = {k: v.to(device) for k, v in collate([items[i] for i in idx]).items()}
        return outputs(model, forward(model, batch), batch)

    with evaluating(model):
        lengths = lengths if lengths is not None else [len(it["input_ids"]) for it in items]
        return in_sorted_batches(lengths, batch_size, run, progress=progress)

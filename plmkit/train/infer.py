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


def length_groups(order: Sequence[int], lengths: Sequence[int], batch_size: int, max_padding: float) -> list[list[int]]:
    """`order` (indices sorted by length, shortest first) cut into batches of at most `batch_size`, a new one
    started where the next item would pad the batch past `max_padding` of its real tokens (all padded to
    the longest). A run of similar lengths fills whole batches; a few texts of very different lengths (what
    a server's dynamic batch holds) do not pad the short ones to the longest."""
    groups: list[list[int]] = []
    real = 0
    for i in order:
        n = lengths[i]
        if groups and len(groups[-1]) < batch_size and n * (len(groups[-1]) + 1) <= (1 + max_padding) * (real + n):
            groups[-1].append(i)
            real += n
        else:
            groups.append([i])
            real = n
    return groups


def in_sorted_batches(
    lengths: Sequence[int],
    batch_size: int,
    run: Callable[[list[int]], Sequence[R]],
    *,
    progress: bool = False,
    desc: str = "predicting",
    max_padding: float = 0.25,
) -> list[R]:
    """`run(indices)` over batches of item indices sorted by length (so that batches pad little: at most
    `max_padding` of their real tokens, `length_groups`), one result per index, returned in input order.
    The progress bar shows on a terminal only."""
    from tqdm.auto import tqdm

    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    out: list[Any] = [None] * len(lengths)
    with tqdm(total=len(order), desc=desc, leave=False, disable=None if progress else True) as bar:
        for idx in length_groups(order, lengths, batch_size, max_padding):
            for i, result in zip(idx, run(idx)):
                out[i] = result
            bar.update(len(idx))
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
    across: bool = False,
) -> list[Any]:
    """The task's outputs for every item, in input order: `collate` batches the items, `forward` scores
    the batch, `outputs(model, scores, batch)` splits the scores into one output per item. `lengths`
    sort the batches (default: each item's input_ids). `across`: under `accelerate launch` each process
    scores its share of the items and every process gets all the outputs (plmkit.train.processes)."""
    device = device or next(model.parameters()).device

    def run(idx: list[int]) -> list[Any]:
        batch = {k: v.to(device) for k, v in collate([items[i] for i in idx]).items()}
        return outputs(model, forward(model, batch), batch)

    with evaluating(model):
        lengths = lengths if lengths is not None else [len(it["input_ids"]) for it in items]
        if not across:
            return in_sorted_batches(lengths, batch_size, run, progress=progress)
        from plmkit.train.processes import across_processes

        def share(mine: list[int]) -> list[Any]:  # this process's items, batched by length among themselves
            return in_sorted_batches(
                [lengths[i] for i in mine], batch_size, lambda idx: run([mine[k] for k in idx]), progress=progress
            )

        return across_processes(lengths, share)

"""The processes of one run under `accelerate launch` (or torchrun): who they are, and what they share.

Run plainly (`plmkit train ...`) there is one process and everything here is the single-process
path: no process group, nothing sent anywhere. Under a launcher every process joins one group:
NCCL between GPUs, gloo between CPU processes (`accelerate launch --multi_gpu --num_processes N`
on a machine without a GPU; Accelerate itself would start N unconnected processes there, each
training the whole run, unless ACCELERATE_USE_CPU is set, so `process_state` sets it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import torch

R = TypeVar("R")

# How long a process waits for the others at a collective (a barrier while the main process extracts
# features or writes the model, a gradient all-reduce) before its run fails: HF Trainer's ddp_timeout
# default. A rank that dies is noticed sooner: the launcher (torchrun) stops the others when one exits.
DEFAULT_TIMEOUT_S = 1800


def launched() -> bool:
    """Whether a launcher started this process as one of several (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def process_state():
    """Accelerate's PartialState of this process, joining the launcher's process group on the first call.

    On a machine whose torch has no GPU (or other accelerator with a distributed backend) the group is
    gloo on the CPU. The group's timeout is PLMKIT_PROCESS_TIMEOUT seconds (default 1800)."""
    from accelerate import PartialState

    if launched() and not PartialState._shared_state and "ACCELERATE_USE_CPU" not in os.environ:
        from accelerate.utils.imports import get_distributed_backend, get_torch_accelerator_backend

        device_type, _ = get_torch_accelerator_backend()
        if get_distributed_backend(device_type) is None:
            os.environ["ACCELERATE_USE_CPU"] = "true"  # read again by AcceleratorState when the loop starts
    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    timeout = timedelta(seconds=float(os.environ.get("PLMKIT_PROCESS_TIMEOUT") or DEFAULT_TIMEOUT_S))
    return PartialState(cpu=cpu, timeout=timeout) if launched() else PartialState(cpu=cpu)


def is_main_process() -> bool:
    """Whether this is the process that writes (RANK 0; alone, the one process)."""
    return int(os.environ.get("RANK", "0")) == 0


def wait_for_everyone() -> None:
    """A barrier across the launched processes; nothing when alone."""
    if launched():
        process_state().wait_for_everyone()


def main_first(make: Callable[[], R]) -> R:
    """`make()` on the main process, then on the others once it is done: for what the first call writes and
    later ones read (a shipped model converted into the cache on first use, a feature cache). Alone: `make()`."""
    if not launched():
        return make()
    if is_main_process():
        made = make()
    wait_for_everyone()
    if not is_main_process():
        made = make()
    return made


def from_main(make: Callable[[], R]) -> R:
    """`make()` run on the main process only and its (picklable) result sent to every process: what must be
    the same everywhere and is not cheap or not certain to come out the same when each computes it (a
    tokenizer trained on the corpus)."""
    if not launched():
        return make()
    from accelerate.utils import broadcast_object_list

    state = process_state()
    box = [make() if state.is_main_process else None]
    broadcast_object_list(box, from_process=0)
    return box[0]


def across_processes(lengths: Sequence[int], work: Callable[[list[int]], Sequence[R]]) -> list[R]:
    """`work(indices)` -> one result per index, run over this process's share of the items, everyone's results
    gathered: every process returns all of them, in input order. The items are dealt out in order of length,
    so the shares cost about the same; each item is in exactly one share (no padding duplicates to drop).
    Alone: `work` over all of them."""
    n = len(lengths)
    if not launched():
        return list(work(list(range(n))))
    from accelerate.utils import gather_object

    state = process_state()
    order = sorted(range(n), key=lengths.__getitem__)
    mine = order[state.process_index :: state.num_processes]
    done = list(zip(mine, work(mine)))
    out: list[Any] = [None] * n
    for i, result in gather_object(done):  # every process's (index, result) pairs, one list
        out[i] = result
    return out


def broadcast_float(value: float, device: torch.device) -> float:
    """The main process's `value`, on every process."""
    if not launched():
        return value
    from accelerate.utils import broadcast

    return float(broadcast(torch.tensor([value], dtype=torch.float64, device=device), from_process=0)[0])

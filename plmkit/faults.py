"""Fault injection: kill this process with SIGKILL at a named point, so tests can prove that a kill
anywhere leaves every output whole and `--resume` exact.

Set `PLMKIT_FAULT=POINT` (the first time POINT is reached) or `PLMKIT_FAULT=POINT:N` (the N-th time).
Under `accelerate launch` every process reads it; `PLMKIT_FAULT_RANK=R` kills only the process of RANK R.
The points, and what each interrupts:

    step                after an optimiser step (mid-epoch, between checkpoints)
    checkpoint.files    between the files of a checkpoint being written
    swap                between moving a previous directory aside (a checkpoint, an export) and renaming
                        the new one in
    save.files          between the files of a model directory being written (best-model or final save)
    save.commit         between the files of a model directory being moved into place
    output.write        in the middle of writing predictions to a file
    output.rename       after an output file is written under its temporary name, before its rename
    corpus.pack         between the pieces of a tokenized pretraining corpus being written (OUTPUT/.corpus)

Unset (the normal case), `point()` is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_reached: Counter[str] = Counter()


def point(name: str) -> None:
    """Die here with SIGKILL when PLMKIT_FAULT names this point and this is its N-th arrival."""
    spec = os.environ.get("PLMKIT_FAULT")
    if not spec:
        return
    want, _, count = spec.partition(":")
    rank = os.environ.get("RANK", "0")
    if want != name or os.environ.get("PLMKIT_FAULT_RANK", rank) != rank:
        return
    _reached[name] += 1
    if _reached[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)

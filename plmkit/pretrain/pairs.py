"""Sentence-pair objectives: cut a packed segment into A and B, then swap (SOP) or replace B (NSP).

Pure functions over token lists with an explicit generator. Labels follow Hugging Face:
AlbertForPreTraining's sentence_order_label and BertForPreTraining's next_sentence_label.
"""

from __future__ import annotations

from typing import TypeVar

import torch

T = TypeVar("T")

ORIGINAL_ORDER, SWAPPED = 0, 1  # SOP labels
IS_NEXT, IS_RANDOM = 0, 1  # NSP labels


def _coin(gen: torch.Generator) -> bool:
    """True with probability 0.5."""
    return bool(torch.rand(1, generator=gen).item() < 0.5)


def split_pair(ids: list[T], gen: torch.Generator) -> tuple[list[T], list[T]]:
    """Cut a segment at a uniformly random point into A and B, both non-empty: A + B == ids."""
    if len(ids) < 2:
        raise ValueError(f"a pair needs a segment of at least 2 tokens, got {len(ids)}")
    cut = int(torch.randint(1, len(ids), (1,), generator=gen))
    return ids[:cut], ids[cut:]


def sop_pair(a: list[T], b: list[T], gen: torch.Generator) -> tuple[list[T], list[T], int]:
    """Sentence order: with probability 0.5 swap A and B. Label 0 = original order, 1 = swapped."""
    if _coin(gen):
        return b, a, SWAPPED
    return a, b, ORIGINAL_ORDER


def nsp_pair(a: list[T], b: list[T], random_b: list[T], gen: torch.Generator) -> tuple[list[T], list[T], int]:
    """Next sentence: with probability 0.5 replace B by random_b. Label 0 = B follows A, 1 = B is random."""
    if _coin(gen):
        return a, random_b, IS_RANDOM
    return a, b, IS_NEXT

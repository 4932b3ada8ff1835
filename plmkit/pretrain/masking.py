"""Masking strategies as pure functions with explicit random generators.

Choosing positions (token or whole word) is separate from corrupting them; the
80/10/10 corruption rule exists once, in `corrupt`.
"""

from __future__ import annotations

import hashlib

import torch

IGNORE_INDEX = -100


def example_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator seeded from (seed, epoch, index): reproducible in any worker or process.

    Dynamic masking passes the epoch; static masking passes epoch 0 every time.
    """
    key = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(key, "little") & ((1 << 63) - 1))


def choose_tokens(candidates: torch.Tensor, rate: float, gen: torch.Generator) -> torch.Tensor:
    """Pick round(rate * n) of the candidate positions (at least one when any exist).

    candidates: (T,) bool, True where a token may be masked (not special, not padding).
    Returns (T,) bool.
    """
    positions = candidates.nonzero().squeeze(-1)  # (N,)
    chosen = torch.zeros_like(candidates)
    if positions.numel() == 0:
        return chosen
    n = max(1, int(round(rate * positions.numel())))
    pick = torch.randperm(positions.numel(), generator=gen)[:n]
    chosen[positions[pick]] = True
    return chosen


def choose_whole_words(word_ids: torch.Tensor, rate: float, gen: torch.Generator) -> torch.Tensor:
    """Pick whole words until about rate * (number of tokens) tokens are chosen.

    word_ids: (T,) long, the word each token belongs to; -1 for tokens never masked.
    Returns (T,) bool.
    """
    candidates = word_ids >= 0
    chosen = torch.zeros_like(candidates)
    words = torch.unique(word_ids[candidates])
    if words.numel() == 0:
        return chosen
    budget = max(1, int(round(rate * int(candidates.sum()))))
    taken = 0
    for w in words[torch.randperm(words.numel(), generator=gen)]:
        in_word = word_ids == w
        size = int(in_word.sum())
        if taken > 0 and taken + size > budget:
            continue
        chosen |= in_word
        taken += size
        if taken >= budget:
            break
    return chosen


def corrupt(
    input_ids: torch.Tensor,
    chosen: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    gen: torch.Generator,
    mask_prob: float = 0.8,
    random_prob: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 80/10/10 rule: of the chosen positions, 80% -> [MASK], 10% -> random token, 10% kept.

    input_ids, chosen: (T,). Returns (corrupted ids (T,), labels (T,) with IGNORE_INDEX off the chosen positions).
    """
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    roll = torch.rand(input_ids.shape, generator=gen)  # (T,)
    to_mask = chosen & (roll < mask_prob)
    to_random = chosen & (roll >= mask_prob) & (roll < mask_prob + random_prob)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=gen)  # (T,)
    out = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    out = torch.where(to_random, random_ids, out)
    return out, labels

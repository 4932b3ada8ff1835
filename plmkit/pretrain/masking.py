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


def span_length_probs(p: float = 0.2, max_len: int = 10) -> torch.Tensor:
    """SpanBERT's span lengths: a geometric distribution Geo(p) over 1..max_len, clipped and renormalised.

    Returns (max_len,) float: entry k is the probability of length k + 1 (mean 3.8 for p=0.2, max_len=10).
    """
    if not 0.0 < p <= 1.0 or max_len < 1:
        raise ValueError(f"need 0 < p <= 1 and max_len >= 1, got p={p}, max_len={max_len}")
    lengths = torch.arange(1, max_len + 1, dtype=torch.float64)  # (S,)
    probs = p * (1.0 - p) ** (lengths - 1)  # (S,)
    return (probs / probs.sum()).float()


SPAN_ATTEMPTS_PER_TOKEN = 10  # choose_spans gives up after this many draws per token of its budget


def choose_spans(
    candidates: torch.Tensor, rate: float, gen: torch.Generator, p: float = 0.2, max_len: int = 10
) -> torch.Tensor:
    """SpanBERT span masking: contiguous spans of candidate positions until round(rate * n) are chosen.

    Each draw takes a length from `span_length_probs(p, max_len)` and a start among the candidate
    positions. The span is shortened where it would cross a non-candidate ([CLS], [SEP], padding)
    and where it would pass the budget, so the last span is cut to make the total exactly the budget.
    A span that would overlap or touch (be adjacent to) an already chosen span is rejected and drawn
    again: spans are always separated by at least one unchosen position, so every maximal run of
    chosen positions is one span and its boundaries s-1 and e+1 are never chosen (what the span
    boundary objective needs). After SPAN_ATTEMPTS_PER_TOKEN * budget draws it stops with what it
    has; at ordinary rates (0.15) the budget is always reached.

    candidates: (T,) bool. Returns (T,) bool.
    """
    cand = candidates.tolist()
    positions = [i for i, c in enumerate(cand) if c]
    chosen = [False] * len(cand)
    if not positions:
        return torch.zeros_like(candidates)
    budget = max(1, int(round(rate * len(positions))))
    attempts = SPAN_ATTEMPTS_PER_TOKEN * budget
    lengths = (torch.multinomial(span_length_probs(p, max_len), attempts, replacement=True, generator=gen) + 1).tolist()
    starts = torch.randint(len(positions), (attempts,), generator=gen).tolist()
    free = list(cand)  # a candidate that is neither chosen nor next to a chosen position
    taken = 0
    for length, k in zip(lengths, starts):
        if taken >= budget:
            break
        start = end = positions[k]
        length = min(length, budget - taken)
        while end - start + 1 < length and end + 1 < len(cand) and cand[end + 1]:
            end += 1
        if not all(free[start : end + 1]):
            continue
        chosen[start : end + 1] = [True] * (end - start + 1)
        free[max(0, start - 1) : end + 2] = [False] * (min(len(cand), end + 2) - max(0, start - 1))
        taken += end - start + 1
    return torch.tensor(chosen, dtype=torch.bool)

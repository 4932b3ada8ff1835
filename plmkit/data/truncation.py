"""Long texts: keep the head, the tail, or some of each (Sun et al. 2019: 128 head + 382 tail of 510).

Truncation works on token-id lists with their character offsets; the special tokens
around them ([CLS] A [SEP] B [SEP], <s> A </s></s> B </s>, none for GPT-2, ...) are read
once from the tokenizer's own post-processor, so every model family gets its own layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from tokenizers import Tokenizer

from plmkit.errors import ConfigError

STRATEGIES = ("head", "tail", "head_tail")
HEAD_SHARE = 128 / 510  # the paper's split, scaled to other budgets


def head_tokens_for(budget: int, head_tokens: int | None) -> int:
    if head_tokens is None:
        return int(round(budget * HEAD_SHARE))
    if head_tokens < 0:
        raise ConfigError(f"head_tokens: must be >= 0, got {head_tokens}")
    return min(head_tokens, budget)


def keep_indices(n: int, budget: int, strategy: str, head_tokens: int | None = None) -> list[int]:
    """Which of n token positions survive truncation to `budget`."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"truncation: unknown {strategy!r}; known: {', '.join(STRATEGIES)}")
    if n <= budget:
        return list(range(n))
    if strategy == "head":
        return list(range(budget))
    if strategy == "tail":
        return list(range(n - budget, n))
    n_head = head_tokens_for(budget, head_tokens)
    return list(range(n_head)) + list(range(n - (budget - n_head), n))


def pair_lengths(n_a: int, n_b: int, budget: int) -> tuple[int, int]:
    """Longest first: drop a token from the longer side (the first, on a tie) until both fit."""
    while n_a + n_b > budget:
        if n_a >= n_b:
            n_a -= 1
        else:
            n_b -= 1
    return n_a, n_b


@dataclass(frozen=True)
class Layout:
    """Special tokens of one tokenizer: ids and type ids before A, between A and B, after B."""

    single: tuple[tuple[int, ...], tuple[int, ...]]  # (prefix, suffix) ids
    pair: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]  # (prefix, middle, suffix) ids
    pair_types: tuple[int, int, int, int, int]  # type id of: prefix, A, middle, B, suffix

    def n_special(self, pair: bool) -> int:
        """How many special tokens frame a single text (pair False) or a pair of texts."""
        return sum(map(len, self.pair)) if pair else sum(map(len, self.single))

    def frame(self, ids: Sequence[int], pair_ids: Sequence[int] | None = None) -> dict[str, list[int]]:
        """`ids` (and `pair_ids`) between the special tokens, as `tokenizer(text, text_pair)` frames a text's ids.

        Returns input_ids, token_type_ids (all 0 for a single text) and segments (1 for a token of ids,
        2 of pair_ids, 0 for a special token; `spread` lays other per-token values out by them)."""
        if pair_ids is None:
            pre, post = self.single
            parts = [(pre, 0, 0), (ids, 0, 1), (post, 0, 0)]
        else:
            pre, mid, post = self.pair
            t_pre, t_a, t_mid, t_b, t_post = self.pair_types
            parts = [(pre, t_pre, 0), (ids, t_a, 1), (mid, t_mid, 0), (pair_ids, t_b, 2), (post, t_post, 0)]
        return {
            "input_ids": [i for part, _, _ in parts for i in part],
            "token_type_ids": [t for part, t, _ in parts for _ in part],
            "segments": [s for part, _, s in parts for _ in part],
        }


def spread(segments: Sequence[int], a: Sequence, b: Sequence = (), special=None) -> list:
    """Per-token values of A and of B laid out as `Layout.frame` laid out their ids, `special` at each special token."""
    sides = (None, iter(a), iter(b))
    return [special if s == 0 else next(sides[s]) for s in segments]


def _segments(enc) -> list[tuple[int | None, list[int], list[int]]]:
    """Runs of (sequence id, ids, type ids) in a processed encoding."""
    runs: list[tuple[int | None, list[int], list[int]]] = []
    for token_id, type_id, seq in zip(enc.ids, enc.type_ids, enc.sequence_ids):
        if not runs or runs[-1][0] != seq:
            runs.append((seq, [], []))
        runs[-1][1].append(token_id)
        runs[-1][2].append(type_id)
    return runs


def _around(runs: list[tuple[int | None, list[int], list[int]]]) -> list[tuple[int, ...]]:
    """Special-token ids before, between and after the text runs."""
    parts, current = [], []
    for seq, ids, _ in runs:
        if seq is None:
            current += ids
        else:
            parts.append(tuple(current))
            current = []
    parts.append(tuple(current))
    return parts


@lru_cache(maxsize=16)
def _layout(tokenizer_json: str) -> tuple[Tokenizer, Layout]:
    backend = Tokenizer.from_str(tokenizer_json)
    backend.no_padding()
    backend.no_truncation()
    single = _around(_segments(backend.encode("a", add_special_tokens=True)))
    runs = _segments(backend.encode("a", "b", add_special_tokens=True))
    pair = _around(runs)
    type_a = next((t[0] for seq, _, t in runs if seq == 0), 0)
    type_b = next((t[0] for seq, _, t in runs if seq == 1), type_a)
    pre = runs[0][2][0] if runs[0][0] is None else type_a
    mid = next((t[0] for i, (seq, _, t) in enumerate(runs) if seq is None and 0 < i < len(runs) - 1), type_b)
    post = runs[-1][2][0] if runs[-1][0] is None else type_b
    return backend, Layout((single[0], single[1]), (pair[0], pair[1], pair[2]), (pre, type_a, mid, type_b, post))


def backend_and_layout(tokenizer) -> tuple[Tokenizer, Layout]:
    """A copy of the tokenizer's backend without padding or truncation, and its special-token layout.
    Kept on the tokenizer: serialising a large vocabulary (e5's is 16 MB) for every text would dominate."""
    cached = getattr(tokenizer, "_plmkit_layout", None)
    if cached is None:
        cached = _layout(tokenizer.backend_tokenizer.to_str())
        tokenizer._plmkit_layout = cached
    return cached


def layout(tokenizer) -> Layout:
    """The tokenizer's special-token layout (`Layout`), read from its post-processor once and kept on it."""
    return backend_and_layout(tokenizer)[1]


def encode(
    tokenizer, text: str, text_pair: str | None, max_length: int, strategy: str, head_tokens: int | None = None
) -> dict[str, list]:
    """Tokenise, truncate by `strategy` to fit `max_length` including special tokens, add them.

    Returns input_ids, token_type_ids, offsets (character spans into text or text_pair; (0, 0) for specials)
    and segments (1 for a token of text, 2 of text_pair, 0 for a special token).
    """
    return encode_all(tokenizer, [text], [text_pair], max_length, strategy, head_tokens)[0]


def encode_all(
    tokenizer,
    texts: Sequence[str],
    text_pairs: Sequence[str | None],
    max_length: int,
    strategy: str,
    head_tokens: int | None = None,
) -> list[dict[str, list]]:
    """`encode` for many texts (and pairs, None where a text has none): the tokenizer runs once over all
    of them, on every core, instead of once a text."""
    backend, layout = backend_and_layout(tokenizer)
    for pair in {p is not None for p in text_pairs}:
        if max_length - layout.n_special(pair) < 1:
            raise ConfigError(f"max_length: {max_length} leaves no room for text after special tokens")
    firsts = backend.encode_batch(list(texts), add_special_tokens=False)
    pairs = [p for p in text_pairs if p is not None]
    seconds = iter(backend.encode_batch(pairs, add_special_tokens=False) if pairs else [])
    return [
        _truncate_and_frame(layout, a, next(seconds) if p is not None else None, max_length, strategy, head_tokens)
        for a, p in zip(firsts, text_pairs)
    ]


def _truncate_and_frame(layout: Layout, a, b, max_length: int, strategy: str, head_tokens: int | None) -> dict:
    """One text's encoding `a` (and its pair's `b`, or None) truncated to fit, framed by the special tokens."""
    budget = max_length - layout.n_special(b is not None)
    ids_a, offsets_a = a.ids, a.offsets  # each read of an Encoding's attribute copies the whole list out of Rust
    if b is None:
        keep = keep_indices(len(ids_a), budget, strategy, head_tokens)
        framed = layout.frame([ids_a[i] for i in keep])
        offsets = spread(framed["segments"], [offsets_a[i] for i in keep], special=(0, 0))
        return framed | {"offsets": offsets}
    ids_b, offsets_b = b.ids, b.offsets
    n_a, n_b = pair_lengths(len(ids_a), len(ids_b), budget)
    scale = lambda n: None if head_tokens is None else round(head_tokens * n / budget)  # noqa: E731
    keep_a = keep_indices(len(ids_a), n_a, strategy, scale(n_a))
    keep_b = keep_indices(len(ids_b), n_b, strategy, scale(n_b))
    framed = layout.frame([ids_a[i] for i in keep_a], [ids_b[i] for i in keep_b])
    offsets = spread(framed["segments"], [offsets_a[i] for i in keep_a], [offsets_b[i] for i in keep_b], (0, 0))
    return framed | {"offsets": offsets}

"""jieba words under a tokenizer's tokens: each token takes the word that holds its first character
(中国 -> the same word on 中 and on 国, and on every sub-token of a Latin word), hashed with crc32
into `buckets` ids (1..buckets-1; 0 for special tokens and padding), so any tokenizer works and no
vocabulary file is needed."""

from __future__ import annotations

import zlib
from bisect import bisect_right
from collections.abc import Sequence


def word_spans(text: str) -> list[tuple[int, int]]:
    """jieba's words of `text` (its default dictionary and HMM) as character spans [start, end)."""
    from plmkit.peers import _jieba

    spans, start = [], 0
    for word in _jieba().cut(text):
        spans.append((start, start + len(word)))
        start += len(word)
    return spans


def word_id(word: str, buckets: int) -> int:
    return zlib.crc32(word.encode("utf-8")) % (buckets - 1) + 1


def token_word_ids(
    texts: Sequence[str | None], offsets: Sequence[tuple[int, int]], segments: Sequence[int], buckets: int
) -> list[int]:
    """Per token: the hashed id of the jieba word of texts[segment - 1] that holds the token's first
    character, or 0 for a special token (segment 0) or one with no characters."""
    spans = {s: word_spans(t) for s, t in enumerate(texts, 1) if t is not None}
    starts = {s: [a for a, _ in sp] for s, sp in spans.items()}
    out = []
    for (a, b), s in zip(offsets, segments):
        if s == 0 or b <= a:
            out.append(0)
            continue
        k = bisect_right(starts[s], a) - 1
        start, end = spans[s][k]
        out.append(word_id(texts[s - 1][start:end], buckets))
    return out

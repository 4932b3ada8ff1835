"""Pretraining objectives: corpus packing and, for each objective, its batch builder and loss.

Every batch builder frames a segment (or a pair of them) with the special tokens the tokenizer's
own post-processor adds (`plmkit.data.truncation.layout`: [CLS] A [SEP] B [SEP], <s> A </s></s> B </s>,
A <eos>, ...), as fine-tuning's `encode` does, so pretraining and fine-tuning read the same layout.

MLM (`mlm_collate`, `mlm_loss`); sentence pairs with NSP or SOP (`pair_collate`); SpanBERT's span
masking and span boundary objective (`span_collate`, `SpanBoundaryHead`, `sbo_loss`); ELECTRA's
replaced token detection (`sample_replacements`, `rtd_labels`, `rtd_loss`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from plmkit.data.batching import length_mask, pad
from plmkit.data.truncation import Layout, backend_and_layout, layout, spread
from plmkit.errors import ConfigError
from plmkit.pretrain.masking import (
    IGNORE_INDEX,
    choose_spans,
    choose_tokens,
    choose_whole_words,
    corrupt,
    example_generator,
)
from plmkit.pretrain.pairs import nsp_pair, sop_pair, split_pair


def word_ids_for(text: str, offsets: Sequence[tuple[int, int]]) -> list[int]:
    """The jieba word each token starts in, for whole-word masking."""
    import jieba

    char_word, start = [0] * len(text), 0
    for w, word in enumerate(jieba.lcut(text)):
        char_word[start : start + len(word)] = [w] * len(word)
        start += len(word)
    return [char_word[min(s, len(text) - 1)] if len(text) else 0 for s, _ in offsets]


def pack_budget(tokenizer, max_length: int) -> int:
    """Tokens of text a segment holds: max_length less the special tokens the tokenizer frames a text with."""
    budget = max_length - layout(tokenizer).n_special(pair=False)
    if budget < 1:
        raise ConfigError(f"max_length: {max_length} leaves no room for text after special tokens")
    return budget


# what `iter_packed` hands the tokenizer at once: this many lines, or fewer when they reach PACK_CHARS characters
# (a batch's encodings take about 100 bytes a token: some 25 MB for 2^18 characters of Chinese)
PACK_LINES, PACK_CHARS = 10_000, 1 << 18


def iter_packed(
    lines: Iterable[str], tokenizer, max_length: int, whole_word: bool = False, batch: int | None = None
) -> Iterator[tuple[list[int], list[int]]]:
    """Full-sentence packing, as the lines are read: consecutive lines fill segments of up to max_length
    tokens less the special tokens the tokenizer frames a text with; a line longer than that is cut into
    several segments. Yields each segment's (ids, words) as soon as it is full; `batch` lines (PACK_LINES,
    fewer when they reach PACK_CHARS characters) at a time go through the tokenizer, so memory holds one
    batch and one segment, whatever the corpus's size. Word ids count across the corpus (`word_ids_for`
    numbers a line's jieba words, or each token is a word)."""
    budget = pack_budget(tokenizer, max_length)
    # the backend straight: lines longer than the model's limit are expected here (they are cut below)
    backend = backend_and_layout(tokenizer)[0]
    ids: list[int] = []
    words: list[int] = []
    next_word = 0
    for chunk in _chunks(lines, batch or PACK_LINES, PACK_CHARS):
        for line, enc in zip(chunk, backend.encode_batch(chunk, add_special_tokens=False)):
            line_ids = enc.ids
            if not line_ids:
                continue
            line_words = word_ids_for(line, enc.offsets) if whole_word else list(range(len(line_ids)))
            for start in range(0, len(line_ids), budget):
                piece, piece_words = line_ids[start : start + budget], line_words[start : start + budget]
                if ids and len(ids) + len(piece) > budget:
                    yield ids, words
                    ids, words = [], []
                ids += piece
                words += [w + next_word for w in piece_words]
                next_word += (max(piece_words) + 1) if piece_words else 0
    if ids:
        yield ids, words


def _chunks(lines: Iterable[str], size: int, chars: int) -> Iterator[list[str]]:
    """`lines` in lists of `size`, or fewer where they reach `chars` characters (at least one line a list)."""
    chunk: list[str] = []
    held = 0
    for line in lines:
        chunk.append(line)
        held += len(line)
        if len(chunk) == size or held >= chars:
            yield chunk
            chunk, held = [], 0
    if chunk:
        yield chunk


def pack_corpus(lines: Iterable[str], tokenizer, max_length: int, whole_word: bool = False) -> list[dict[str, Any]]:
    """`iter_packed`'s segments as a list, each {"ids", "words"}: for a corpus that fits in memory
    (pretraining itself reads them from disk: plmkit.pretrain.corpus)."""
    return [{"ids": ids, "words": words} for ids, words in iter_packed(lines, tokenizer, max_length, whole_word)]


def mlm_collate(
    items: list[tuple[int, int, dict[str, Any]]], *, tokenizer, seed: int, rate: float, whole_word: bool, dynamic: bool
) -> dict[str, torch.Tensor]:
    """Frame with the tokenizer's specials ([CLS] seg [SEP], <s> seg </s>, ...), choose and corrupt positions
    (never specials) with a per-(seed, epoch, index) generator, pad."""
    frame = layout(tokenizer).frame
    ids, labels = [], []
    for epoch, index, seg in items:
        gen = example_generator(seed, epoch if dynamic else 0, index)
        framed = frame(seg["ids"])
        x = torch.tensor(framed["input_ids"])  # (T,)
        words = torch.tensor(spread(framed["segments"], seg["words"], special=-1))  # (T,)
        chosen = _choose(words, rate, whole_word, gen)
        x, y = corrupt(x, chosen, tokenizer.mask_token_id, len(tokenizer), gen)
        ids.append(x.tolist())
        labels.append(y.tolist())
    return _padded_batch(ids, labels, tokenizer.pad_token_id)


def _choose(words: torch.Tensor, rate: float, whole_word: bool, gen: torch.Generator) -> torch.Tensor:
    """Token or whole-word choice; words: (T,) with -1 on positions never masked. Returns (T,) bool."""
    return choose_whole_words(words, rate, gen) if whole_word else choose_tokens(words >= 0, rate, gen)


def _padded_batch(
    ids: list[list[int]], labels: list[list[int]], pad_id: int, **extra: list[list[int]]
) -> dict[str, torch.Tensor]:
    """Right-pad a batch: input_ids with pad_id, labels with IGNORE_INDEX, every extra with 0.

    The attention mask comes from the lengths, so a random replacement that happens to be
    the pad id is still attended to."""
    input_ids = pad(ids, pad_id)  # (B, T)
    lengths = torch.tensor([len(x) for x in ids])  # (B,)
    attention_mask = length_mask(lengths, input_ids.shape[1]).long()  # (B, T)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": pad(labels, IGNORE_INDEX)}
    return batch | {name: pad(rows, 0) for name, rows in extra.items()}


def mlm_loss(head: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy at the chosen positions only: the family's MLM head runs on those alone.

    head: (M, H) -> (M, V); hidden: (B, T, H); labels: (B, T), IGNORE_INDEX off the chosen positions."""
    chosen = labels != IGNORE_INDEX  # (B, T)
    return F.cross_entropy(head(hidden[chosen]).float(), labels[chosen])  # (M, V) against (M,)


# ---- sentence pairs: NSP (BERT) and SOP (ALBERT) ----

Token = tuple[int, int]  # (token id, word id)
Pair = tuple[list[Token], list[Token], int]  # A, B, pair label


def _pair_tokens(seg: dict[str, Any], specials: Layout) -> list[Token]:
    """The segment as (id, word) tokens, less as many at its end as a pair has special tokens more than a
    single text (but keeping 2, to cut into A and B): pack_corpus leaves room for a single text's, so
    [CLS] A [SEP] B [SEP] (one more than [CLS] seg [SEP]) or <s> A </s></s> B </s> (two more) stays within
    the same max_length."""
    tokens = list(zip(seg["ids"], seg["words"]))
    return tokens[: max(2, len(tokens) - (specials.n_special(pair=True) - specials.n_special(pair=False)))]


def _random_slice(pool: Sequence[dict[str, Any]], index: int, length: int, gen: torch.Generator) -> list[Token]:
    """`length` consecutive tokens (fewer if the segment is shorter) from a random segment of pool other
    than pool[index]."""
    if len(pool) < 2:
        raise ValueError("NSP needs a pool of at least 2 segments to draw a random B from")
    other = int(torch.randint(len(pool) - 1, (1,), generator=gen))
    if other >= index:
        other += 1  # skip the item's own segment
    tokens = list(zip(pool[other]["ids"], pool[other]["words"]))
    length = min(length, len(tokens))
    start = int(torch.randint(len(tokens) - length + 1, (1,), generator=gen))
    return tokens[start : start + length]


def _sop(a: list[Token], b: list[Token], index: int, pool: Sequence[dict[str, Any]], gen: torch.Generator) -> Pair:
    return sop_pair(a, b, gen)


def _nsp(a: list[Token], b: list[Token], index: int, pool: Sequence[dict[str, Any]], gen: torch.Generator) -> Pair:
    return nsp_pair(a, b, _random_slice(pool, index, len(b), gen), gen)


PAIR_KINDS = {"nsp": _nsp, "sop": _sop}


def _pair_layout(a: list[Token], b: list[Token], specials: Layout) -> tuple[list[int], list[int], list[int]]:
    """A and B framed as the tokenizer frames a pair ([CLS] A [SEP] B [SEP], ...): ids, token types and
    word ids (-1 on the specials; B's words renumbered after A's, so no word spans the two halves)."""
    a_ids, a_words = [t for t, _ in a], [w for _, w in a]
    b_ids, b_words = [t for t, _ in b], [w for _, w in b]
    if b_words:
        shift = (max(a_words) + 1 if a_words else 0) - min(b_words)
        b_words = [w + shift for w in b_words]
    framed = specials.frame(a_ids, b_ids)
    return framed["input_ids"], framed["token_type_ids"], spread(framed["segments"], a_words, b_words, -1)


def pair_collate(
    items: list[tuple[int, int, dict[str, Any]]],
    *,
    tokenizer,
    seed: int,
    rate: float,
    whole_word: bool,
    dynamic: bool,
    kind: str,
    pool: Sequence[dict[str, Any]],
) -> dict[str, torch.Tensor]:
    """Sentence-pair batches for NSP (kind "nsp") or SOP (kind "sop"), with MLM on top.

    Each segment (from pack_corpus with the MLM max_length) loses as many tokens at its end as a pair
    has special tokens more than a single text (`_pair_tokens`: one for [CLS] A [SEP] B [SEP]), is cut
    at a random point into A and B, then SOP may swap them and NSP may replace B by a random slice of
    B's length from another segment of `pool` (items' indices point into pool; the item's own
    segment is excluded). A and B are framed as the tokenizer frames a pair. Positions are chosen
    (tokens or whole words, never specials) and corrupted with the 80/10/10 rule. A segment of a
    single token cannot be cut: it gets the pair's frame around A and an empty B ([CLS] A [SEP] [SEP])
    and pair label IGNORE_INDEX.

    Returns input_ids, token_type_ids, attention_mask, labels (B, T) and pair_labels (B,).
    """
    if kind not in PAIR_KINDS:
        raise ValueError(f"unknown pair objective {kind!r}; known: {', '.join(sorted(PAIR_KINDS))}")
    specials = layout(tokenizer)
    ids, types, labels, pair_labels = [], [], [], []
    for epoch, index, seg in items:
        gen = example_generator(seed, epoch if dynamic else 0, index)
        tokens = _pair_tokens(seg, specials)
        if len(tokens) >= 2:
            a, b, pair_label = PAIR_KINDS[kind](*split_pair(tokens, gen), index, pool, gen)
        else:
            a, b, pair_label = tokens, [], IGNORE_INDEX
        x, token_types, words = _pair_layout(a, b, specials)
        x, y = corrupt(
            torch.tensor(x),
            _choose(torch.tensor(words), rate, whole_word, gen),
            tokenizer.mask_token_id,
            len(tokenizer),
            gen,
        )  # (T,), (T,)
        ids.append(x.tolist())
        labels.append(y.tolist())
        types.append(token_types)
        pair_labels.append(pair_label)
    batch = _padded_batch(ids, labels, tokenizer.pad_token_id, token_type_ids=types)
    return batch | {"pair_labels": torch.tensor(pair_labels)}


# ---- SpanBERT: span masking and the span boundary objective (SBO) ----


def _span_boundaries(chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each chosen position i in a maximal run [s, e] of chosen positions: left s-1, right e+1,
    offset i-s; 0 elsewhere. choose_spans keeps spans apart, so each run is one span.

    chosen: (T,) bool. Returns three (T,) long."""
    edges = F.pad(chosen.long(), (1, 1)).diff()  # (T+1,): +1 where a run starts, -1 just after it ends
    starts = (edges == 1).nonzero().squeeze(-1).tolist()
    ends = ((edges == -1).nonzero().squeeze(-1) - 1).tolist()
    left, right, offset = (torch.zeros(chosen.shape, dtype=torch.long) for _ in range(3))
    for s, e in zip(starts, ends):
        left[s : e + 1] = s - 1
        right[s : e + 1] = e + 1
        offset[s : e + 1] = torch.arange(e - s + 1)
    return left, right, offset


def span_collate(
    items: list[tuple[int, int, dict[str, Any]]],
    *,
    tokenizer,
    seed: int,
    rate: float,
    dynamic: bool,
    p: float = 0.2,
    max_len: int = 10,
) -> dict[str, torch.Tensor]:
    """Like mlm_collate, with SpanBERT's span masking (choose_spans), plus what SBO needs:
    span_left, span_right (the unmasked positions just outside the span, possibly [CLS]/[SEP])
    and span_offset (0-based position inside the span, < max_len), all (B, T) long, 0 off the spans.
    A tokenizer without a special token before (or after) the text leaves its first (last) token
    out of the spans, so every span has a position on either side."""
    frame = layout(tokenizer).frame
    ids, labels, lefts, rights, offsets = [], [], [], [], []
    for epoch, index, seg in items:
        gen = example_generator(seed, epoch if dynamic else 0, index)
        framed = frame(seg["ids"])
        x = torch.tensor(framed["input_ids"])  # (T,)
        candidates = torch.tensor(framed["segments"]) > 0  # (T,)
        candidates[0] = candidates[-1] = False  # a boundary on either side of every span
        chosen = choose_spans(candidates, rate, gen, p, max_len)  # (T,)
        x, y = corrupt(x, chosen, tokenizer.mask_token_id, len(tokenizer), gen)
        left, right, offset = _span_boundaries(chosen)  # (T,) each
        ids.append(x.tolist())
        labels.append(y.tolist())
        lefts.append(left.tolist())
        rights.append(right.tolist())
        offsets.append(offset.tolist())
    return _padded_batch(ids, labels, tokenizer.pad_token_id, span_left=lefts, span_right=rights, span_offset=offsets)


class SpanBoundaryHead(nn.Module):
    """SpanBERT's f: predict a span token from the span's boundary states and its position in the span.

    [x_{s-1}; x_{e+1}; p_offset] -> Linear -> GELU -> LayerNorm -> Linear -> GELU -> LayerNorm.
    The caller projects the output to the vocabulary with the model's MLM decoder."""

    def __init__(self, hidden_size: int, max_span_len: int = 10, position_size: int | None = None):
        super().__init__()
        position_size = position_size or hidden_size
        self.position = nn.Embedding(max_span_len, position_size)
        self.mlp = nn.Sequential(
            nn.Linear(2 * hidden_size + position_size, hidden_size),
            nn.GELU(),
            nn.LayerNorm(hidden_size),
            nn.Linear(hidden_size, hidden_size),
            nn.GELU(),
            nn.LayerNorm(hidden_size),
        )

    def forward(self, left: torch.Tensor, right: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        x = torch.cat([left, right, self.position(offset)], dim=-1)  # (M, 2H + P)
        return self.mlp(x)  # (M, H)


def sbo_loss(
    hidden: torch.Tensor,
    batch: dict[str, torch.Tensor],
    head: SpanBoundaryHead,
    decoder: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Cross-entropy of predicting each masked span token from the span's boundary states alone.

    hidden: (B, T, H) the encoder's last layer; batch from span_collate."""
    labels = batch["labels"]  # (B, T)
    chosen = labels != IGNORE_INDEX  # (B, T)
    rows = chosen.nonzero(as_tuple=True)[0]  # (M,)
    left = hidden[rows, batch["span_left"][chosen]]  # (M, H)
    right = hidden[rows, batch["span_right"][chosen]]  # (M, H)
    logits = decoder(head(left, right, batch["span_offset"][chosen]))  # (M, V)
    return F.cross_entropy(logits.float(), labels[chosen])


# ---- ELECTRA: replaced token detection (RTD) ----


@torch.no_grad()
def sample_replacements(logits: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Sample one token per row from softmax(logits), in float32, without gradient.

    logits: (M, V) the generator's MLM logits at the masked positions; gen on logits' device (or None).
    Returns (M,) long."""
    probs = torch.softmax(logits.detach().float(), dim=-1)  # (M, V)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)  # (M,)


def rtd_labels(original: torch.Tensor, replaced: torch.Tensor) -> torch.Tensor:
    """1.0 where the discriminator's input differs from the original, else 0.0 (a sample that
    reproduces the original token counts as original). (B, T) long each -> (B, T) float."""
    return (replaced != original).float()


def rtd_loss(disc_logits: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits, averaged over the real (attention_mask == 1) tokens.

    disc_logits, labels, attention_mask: (B, T)."""
    real = attention_mask.bool()  # (B, T)
    return F.binary_cross_entropy_with_logits(disc_logits[real].float(), labels[real].float())


# --- the pretraining models that join two parts: ELECTRA's generator and discriminator, SpanBERT's MLM and SBO ---


class ElectraPretrainer(nn.Module):
    """Generator and discriminator with one set of embeddings; the discriminator is what fine-tunes."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, disc_weight: float, seed: int = 0):
        super().__init__()
        self.generator, self.discriminator, self.disc_weight, self.seed = generator, discriminator, disc_weight, seed
        generator.electra.embeddings = discriminator.electra.embeddings  # token, position, type embeddings shared
        generator.generator_lm_head.weight = discriminator.electra.embeddings.word_embeddings.weight
        self._sampler: torch.Generator | None = None

    def sampler(self, device: torch.device) -> torch.Generator:
        """The generator's samples come from their own seeded stream, not the global one."""
        if self._sampler is None or self._sampler.device != device:
            self._sampler = torch.Generator(device=device).manual_seed(self.seed)
        return self._sampler


class SpanBertPretrainer(nn.Module):
    """A masked-LM model and the span-boundary head beside it; the MLM model is what fine-tunes."""

    def __init__(self, mlm: nn.Module, sbo: SpanBoundaryHead, sbo_weight: float):
        super().__init__()
        self.mlm, self.sbo, self.sbo_weight = mlm, sbo, sbo_weight


SBO_FILE = "sbo_head.safetensors"

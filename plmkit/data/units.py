"""Characters to tokens, exactly: a sentence's units (characters, or words) each become their own
tokens, so that every unit keeps its own tag whatever the tokenizer joins (XLM-R's sentencepiece puts
frequent two-character words in one piece), and offsets map back to the original text."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from plmkit.data.tagging import Sentence, spans_to_tags
from plmkit.data.truncation import backend_and_layout
from plmkit.errors import ConfigError


@dataclass
class Encoded:
    """One sentence after tokenisation."""

    sentence: Sentence
    units: list[tuple[int, int]]  # character span of each unit
    tokens: list[list[int]]  # token ids of each unit (empty for units the tokenizer drops, e.g. spaces)
    tags: list[str] | None  # gold tag of each unit
    snapped: int = 0  # gold spans whose edges fell inside a unit and were widened to it


UNIT_TOKENS = ("auto", "word", "piece")


def unit_tokens_for(tokenizer, choice: str = "auto") -> str:
    """How given units (characters) become tokens: `word`, each unit tokenised as a word of its own
    (BERT's per-character input; a sentencepiece tokenizer then puts its word marker before every
    character: ▁ 台 ▁ 湾, 1.9 tokens a character on People's Daily); `piece`, each unit as the
    continuation of the text before it, the word marker only where the text has a space or starts
    (台 湾, one token a character for nearly every CJK character). `auto`: piece for sentencepiece
    (Metaspace) tokenizers, word otherwise."""
    if choice not in UNIT_TOKENS:
        raise ConfigError(f"unit_tokens: unknown {choice!r}; known: {', '.join(UNIT_TOKENS)}")
    sentencepiece = _metaspace(backend_and_layout(tokenizer)[0].pre_tokenizer) is not None
    if choice == "piece" and not sentencepiece:
        raise ConfigError("unit_tokens: piece needs a sentencepiece (Metaspace) tokenizer; this one is not: use word")
    if choice != "auto":
        return choice
    return "piece" if sentencepiece else "word"


def _metaspace(pre_tokenizer) -> str | None:
    """The replacement character of a Metaspace pre-tokenizer (alone or in a Sequence), else None."""
    import json

    if pre_tokenizer is None:
        return None
    spec = json.loads(pre_tokenizer.__getstate__())
    for part in spec.get("pretokenizers", [spec]):
        if part.get("type") == "Metaspace":
            return part.get("replacement", "\u2581")
    return None


def _piece_tokens(backend, marker: str, units: Sequence[str], spaced: Sequence[bool] | None = None) -> list[list[int]]:
    """Each unit's pieces as the continuation of the units before it: normalised, the word `marker`
    added only at the start and after a space (a space unit, or `spaced[k]`: a space before unit k);
    a unit that normalises to nothing or to space has none."""
    out, word_start = [], True
    for k, unit in enumerate(units):
        word_start = word_start or bool(spaced and spaced[k])
        text = backend.normalizer.normalize_str(unit) if backend.normalizer is not None else unit
        if not text.strip():
            out.append([])
            word_start = True
            continue
        text = (marker if word_start else "") + text.replace(" ", marker)
        out.append([t.id for t in backend.model.tokenize(text)])
        word_start = False
    return out


def encode_sentences(sentences: Sequence[Sentence], tokenizer, scheme: str, unit_tokens: str = "auto") -> list[Encoded]:
    """Tokenise each sentence's units; sentences without units get units from the text: the tokenizer's
    words (`word`), or each CJK character, each run of letters and digits, each other non-space
    character (`piece`: a sentencepiece word is a whole run of unspaced Chinese)."""
    backend, _ = backend_and_layout(tokenizer)
    marker = _metaspace(backend.pre_tokenizer) if unit_tokens_for(tokenizer, unit_tokens) == "piece" else None
    pieces = marker is not None
    out: list[Encoded | None] = [None] * len(sentences)
    given = [i for i, s in enumerate(sentences) if s.units is not None]
    words = [[sentences[i].text[a:b] for a, b in sentences[i].units] for i in given]
    if pieces:
        for i, unit_texts in zip(given, words):
            s = sentences[i]
            tags = list(s.tags) if s.tags is not None else None
            out[i] = Encoded(s, list(s.units), _piece_tokens(backend, marker, unit_texts), tags)
    else:
        for i, enc in zip(
            given, backend.encode_batch(words, is_pretokenized=True, add_special_tokens=False) if given else []
        ):
            s = sentences[i]
            tokens: list[list[int]] = [[] for _ in s.units]
            for token_id, w in zip(enc.ids, enc.word_ids):
                if w is not None:
                    tokens[w].append(token_id)
            out[i] = Encoded(s, list(s.units), tokens, list(s.tags) if s.tags is not None else None)
    for i, s in enumerate(sentences):
        if s.units is None:
            if pieces:
                units = [m.span() for m in _RAW_UNIT.finditer(s.text)]
                spaced = [s.text[a - 1 : a] == " " for a, _ in units]
                tokens = _piece_tokens(backend, marker, [s.text[a:b] for a, b in units], spaced)
            else:
                units, tokens = _word_units(backend.encode(s.text, add_special_tokens=False))
            out[i] = _with_span_tags(s, units, tokens, scheme)
    return out  # type: ignore[return-value]


_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_RAW_UNIT = re.compile(rf"[^\W{_CJK}]+|\S")  # a run of letters and digits, or any other non-space character


def _word_units(enc) -> tuple[list[tuple[int, int]], list[list[int]]]:
    """The tokenizer's words, with their character spans, and each word's tokens."""
    units: list[tuple[int, int]] = []
    tokens: list[list[int]] = []
    last = None
    for token_id, (a, b), w in zip(enc.ids, enc.offsets, enc.word_ids):
        if w is None:
            continue
        if w != last:
            units.append((a, b))
            tokens.append([])
            last = w
        units[-1] = (units[-1][0], max(units[-1][1], b))
        tokens[-1].append(token_id)
    return units, tokens


def _with_span_tags(s: Sentence, units: list[tuple[int, int]], tokens: list[list[int]], scheme: str) -> Encoded:
    """Gold character spans become unit tags; a span edge inside a unit widens it to the unit."""
    tags, snapped = None, 0
    if s.spans is not None:
        unit_spans: list[tuple[int, int, str]] = []
        for start, end, kind in s.spans:
            inside = [k for k, (a, b) in enumerate(units) if a < end and b > start]
            if not inside:
                continue
            snapped += units[inside[0]][0] != start or units[inside[-1]][1] != end
            if unit_spans and inside[0] < unit_spans[-1][1]:
                continue  # two spans inside one unit: the unit keeps the first
            unit_spans.append((inside[0], inside[-1] + 1, kind))
        tags = spans_to_tags(len(units), unit_spans, scheme)
    return Encoded(s, units, tokens, tags, snapped)

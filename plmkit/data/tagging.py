"""Tagged sentences for sequence labelling: tag schemes, CoNLL and JSONL readers, spans.

A sentence is text plus *units* (the things that carry one tag each: characters in
Chinese CoNLL data, words in English) with their character offsets, so every
prediction maps back to the text. JSONL rows give entity offsets instead of tags;
their units are the tokenizer's words, found when the sentence is encoded.

Schemes: `bio` (IOB2), `bioes`, and `bmes` for word segmentation. A tag sequence
that breaks its scheme (an `I-` with no opening tag, say) is reported with its
line, never repaired silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from plmkit.data.readers import lines, read_text
from plmkit.errors import DataError

SCHEMES = ("bio", "bioes", "bmes")


@dataclass(frozen=True)
class Sentence:
    text: str
    units: tuple[tuple[int, int], ...] | None  # (start, end) of each unit in text; None: the tokenizer's words
    tags: tuple[str, ...] | None = None  # one per unit, when units are given and labelled
    spans: tuple[tuple[int, int, str], ...] | None = None  # labelled character spans, when units are None
    path: str = ""
    line: int | None = None  # line of the first unit (CoNLL) or of the row (JSONL)
    one_line_per_unit: bool = False  # CoNLL: unit i sits on line `line + i`

    def unit_line(self, i: int) -> int | None:
        return None if self.line is None else self.line + (i if self.one_line_per_unit else 0)


def _split(tag: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', ''); 'S' -> ('S', '')."""
    prefix, _, kind = tag.partition("-")
    return prefix, kind


def detect_scheme(tags: set[str]) -> str:
    prefixes = {_split(t)[0] for t in tags}
    if "O" not in prefixes and prefixes <= {"B", "M", "E", "S"}:
        return "bmes"
    if prefixes & {"E", "S"}:
        return "bioes"
    return "bio"


def check_tag(tag: str, scheme: str) -> str | None:
    """Why `tag` does not belong to `scheme`, or None."""
    prefix, kind = _split(tag)
    allowed = {"bio": "BIO", "bioes": "BIOES", "bmes": "BMES"}[scheme]
    if prefix not in allowed or (prefix == "O" and kind) or (scheme != "bmes" and prefix != "O" and not kind):
        form = (
            "O, B-TYPE, I-TYPE" + (", E-TYPE, S-TYPE" if scheme == "bioes" else "")
            if scheme != "bmes"
            else "B, M, E, S"
        )
        return f"tag {tag!r} is not in the {scheme.upper()} scheme ({form})"
    return None


def may_follow(prev: str | None, tag: str | None, scheme: str) -> bool:
    """May `tag` come right after `prev`? None stands for the sentence's start (prev) or end (tag)."""
    p_prefix, p_kind = _split(prev) if prev is not None else ("^", "")
    t_prefix, t_kind = _split(tag) if tag is not None else ("$", "")
    if scheme == "bio":
        return t_prefix != "I" or (p_prefix in ("B", "I") and p_kind == t_kind)
    inside = {"bioes": ("B", "I"), "bmes": ("B", "M")}[scheme]  # prefixes that leave a unit open
    continues = {"bioes": ("I", "E"), "bmes": ("M", "E")}[scheme]  # prefixes that continue one
    if p_prefix in inside:
        return t_prefix in continues and p_kind == t_kind
    return t_prefix not in continues


def check_sequence(tags: list[str] | tuple[str, ...], scheme: str) -> tuple[int, str] | None:
    """(index, reason) of the first tag that breaks the scheme, or None."""
    for i, tag in enumerate(tags):
        reason = check_tag(tag, scheme)
        if reason:
            return i, reason
        prev = tags[i - 1] if i else None
        if not may_follow(prev, tag, scheme):
            after = f"after {prev!r}" if prev is not None else "at the start of a sentence"
            return i, f"tag {tag!r} {after}: it continues a span that was never opened"
    if tags and not may_follow(tags[-1], None, scheme):
        return len(tags) - 1, f"the sentence ends with {tags[-1]!r}: the span is never closed"
    return None


def tags_to_spans(tags: list[str] | tuple[str, ...], scheme: str) -> list[tuple[int, int, str]]:
    """Unit spans (start, end exclusive, type) read leniently, as a decoder's output must be:
    a span opens at B/S (or at an I/M/E that cannot continue the previous tag) and closes
    where the next tag does not continue it."""
    spans: list[tuple[int, int, str]] = []
    start, kind = None, ""
    for i, tag in enumerate(list(tags) + [None]):
        prefix, t_kind = _split(tag) if tag is not None else ("$", "")
        continues = (
            start is not None and prefix in ("I", "M", "E") and t_kind == kind and may_follow(tags[i - 1], tag, scheme)
        )
        if start is not None and not continues:
            spans.append((start, i, kind))
            start = None
        if tag is None or (prefix == "O" and scheme != "bmes"):
            continue
        if start is None:
            start, kind = i, t_kind
        if prefix in ("E", "S"):
            spans.append((start, i + 1, kind))
            start = None
    return spans


def spans_to_tags(n: int, spans: list[tuple[int, int, str]], scheme: str) -> list[str]:
    """Tags for `n` units from non-overlapping unit spans."""
    if scheme == "bmes":
        tags = ["S"] * n
    else:
        tags = ["O"] * n
    for start, end, kind in spans:
        suffix = f"-{kind}" if kind else ""
        if scheme == "bio":
            tags[start:end] = [f"B{suffix}"] + [f"I{suffix}"] * (end - start - 1)
        elif end - start == 1:
            tags[start] = f"S{suffix}"
        else:
            middle = "I" if scheme == "bioes" else "M"
            tags[start:end] = [f"B{suffix}"] + [f"{middle}{suffix}"] * (end - start - 2) + [f"E{suffix}"]
    return tags


def _join(tokens: list[str]) -> tuple[str, tuple[tuple[int, int], ...]]:
    """Tokens -> text and unit offsets: a space only between two tokens that would otherwise
    run together as one Latin word or number (English words, not Chinese characters)."""
    text, units = "", []
    for tok in tokens:
        if text and text[-1].isascii() and text[-1].isalnum() and tok[0].isascii() and tok[0].isalnum():
            text += " "
        units.append((len(text), len(text) + len(tok)))
        text += tok
    return text, tuple(units)


def read_conll(path: str | Path, encoding: str = "utf-8", scheme: str | None = None) -> list[Sentence]:
    """One unit a line (`TOKEN [... other columns] TAG`, whitespace-separated), a blank line between sentences."""
    path = str(path)
    text = read_text(path, encoding)
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    first, columns = 0, None
    for n, raw in enumerate(lines(text) + [""], 1):
        line = raw.strip()
        if line.startswith("-DOCSTART-"):
            continue
        if not line:
            if tokens:
                sent_text, units = _join(tokens)
                sentences.append(Sentence(sent_text, units, tuple(tags), path=path, line=first, one_line_per_unit=True))
            tokens, tags = [], []
            continue
        cells = line.split()
        if len(cells) < 2:
            raise DataError(f"expected TOKEN and TAG separated by whitespace, got {line!r}", path=path, line=n)
        if columns is None:
            columns = len(cells)
        elif len(cells) != columns:
            raise DataError(f"{len(cells)} columns, but earlier lines have {columns}", path=path, line=n)
        if not tokens:
            first = n
        tokens.append(cells[0])
        tags.append(cells[-1].upper() if cells[-1].lower() in ("b", "m", "e", "s", "o") else cells[-1])
    if not sentences:
        raise DataError("no sentences (expected one token and its tag a line)", path=path)
    check_sentences(sentences, scheme or detect_scheme({t for s in sentences for t in s.tags}))
    return sentences


def check_sentences(sentences: list[Sentence], scheme: str) -> None:
    for s in sentences:
        if s.tags is None:
            continue
        bad = check_sequence(s.tags, scheme)
        if bad is not None:
            i, reason = bad
            raise DataError(reason, path=s.path or None, line=s.unit_line(i), field="tag")


def read_jsonl(path: str | Path, encoding: str = "utf-8", kind: str = "ner") -> list[Sentence]:
    """Rows of {"text": ..., "entities": [{"start", "end", "type"}]} (NER) or {"text", "words": [...]}
    (segmentation)."""
    path = str(path)
    out = []
    for n, raw in enumerate(lines(read_text(path, encoding)), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(f"not valid JSON: {e.msg}", path=path, line=n) from None
        text = row.get("text") if isinstance(row, dict) else None
        if not isinstance(text, str):
            raise DataError("expected an object with a string 'text'", path=path, line=n, field="text")
        if not text.strip():
            raise DataError("empty text", path=path, line=n, field="text")
        spans = _word_spans(text, row, path, n) if kind == "cws" else _entity_spans(text, row, path, n)
        out.append(Sentence(text, None, spans=spans, path=path, line=n))
    if not out:
        raise DataError("no rows", path=path)
    return out


def _entity_spans(text: str, row: dict, path: str, n: int) -> tuple[tuple[int, int, str], ...]:
    entities = row.get("entities")
    if not isinstance(entities, list):
        raise DataError("expected a list 'entities' of {start, end, type}", path=path, line=n, field="entities")
    spans = []
    for k, ent in enumerate(entities):
        field = f"entities[{k}]"
        kind = ent.get("type", ent.get("label")) if isinstance(ent, dict) else None
        start, end = (ent.get("start"), ent.get("end")) if isinstance(ent, dict) else (None, None)
        if not isinstance(start, int) or not isinstance(end, int) or not isinstance(kind, str) or not kind:
            raise DataError('expected {"start": int, "end": int, "type": str}', path=path, line=n, field=field)
        if not 0 <= start < end <= len(text):
            raise DataError(
                f"offsets {start}..{end} are outside the text (length {len(text)})", path=path, line=n, field=field
            )
        if "text" in ent and ent["text"] != text[start:end]:
            raise DataError(
                f"offsets {start}..{end} cover {text[start:end]!r}, but the entity's text is {ent['text']!r}",
                path=path,
                line=n,
                field=field,
            )
        spans.append((start, end, kind))
    spans.sort()
    for a, b in zip(spans, spans[1:]):
        if b[0] < a[1]:
            raise DataError(f"entities {a[0]}..{a[1]} and {b[0]}..{b[1]} overlap", path=path, line=n, field="entities")
    return tuple(spans)


def _word_spans(text: str, row: dict, path: str, n: int) -> tuple[tuple[int, int, str], ...]:
    words = row.get("words")
    if not isinstance(words, list) or not all(isinstance(w, str) and w for w in words):
        raise DataError("expected a list 'words' of non-empty strings", path=path, line=n, field="words")
    spans, pos = [], 0
    for k, word in enumerate(words):
        while pos < len(text) and text[pos].isspace() and not word[0].isspace():
            pos += 1
        if text[pos : pos + len(word)] != word:
            raise DataError(
                f"word {k} ({word!r}) does not match the text at offset {pos}", path=path, line=n, field="words"
            )
        spans.append((pos, pos + len(word), ""))
        pos += len(word)
    if text[pos:].strip():
        raise DataError(f"the words cover the text only up to offset {pos}", path=path, line=n, field="words")
    return tuple(spans)


def read_tagged(path: str | Path, kind: str, encoding: str = "utf-8") -> list[Sentence]:
    """Labelled sentences: JSONL (.jsonl .json) or CoNLL (any other extension)."""
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json"):
        return read_jsonl(path, encoding, kind)
    return read_conll(path, encoding)

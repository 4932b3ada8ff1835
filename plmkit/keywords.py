"""Keywords of a corpus, or of each class in it, with jieba's extractors: TextRank (a PageRank over the
co-occurrence graph of nouns and verbs, jieba.analyse.textrank) or TF-IDF (term frequency in the
texts against jieba's general inverse document frequencies, jieba.analyse.extract_tags). The texts
of a group are read as one document."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from plmkit.data.examples import Example
from plmkit.errors import ConfigError, DataError

METHODS = ("textrank", "tfidf")


def extract(texts: Sequence[str], top: int, method: str) -> list[tuple[str, float]]:
    """The `top` keywords of `texts` read as one document, best first, with their scores."""
    if method not in METHODS:
        raise ConfigError(f"method: unknown {method!r}; known: {', '.join(METHODS)}")
    if top < 1:
        raise ConfigError(f"top: {top} keywords; give at least 1")
    import jieba
    import jieba.analyse

    jieba.setLogLevel(logging.WARNING)  # jieba logs its dictionary loading at DEBUG/INFO
    find = jieba.analyse.textrank if method == "textrank" else jieba.analyse.extract_tags
    return [(word, round(float(score), 6)) for word, score in find("\n".join(texts), topK=top, withWeight=True)]


def keywords(
    examples: Sequence[Example], *, by_label: bool = False, top: int = 20, method: str = "textrank"
) -> dict[str, list[tuple[str, float]]]:
    """Group name -> its keywords: one group `all`, or one per label (in sorted order) with `by_label`."""
    if not examples:
        raise DataError("no texts to find keywords in")
    if not by_label:
        return {"all": extract([ex.text for ex in examples], top, method)}
    groups: dict[str, list[str]] = {}
    for ex in examples:
        if ex.label is None:
            raise DataError("no label, and --by-label groups the texts by label", path=ex.where or None, field="label")
        groups.setdefault(str(ex.label), []).append(ex.text)
    return {label: extract(groups[label], top, method) for label in sorted(groups)}

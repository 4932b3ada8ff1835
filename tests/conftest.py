"""Shared fixtures: a tiny Chinese BERT (hidden 32, 2 layers) built here, and small data files."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

POS, NEG = "好棒赞优美爱", "差坏烂糟恨丑"


def toy_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """A separable task: texts made of 'good' characters or of 'bad' ones."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["good", "bad"])
        chars = POS if label == "good" else NEG
        rows.append(("".join(rng.choice(chars) for _ in range(rng.randint(3, 12))) + "的东西", label))
    return rows


def write_csv(path: Path, rows, header=("text", "label"), delimiter=",") -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_jsonl(path: Path, records) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def save_tiny_bert(path: Path, tokenizer) -> Path:
    """A randomly initialised BERT (hidden 32, 2 layers, seed 0) for `tokenizer`, saved as a model directory."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from plmkit.models.saving import save_model_dir

    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    save_model_dir(path, BertForMaskedLM(config), tokenizer)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised BERT (hidden 32, 2 layers) with a WordPiece vocabulary trained here."""
    from plmkit.pretrain.tokenizer import train_wordpiece

    corpus = ["".join(t for t, _ in toy_rows(50, s)) for s in range(20)]
    corpus += [
        "我爱北京天安门 hello world 2024年，ＡＢＣ１２３。",
        "子丑寅卯辰巳午未申酉戌亥甲乙丙丁戊己庚辛壬癸",
        "一二三四五六七八九十",
    ] * 5
    tokenizer = train_wordpiece(corpus, vocab_size=300)
    return save_tiny_bert(tmp_path_factory.mktemp("tiny") / "tiny-bert", tokenizer)


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("toy")
    rows = toy_rows(240, seed=1)
    return {
        "train": write_csv(d / "train.csv", rows[:160]),
        "dev": write_jsonl(d / "dev.jsonl", [{"text": t, "label": y} for t, y in rows[160:200]]),
        "test": write_csv(d / "test.tsv", rows[200:], delimiter="\t"),
    }


SURNAMES, GIVEN, PLACES, FILLER = "甲乙丙丁", "子丑寅卯", "辰巳午未", "好棒赞优美爱差坏的东西一二三"


def toy_tagged(n: int, seed: int, segments: tuple[int, int] = (2, 5)) -> list[tuple[list[str], list[str]]]:
    """Character-level BIO sentences: persons (a surname, then 1-2 given-name characters) and
    places (a place character, then 京) among filler characters; learnable to F1 1.0."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        chars, tags = [], []
        for _ in range(rng.randint(*segments)):
            for _ in range(rng.randint(1, 3)):
                chars.append(rng.choice(FILLER))
                tags.append("O")
            if rng.random() < 0.5:
                given = [rng.choice(GIVEN) for _ in range(rng.randint(1, 2))]
                chars += [rng.choice(SURNAMES)] + given
                tags += ["B-PER"] + ["I-PER"] * len(given)
            else:
                chars += [rng.choice(PLACES), "京"]
                tags += ["B-LOC", "I-LOC"]
        out.append((chars, tags))
    return out


def write_conll(path: Path, sentences, sep: str = "\t") -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for chars, tags in sentences:
            f.write("".join(f"{c}{sep}{t}\n" for c, t in zip(chars, tags)) + "\n")
    return path


@pytest.fixture(scope="session")
def toy_ner(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("toy-ner")
    sents = toy_tagged(260, seed=3)
    return {
        "train": write_conll(d / "train.conll", sents[:180]),
        "dev": write_conll(d / "dev.conll", sents[180:220]),
        "test": write_conll(d / "test.conll", sents[220:]),
    }


def stop_at(step: int):
    """A training callback that interrupts the run (as Ctrl-C would) after optimiser step `step`."""

    def callback(state) -> None:
        if state.step == step:
            raise KeyboardInterrupt

    return callback


def cut_and_resume(train_spec: str, out: Path, overrides: dict, step: int, **kwargs) -> dict:
    """api.train interrupted after optimiser step `step`, then resumed from its last checkpoint:
    the resumed run's summary."""
    from plmkit import api

    with pytest.raises(KeyboardInterrupt):
        api.train(train_spec, out, overrides=overrides, callbacks=[stop_at(step)], **kwargs)
    return api.train(train_spec, out, overrides=overrides, resume=True, **kwargs)


@pytest.fixture(scope="session")
def tok(tiny_model_dir):
    """The tiny BERT's tokenizer."""
    from plmkit.models.encoders import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="session")
def minilm():
    """The shipped English MiniLM's WordPiece tokenizer."""
    from plmkit.models.encoders import load_tokenizer, resolve_model

    return load_tokenizer(resolve_model("minilm-en"))

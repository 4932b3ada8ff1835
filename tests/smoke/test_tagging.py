"""Tagging on a tiny BERT (hidden 32, 2 layers): each head learns, windows stitch, offsets map back."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import toy_tagged, write_conll, write_jsonl

from plmkit import api
from plmkit.cli import main
from plmkit.data.tagging import Sentence, spans_to_tags, tags_to_spans
from plmkit.data.units import encode_sentences
from plmkit.errors import ConfigError, DataError
from plmkit.models.encoders import load_tokenizer, resolve_model
from plmkit.tasks.tagging import char_spans, make_features, stitch, unit_bigrams, windows

FAST = {"epochs": 8, "lr": 3e-3, "batch_size": 16, "progress": False}


@pytest.fixture(scope="module")
def trained(tiny_model_dir, toy_ner, tmp_path_factory):
    out = {}
    for head in ("softmax", "crf", "bilstm_crf"):
        path = tmp_path_factory.mktemp("tagger") / head
        out[head] = (
            path,
            api.train(
                str(toy_ner["train"]),
                path,
                dev=str(toy_ner["dev"]),
                overrides={"task": "ner", "head": head, "model": str(tiny_model_dir)} | FAST,
            ),
        )
    return out


@pytest.mark.parametrize("head", ["softmax", "crf", "bilstm_crf"])
def test_each_head_learns_toy_ner(trained, toy_ner, head):
    path, result = trained[head]
    assert result["head"] == head
    test = api.evaluate(path, str(toy_ner["test"]), output=path.parent / f"eval-{head}")
    assert test["f1"] == 1.0
    assert set(test["per_type"]) == {"PER", "LOC"} and test["sentences"] == 40
    assert (path.parent / f"eval-{head}" / "per_type.png").read_bytes()[:4] == b"\x89PNG"
    assert "| PER | 1.0000 | 1.0000 | 1.0000 |" in (path.parent / f"eval-{head}" / "report.md").read_text()


def test_predict_gives_entities_with_offsets(trained):
    text = "好甲子寅的午京一二乙丑"
    (row,) = api.predict(trained["crf"][0], text=text)
    assert row["entities"] == [
        {"text": "甲子寅", "type": "PER", "start": 1, "end": 4},
        {"text": "午京", "type": "LOC", "start": 5, "end": 7},
        {"text": "乙丑", "type": "PER", "start": 9, "end": 11},
    ]


def test_cli_evaluate_json_and_predict_file(trained, toy_ner, tmp_path, capsys):
    path = str(trained["crf"][0])
    assert main(["evaluate", "--model", path, "--data", str(toy_ner["test"]), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["f1"] == 1.0 and {"precision", "recall", "per_type"} <= set(result)
    src = tmp_path / "in.txt"
    src.write_text(
        "好乙丑的辰京\n美的东西\n", encoding="utf-8"
    )  # as the toy data has them: filler first, known characters
    out = tmp_path / "out.jsonl"
    assert main(["predict", "--model", path, "--input", str(src), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == ["好乙丑的辰京", "美的东西"]
    assert [e["type"] for e in rows[0]["entities"]] == ["PER", "LOC"] and rows[1]["entities"] == []


def test_softmax_tagger_opens_as_hugging_face_token_classifier(trained, tiny_model_dir):
    """The saved names are Hugging Face's, so AutoModelForTokenClassification gives the same scores."""
    from transformers import AutoModelForTokenClassification

    from plmkit.train.run import load

    path = trained["softmax"][0]
    loaded = load(path)
    tagger, tokenizer, meta = loaded.model, loaded.tokenizer, loaded.meta
    hf = AutoModelForTokenClassification.from_pretrained(path).eval()
    ids = torch.tensor([tokenizer("甲子在辰京")["input_ids"]])  # (1, T)
    mask = torch.ones_like(ids)
    pos = torch.arange(1, ids.shape[1] - 1)[None]  # (1, U): every token but [CLS] and [SEP]
    with torch.no_grad():
        ours = tagger(ids, mask, pos, torch.ones_like(pos, dtype=torch.bool))  # (1, U, K)
        theirs = hf(input_ids=ids, attention_mask=mask).logits[:, 1:-1]  # (1, U, K)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert hf.config.id2label == dict(enumerate(meta["labels"]))
    assert hf.config.architectures == ["BertForTokenClassification"]


@pytest.mark.slow
def test_long_sentences_are_windowed_and_stitched(tiny_model_dir, tmp_path):
    """Sentences of up to ~45 characters with max_length 16: every unit gets a tag, F1 still 1.0."""
    sents = toy_tagged(200, seed=5, segments=(6, 9))
    assert max(len(c) for c, _ in sents) > 40
    train = write_conll(tmp_path / "train.conll", sents[:150])
    dev = write_conll(tmp_path / "dev.conll", sents[150:])
    out = tmp_path / "m"
    result = api.train(
        str(train),
        out,
        dev=str(dev),
        overrides={"task": "ner", "model": str(tiny_model_dir), "max_length": 16, "window_overlap": 4} | FAST,
    )
    assert result["windows"] > 3 * 150
    assert api.evaluate(out, str(dev))["f1"] == 1.0
    long_text = "".join(sents[150][0]) * 3
    (row,) = api.predict(out, text=long_text)
    gold = [(a, b) for a, b, _ in tags_to_spans(sents[150][1] * 3, "bio")]
    assert [(e["start"], e["end"]) for e in row["entities"]] == gold


def test_windows_cover_every_unit_and_stitch_takes_the_central_copy():
    lengths = [1, 2, 1, 1, 3, 1, 1, 1, 2, 1]
    spans = windows(lengths, budget=5, overlap=3)
    assert spans[0][0] == 0 and spans[-1][1] == len(lengths)
    assert all(b[0] < a[1] and b[1] > a[1] for a, b in zip(spans, spans[1:]))  # overlapping, always advancing
    assert all(sum(lengths[a:b]) <= 5 for a, b in spans)
    assert windows([9, 1], budget=4, overlap=2) == [(0, 1), (1, 2)]  # a unit longer than the budget stands alone

    from plmkit.data.units import Encoded

    e = Encoded(
        Sentence("abcdefgh", tuple((i, i + 1) for i in range(8))), [(i, i + 1) for i in range(8)], [[1]] * 8, None
    )
    feats = make_features([e], [0], [0], max_length=6, overlap=2, tag_index=None)
    assert [f["window"] for f in feats] == [(0, 4), (2, 6), (4, 8)]
    # window k predicts tag k everywhere: each unit must come from the window where it is furthest from a cut
    tags = stitch([e], feats, [[k] * len(f["unit_ids"]) for k, f in enumerate(feats)], ["w0", "w1", "w2"], "O")
    assert tags == [["w0", "w0", "w0", "w1", "w1", "w2", "w2", "w2"]]


@pytest.mark.parametrize("model", ["tiny", "minilm-en"])
def test_offsets_round_trip_on_mixed_text(tiny_model_dir, model):
    """Latin words, digits and full-width punctuation mixed into Chinese: spans -> unit tags -> the same spans."""
    tokenizer = load_tokenizer(resolve_model(str(tiny_model_dir) if model == "tiny" else model))
    text = "我在ABC公司用iPhone15拍了２０２４年的照片，ＯＫ！ New York市。"
    gold = [(2, 7, "ORG"), (8, 16, "PROD"), (18, 23, "DATE"), (31, 39, "LOC")]
    assert [text[a:b] for a, b, _ in gold] == ["ABC公司", "iPhone15", "２０２４年", "New York"]
    (e,) = encode_sentences([Sentence(text, None, spans=tuple(gold))], tokenizer, "bio")
    assert e.snapped == 0
    assert char_spans(e, e.tags, "bio") == gold
    assert all(text[a:b].strip() == text[a:b] and b > a for a, b in e.units)


def toy_segmentation(tmp_path):
    """Train and dev CoNLL files of the toy sentences in BMES: words are the entities and each filler character."""
    sents = []
    for chars, tags in toy_tagged(200, seed=7):
        spans = [(a, b, "") for a, b, _ in tags_to_spans(tags, "bio")]
        spans += [(i, i + 1, "") for i, t in enumerate(tags) if t == "O"]
        sents.append((chars, spans_to_tags(len(chars), sorted(spans), "bmes")))
    train, dev = write_conll(tmp_path / "t.conll", sents[:160]), write_conll(tmp_path / "d.conll", sents[160:])
    return train, dev


def test_segmentation_learns_and_predicts_words(tiny_model_dir, tmp_path):
    """Word segmentation (BMES) of the toy sentences: words are the entities and each filler character."""
    train, dev = toy_segmentation(tmp_path)
    out = tmp_path / "cws"
    api.train(str(train), out, dev=str(dev), overrides={"task": "cws", "model": str(tiny_model_dir)} | FAST)
    assert api.evaluate(out, str(dev))["f1"] == 1.0
    (row,) = api.predict(out, text="好甲子寅的午京")
    assert row["words"] == ["好", "甲子寅", "的", "午京"]


def test_unit_bigrams_are_stable_hashes_shared_by_neighbours(tiny_model_dir):
    tokenizer = load_tokenizer(resolve_model(str(tiny_model_dir)))
    sents = [Sentence("甲乙丙", ((0, 1), (1, 2), (2, 3))), Sentence("丁甲乙", ((0, 1), (1, 2), (2, 3)))]
    first, second = (unit_bigrams(e, 1000) for e in encode_sentences(sents, tokenizer, "bmes"))
    assert all(1 <= i < 1000 for pair in first + second for i in pair)
    assert [left for left, _ in first[1:]] == [right for _, right in first[:-1]]  # unit k's left bigram is k-1's right
    assert first[0][1] == second[1][1]  # 甲乙 hashes alike in both sentences
    assert first[0][0] != second[1][0]  # <s>甲 is not 丁甲
    assert first == unit_bigrams(encode_sentences(sents[:1], tokenizer, "bmes")[0], 1000)  # same on every call


def test_segmentation_with_bigram_embeddings_saves_and_reloads(tiny_model_dir, tmp_path):
    """bigram_buckets joins each character's two hashed bigrams to its vector; the model saves them and
    predicts the same after reloading."""
    from safetensors import safe_open

    train, dev = toy_segmentation(tmp_path)
    out = tmp_path / "cws"
    overrides = {"task": "cws", "model": str(tiny_model_dir), "bigram_buckets": 512, "bigram_dim": 8} | FAST
    api.train(str(train), out, dev=str(dev), overrides=overrides)
    assert json.loads((out / "plmkit.json").read_text())["bigram_buckets"] == 512
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.get_slice("bigrams.weight").get_shape() == [512, 8]
    assert api.evaluate(out, str(dev))["f1"] == 1.0
    (row,) = api.predict(out, text="好甲子寅的午京")
    assert row["words"] == ["好", "甲子寅", "的", "午京"]
    with pytest.raises(ConfigError, match="bigram_buckets"):
        api.train(str(train), tmp_path / "bad", overrides=overrides | {"bigram_buckets": 1})


def test_jsonl_entities_train_and_predict(tiny_model_dir, tmp_path):
    rows = []
    for chars, tags in toy_tagged(160, seed=9):
        text = "".join(chars)
        rows.append(
            {"text": text, "entities": [{"start": a, "end": b, "type": k} for a, b, k in tags_to_spans(tags, "bio")]}
        )
    train, dev = write_jsonl(tmp_path / "t.jsonl", rows[:130]), write_jsonl(tmp_path / "d.jsonl", rows[130:])
    out = tmp_path / "m"
    api.train(str(train), out, dev=str(dev), overrides={"task": "ner", "model": str(tiny_model_dir)} | FAST)
    assert api.evaluate(out, str(dev))["f1"] == 1.0
    for row in api.predict(out, input=str(dev)):
        assert all(row["text"][e["start"] : e["end"]] == e["text"] for e in row["entities"])


def test_tagging_input_errors(tiny_model_dir, toy_ner, toy_data, tmp_path):
    model = {"model": str(tiny_model_dir)} | FAST | {"epochs": 1}
    dev = tmp_path / "dev.conll"
    dev.write_text("甲 B-PER\n子 I-PER\n\n辰 B-ORG\n京 I-ORG\n", encoding="utf-8")
    with pytest.raises(DataError, match="tag 'B-ORG' was not seen in training") as e:
        api.train(str(toy_ner["train"]), tmp_path / "a", dev=str(dev), overrides={"task": "ner"} | model)
    assert e.value.line == 4 and e.value.path == str(dev)
    with pytest.raises(DataError, match="takes BMES tags"):
        api.train(str(toy_ner["train"]), tmp_path / "b", overrides={"task": "cws"} | model)
    with pytest.raises(DataError, match="takes BIO or BIOES tags"):
        api.train("builtin:peoples-daily-cws", tmp_path / "c", overrides={"task": "ner"} | model)
    with pytest.raises(
        ConfigError,
        match="head: 'cnn' is not one of: cls, pool, textcnn, rnn_cnn, softmax, crf, bilstm_crf, mlp, bilstm, esim",
    ):
        api.train(str(toy_ner["train"]), tmp_path / "d", overrides={"task": "ner", "head": "cnn"} | model)
    with pytest.raises(ConfigError, match="head: unknown 'crf' for task 'classification'; known: cls, pool"):
        api.train(str(toy_data["train"]), tmp_path / "e", overrides={"task": "classification", "head": "crf"} | model)
    assert not (tmp_path / "a").exists() and not (tmp_path / "d").exists()

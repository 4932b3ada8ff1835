"""The pooled classification head (head=pool) on a tiny BERT (hidden 32, 2 layers)."""

from __future__ import annotations

import pytest
import torch

from plmkit import api
from plmkit.models.pooled import PooledForSequenceClassification
from plmkit.models.pooling import pool

FAST = {"epochs": 4, "lr": 3e-3, "batch_size": 16, "progress": False, "mixed_precision": "no"}


def test_pooling_reads_real_positions_only():
    x = torch.randn(2, 5, 3)  # (B, T, H)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    changed = x.clone()
    changed[0, 3:] = 1e4  # padding positions: anything
    for how in ("mean", "max", "mean_max"):
        torch.testing.assert_close(pool(x, mask, how), pool(changed, mask, how), rtol=0, atol=0)
    torch.testing.assert_close(pool(x, mask, "mean")[0], x[0, :3].mean(0))
    torch.testing.assert_close(pool(x, mask, "max")[0], x[0, :3].max(0).values)
    assert pool(x, mask, "mean_max").shape == (2, 6)


@pytest.fixture(scope="module")
def pooled(tiny_model_dir, toy_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("pooled") / "model"
    result = api.train(
        str(toy_data["train"]),
        out,
        dev=str(toy_data["dev"]),
        overrides={"model": str(tiny_model_dir), "head": "pool", "pooling": "mean_max"} | FAST,
    )
    return out, result


def test_pool_head_learns_and_padding_changes_nothing(pooled, toy_data):
    out, result = pooled
    assert result["dev_metrics"]["dev_accuracy"] >= 0.9
    assert api.evaluate(out, str(toy_data["test"]))["accuracy"] >= 0.9
    from plmkit.train.run import load

    loaded = load(out)
    model, tokenizer = loaded.model, loaded.tokenizer
    assert isinstance(model, PooledForSequenceClassification) and model.config.pooling == "mean_max"
    enc = tokenizer(["好棒的东西"], return_tensors="pt")
    padded = {k: torch.cat([v, torch.full((1, 4), 7 if k == "input_ids" else 0)], 1) for k, v in enc.items()}
    with torch.no_grad():
        torch.testing.assert_close(model(**enc).logits, model(**padded).logits, rtol=0, atol=1e-5)


def test_pool_head_opens_in_a_pipeline_with_the_same_scores(pooled):
    from transformers import pipeline

    out, _ = pooled
    texts = ["好棒赞的东西", "差坏烂的东西"]
    rows = api.predict(out, input=None, text=texts[0]) + api.predict(out, text=texts[1])
    clf = pipeline("text-classification", model=str(out), tokenizer=str(out), top_k=None, device="cpu")
    for row, scores in zip(rows, clf(texts)):
        assert {s["label"]: round(s["score"], 4) for s in scores} == {
            k: round(v, 4) for k, v in row["probabilities"].items()
        }


def test_bad_pooling_is_named(tiny_model_dir, toy_data, tmp_path):
    from plmkit.errors import ConfigError

    with pytest.raises(ConfigError, match="pooling: 'sum' is not one of: mean, max, mean_max"):
        api.train(
            str(toy_data["train"]),
            tmp_path / "x",
            overrides={"model": str(tiny_model_dir), "head": "pool", "pooling": "sum"} | FAST,
        )


# ---- textcnn and rnn_cnn: heads on the token states ----


@pytest.mark.parametrize("head", ["textcnn", "rnn_cnn"])
def test_text_heads_read_real_tokens_only(head):
    from plmkit.models.text_heads import text_head

    torch.manual_seed(0)
    module = text_head(head, 8, 3, 0.0).eval()
    x = torch.randn(2, 6, 8)  # (B, T, D)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6]).bool()
    changed = x.clone()
    changed[0, 4:] = 1e3  # padding: anything
    with torch.no_grad():
        torch.testing.assert_close(module(x, mask), module(changed, mask), rtol=0, atol=0)
        alone = module(x[:1, :4], mask[:1, :4])  # the same text with no padding at all
        torch.testing.assert_close(module(x, mask)[:1], alone, rtol=1e-5, atol=1e-6)
    assert module(x, mask).shape == (2, 3)


@pytest.mark.parametrize("head", ["textcnn", "rnn_cnn"])
def test_text_heads_learn_save_and_reload(head, tiny_model_dir, toy_data, tmp_path):
    out = tmp_path / head
    overrides = {"model": str(tiny_model_dir), "head": head} | FAST | {"epochs": 6}
    result = api.train(str(toy_data["train"]), out, dev=str(toy_data["dev"]), overrides=overrides)
    assert result["dev_metrics"]["dev_accuracy"] >= 0.9
    assert api.evaluate(out, str(toy_data["dev"]))["accuracy"] == pytest.approx(result["dev_metrics"]["dev_accuracy"])
    from plmkit.train.run import load

    model = load(out).model
    assert isinstance(model, PooledForSequenceClassification) and model.config.head == head
    conv, width = (
        ("classifier.conv.", 32) if head == "textcnn" else ("classifier.cnn.conv.", 2 * 128)
    )  # after the BiLSTM
    assert sum(p.numel() for n, p in model.named_parameters() if n.startswith(conv)) == width * 256 * 3 + 256


@pytest.mark.parametrize("fusion", ["add", "concat"])
def test_word_fusion_learns_saves_and_predicts_the_same(fusion, tiny_model_dir, toy_data, tmp_path):
    out = tmp_path / fusion
    overrides = {"model": str(tiny_model_dir), "head": "pool", "word_fusion": fusion, "word_buckets": 512}
    result = api.train(str(toy_data["train"]), out, dev=str(toy_data["dev"]), overrides=overrides | FAST)
    assert result["dev_metrics"]["dev_accuracy"] >= 0.9
    assert api.evaluate(out, str(toy_data["dev"]))["accuracy"] == pytest.approx(result["dev_metrics"]["dev_accuracy"])
    from plmkit.train.run import load

    model = load(out).model
    assert model.config.word_fusion == fusion and model.words.weight.shape == (512, 64)
    assert model.words.weight[1:].abs().sum() > 0 and model.words.weight[0].abs().sum() == 0  # 0: no word
    width = model.classifier.in_features
    assert width == (32 + 64 if fusion == "concat" else 32)


def test_word_fusion_needs_a_head_that_reads_every_token(tiny_model_dir, toy_data, tmp_path):
    from plmkit.errors import ConfigError

    with pytest.raises(ConfigError, match="word_fusion: needs head pool, textcnn or rnn_cnn"):
        api.train(str(toy_data["train"]), tmp_path / "x",
                  overrides={"model": str(tiny_model_dir), "word_fusion": "add"} | FAST)  # fmt: skip


def test_keywords_are_fitted_on_training_data_and_read_as_a_second_segment(tiny_model_dir, toy_data, tmp_path):
    from plmkit.data.readers import read_examples
    from plmkit.tasks.classification import class_keywords, keyword_segment
    from plmkit.train.run import load, predictions

    out = tmp_path / "kw"
    overrides = {"model": str(tiny_model_dir), "keywords": "tfidf", "keywords_top": 6} | FAST
    result = api.train(str(toy_data["train"]), out, dev=str(toy_data["dev"]), overrides=overrides)
    assert result["dev_metrics"]["dev_accuracy"] >= 0.9
    loaded = load(out)
    train = read_examples(str(toy_data["train"]))
    assert loaded.labels.keywords == class_keywords(train, "tfidf", 6)  # the training split's, kept in plmkit.json
    good, bad = (set(loaded.labels.keywords[k]) for k in ("good", "bad"))
    assert good and bad and not good & bad and "的" not in good | bad  # shared words are dropped
    dev = read_examples(str(toy_data["dev"]))
    data, _ = predictions(loaded, dev)
    text = dev[0].text
    assert keyword_segment(text, loaded.labels.keywords).startswith("bad:")
    segment = [t for t, s in zip(data.items[0]["input_ids"], data.items[0]["segments"]) if s == 2]
    expected = keyword_segment(text, loaded.labels.keywords)
    assert segment == loaded.tokenizer(expected, add_special_tokens=False)["input_ids"]
    assert api.evaluate(out, str(toy_data["dev"]))["accuracy"] == pytest.approx(result["dev_metrics"]["dev_accuracy"])


def test_keyword_segment_lists_each_class_in_order():
    keywords = {"neg": ["失望", "退货"], "pos": ["喜欢", "不错"]}
    assert keyword_segment_of("很失望，要退货", keywords) == "neg: 失望 退货; pos:"
    assert keyword_segment_of("不错，喜欢", keywords) == "neg:; pos: 喜欢 不错"


def keyword_segment_of(text, keywords):
    from plmkit.tasks.classification import keyword_segment

    return keyword_segment(text, keywords)


def test_keywords_are_for_single_texts(tiny_model_dir, toy_data, tmp_path):
    from plmkit.errors import ConfigError

    with pytest.raises(ConfigError, match="keywords: task pair does not read it"):
        api.train(str(toy_data["train"]), tmp_path / "x",
                  overrides={"task": "pair", "model": str(tiny_model_dir), "keywords": "tfidf"} | FAST)  # fmt: skip

"""The shipped data sets: fixed splits by MD5, nothing of dev or test in pretraining."""

from __future__ import annotations

import hashlib

from plmkit.data.builtin import load_builtin, pretraining_corpus, split_of


def test_split_rule_is_md5_mod_10():
    for text in ["早餐不好", "房间很大", "hello"]:
        bucket = int(hashlib.md5(text.encode()).hexdigest(), 16) % 10
        assert split_of(text) == ("train" if bucket < 8 else "dev" if bucket == 8 else "test")


def test_reviews_are_deduplicated_and_disjoint():
    splits = {s: load_builtin(f"builtin:reviews:{s}") for s in ("train", "dev", "test")}
    assert load_builtin("builtin:reviews") == splits["train"]
    texts = {s: [ex.text for ex in exs] for s, exs in splits.items()}
    for s, t in texts.items():
        assert len(t) == len(set(t)), s
        assert all(split_of(x) == s for x in t)
    assert not set(texts["train"]) & set(texts["dev"]) and not set(texts["dev"]) & set(texts["test"])
    assert {ex.label for ex in splits["train"]} == {"negative", "positive"}
    # texts that carry both labels are dropped, so no text appears twice with different labels
    assert len({ex.text for exs in splits.values() for ex in exs}) == sum(len(t) for t in texts.values())
    assert (len(texts["train"]), len(texts["dev"]), len(texts["test"])) == (13942, 1734, 1687)


def test_pretraining_corpus_holds_training_splits_only():
    from plmkit.pretrain.run import read_corpus

    corpus = pretraining_corpus()
    assert read_corpus(["builtin:default"]) == corpus
    assert read_corpus(["builtin:peoples-daily", "builtin:reviews"]) == corpus
    assert len(corpus) > 20000
    assert all(split_of(line) == "train" for line in corpus)
    held_out = {ex.text for s in ("dev", "test") for ex in load_builtin(f"builtin:reviews:{s}")}
    assert not held_out & set(corpus)

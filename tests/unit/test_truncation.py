"""Truncation: head, tail, head+tail; pairs longest-first; special tokens from the tokenizer itself."""

from __future__ import annotations

import pytest

from plmkit.data.truncation import STRATEGIES, encode, head_tokens_for, keep_indices, layout, pair_lengths, spread
from plmkit.errors import ConfigError

# 30 distinct characters, each a single token in the tiny model's vocabulary (see conftest's corpus).
TEXT = "子丑寅卯辰巳午未申酉戌亥甲乙丙丁戊己庚辛壬癸一二三四五六七八"
assert len(TEXT) == 30 and len(set(TEXT)) == 30


def _chars(tok, enc, strip_specials=True) -> str:
    tokens = tok.convert_ids_to_tokens(enc["input_ids"])
    if strip_specials:
        assert tokens[0] == tok.cls_token and tokens[-1] == tok.sep_token
        tokens = tokens[1:-1]
    return "".join(tokens)


def _text_offsets(enc):
    return enc["offsets"][1:-1]


def test_every_character_is_one_token(tok):
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    assert len(ids) == 30
    assert tok.unk_token_id not in ids
    assert "".join(tok.convert_ids_to_tokens(ids)) == TEXT


def test_head(tok):
    enc = encode(tok, TEXT, None, 12, "head")
    assert len(enc["input_ids"]) == 12
    assert _chars(tok, enc) == TEXT[:10]
    assert _text_offsets(enc) == [(i, i + 1) for i in range(10)]
    assert enc["offsets"][0] == (0, 0) and enc["offsets"][-1] == (0, 0)
    assert enc["token_type_ids"] == [0] * 12


def test_head_matches_transformers_truncation(tok):
    expected = tok(TEXT, truncation=True, max_length=12)["input_ids"]
    assert encode(tok, TEXT, None, 12, "head")["input_ids"] == expected


def test_tail(tok):
    enc = encode(tok, TEXT, None, 12, "tail")
    assert len(enc["input_ids"]) == 12
    assert _chars(tok, enc) == TEXT[-10:]
    assert _text_offsets(enc) == [(i, i + 1) for i in range(20, 30)]


def test_head_tail_explicit_head_tokens(tok):
    enc = encode(tok, TEXT, None, 12, "head_tail", head_tokens=3)
    assert len(enc["input_ids"]) == 12
    assert _chars(tok, enc) == TEXT[:3] + TEXT[-7:]
    assert _text_offsets(enc) == [(0, 1), (1, 2), (2, 3)] + [(i, i + 1) for i in range(23, 30)]
    # the offsets point at the kept characters
    assert "".join(TEXT[a:b] for a, b in _text_offsets(enc)) == _chars(tok, enc)


def test_head_tail_default_share(tok):
    budget = 28
    assert head_tokens_for(budget, None) == round(budget * 128 / 510) == 7
    enc = encode(tok, TEXT, None, budget + 2, "head_tail")
    assert len(enc["input_ids"]) == 30
    assert _chars(tok, enc) == TEXT[:7] + TEXT[-21:]
    assert _text_offsets(enc) == [(i, i + 1) for i in range(7)] + [(i, i + 1) for i in range(9, 30)]


def test_head_tail_extremes(tok):
    all_head = encode(tok, TEXT, None, 12, "head_tail", head_tokens=50)  # clamped to the budget
    assert all_head["input_ids"] == encode(tok, TEXT, None, 12, "head")["input_ids"]
    no_head = encode(tok, TEXT, None, 12, "head_tail", head_tokens=0)
    assert no_head["input_ids"] == encode(tok, TEXT, None, 12, "tail")["input_ids"]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("max_length", [32, 64])
def test_text_within_budget_unchanged(tok, strategy, max_length):
    enc = encode(tok, TEXT, None, max_length, strategy)
    assert len(enc["input_ids"]) == 32  # 30 characters + [CLS] + [SEP]; never padded
    assert _chars(tok, enc) == TEXT
    assert _text_offsets(enc) == [(i, i + 1) for i in range(30)]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_short_text_unchanged(tok, strategy):
    enc = encode(tok, TEXT[:5], None, 128, strategy)
    assert _chars(tok, enc) == TEXT[:5] and len(enc["input_ids"]) == 7


def test_head_tokens_for():
    assert head_tokens_for(510, None) == 128
    assert head_tokens_for(126, None) == 32
    assert head_tokens_for(10, None) == 3
    assert head_tokens_for(100, 40) == 40
    assert head_tokens_for(100, 500) == 100
    assert head_tokens_for(100, 0) == 0
    with pytest.raises(ConfigError, match="head_tokens"):
        head_tokens_for(100, -1)


def test_keep_indices():
    assert keep_indices(10, 4, "head") == [0, 1, 2, 3]
    assert keep_indices(10, 4, "tail") == [6, 7, 8, 9]
    assert keep_indices(10, 4, "head_tail", 1) == [0, 7, 8, 9]
    assert keep_indices(10, 4, "head_tail", 3) == [0, 1, 2, 9]
    for strategy in STRATEGIES:
        assert keep_indices(3, 4, strategy) == [0, 1, 2]
        assert keep_indices(4, 4, strategy) == [0, 1, 2, 3]
        assert len(keep_indices(1000, 37, strategy)) == 37
        kept = keep_indices(1000, 37, strategy, 5)
        assert kept == sorted(set(kept)) and all(0 <= i < 1000 for i in kept)


@pytest.mark.parametrize("n", [3, 100])
def test_unknown_strategy(tok, n):
    with pytest.raises(ConfigError) as info:
        keep_indices(n, 10, "middle")
    assert "middle" in str(info.value) and "head_tail" in str(info.value)
    with pytest.raises(ConfigError):
        encode(tok, TEXT, None, 12, "middle")


def test_max_length_leaves_no_room(tok):
    with pytest.raises(ConfigError, match="max_length"):
        encode(tok, TEXT, None, 2, "head")
    with pytest.raises(ConfigError, match="max_length"):
        encode(tok, TEXT, TEXT, 3, "head")
    assert len(encode(tok, TEXT, None, 3, "head")["input_ids"]) == 3


def test_pair_lengths():
    assert pair_lengths(6, 5, 9) == (4, 5)
    assert pair_lengths(10, 3, 8) == (5, 3)
    assert pair_lengths(3, 10, 8) == (3, 5)
    assert pair_lengths(3, 4, 10) == (3, 4)
    assert pair_lengths(5, 5, 7) == (3, 4)  # a tie drops from the first
    assert pair_lengths(0, 9, 4) == (0, 4)
    for a in range(12):
        for b in range(12):
            n_a, n_b = pair_lengths(a, b, 9)
            assert n_a + n_b == min(a + b, 9) and n_a <= a and n_b <= b


def test_pair_longest_first(tok):
    a, b = TEXT[:20], TEXT[20:]
    enc = encode(tok, a, b, 16, "head")
    ids = enc["input_ids"]
    assert len(ids) == 16
    # budget 13: pair_lengths(20, 10, 13) == (6, 7)
    assert pair_lengths(20, 10, 13) == (6, 7)
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens == [tok.cls_token, *a[:6], tok.sep_token, *b[:7], tok.sep_token]
    assert enc["token_type_ids"] == [0] * 8 + [1] * 8
    assert enc["offsets"] == [(0, 0)] + [(i, i + 1) for i in range(6)] + [(0, 0)] + [(i, i + 1) for i in range(7)] + [
        (0, 0)
    ]
    assert enc["segments"] == [0] + [1] * 6 + [0] + [2] * 7 + [0]  # which text each token is from (ESIM reads it)
    single = encode(tok, a, None, 8, "tail")
    assert single["segments"] == [0] + [1] * 6 + [0]


def test_pair_tail(tok):
    a, b = TEXT[:12], TEXT[12:17]
    enc = encode(tok, a, b, 12, "tail")  # budget 9 -> (4, 5)
    tokens = tok.convert_ids_to_tokens(enc["input_ids"])
    assert tokens == [tok.cls_token, *a[-4:], tok.sep_token, *b, tok.sep_token]
    assert enc["token_type_ids"] == [0] * 6 + [1] * 6


def test_pair_fits_unchanged(tok):
    enc = encode(tok, TEXT[:4], TEXT[4:7], 64, "head")
    tokens = tok.convert_ids_to_tokens(enc["input_ids"])
    assert tokens == [tok.cls_token, *TEXT[:4], tok.sep_token, *TEXT[4:7], tok.sep_token]
    assert enc["token_type_ids"] == [0] * 6 + [1] * 4


def test_pair_matches_transformers_when_it_fits(tok):
    expected = tok(TEXT[:5], TEXT[5:9])
    enc = encode(tok, TEXT[:5], TEXT[5:9], 64, "head")
    assert enc["input_ids"] == expected["input_ids"]
    assert enc["token_type_ids"] == expected["token_type_ids"]


@pytest.mark.parametrize("max_length", [8, 13, 20, 33])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_pair_total_length(tok, strategy, max_length):
    enc = encode(tok, TEXT, TEXT[::-1], max_length, strategy)
    assert len(enc["input_ids"]) == len(enc["token_type_ids"]) == len(enc["offsets"]) == max_length
    first_sep = enc["input_ids"].index(tok.sep_token_id)
    assert enc["token_type_ids"] == [0] * (first_sep + 1) + [1] * (max_length - first_sep - 1)


def test_minilm_is_not_padded(minilm):
    enc = encode(minilm, "hello big world", None, 128, "head")
    assert len(enc["input_ids"]) == 5
    assert minilm.pad_token_id not in enc["input_ids"]
    assert enc["input_ids"] == minilm("hello big world")["input_ids"][:5]
    assert minilm.convert_ids_to_tokens(enc["input_ids"]) == ["[CLS]", "hello", "big", "world", "[SEP]"]
    assert enc["offsets"] == [(0, 0), (0, 5), (6, 9), (10, 15), (0, 0)]


def test_minilm_pair_layout(minilm):
    enc = encode(minilm, "hello", "big world", 128, "head")
    assert minilm.convert_ids_to_tokens(enc["input_ids"]) == ["[CLS]", "hello", "[SEP]", "big", "world", "[SEP]"]
    assert enc["token_type_ids"] == [0, 0, 0, 1, 1, 1]


def test_minilm_truncation_only_by_max_length(minilm):
    words = " ".join(["word"] * 200)
    assert len(encode(minilm, words, None, 512, "head")["input_ids"]) == 202  # nothing baked in cuts at 128
    enc = encode(minilm, words + " last", None, 16, "tail")
    assert len(enc["input_ids"]) == 16
    assert minilm.convert_ids_to_tokens(enc["input_ids"])[-2] == "last"


@pytest.fixture(scope="module", params=["roberta", "gpt"])
def byte_bpe(request):
    """<s> A </s></s> B </s> (roberta) or A <|endoftext|> B <|endoftext|> (gpt), as pretraining trains them."""
    from plmkit.pretrain.tokenizer import train_byte_bpe

    lines = [TEXT, TEXT[::-1], "hello big world", "the lazy dog"] * 5
    return train_byte_bpe(lines, vocab_size=300, family=request.param)


def test_other_layouts_encode_as_their_tokenizer_does(byte_bpe):
    for text, text_pair in [("hello big world", "the lazy dog"), (TEXT[:5], TEXT[5:9])]:
        for pair in (None, text_pair):
            expected = byte_bpe(text, pair, return_token_type_ids=True)
            enc = encode(byte_bpe, text, pair, 64, "head")
            assert enc["input_ids"] == expected["input_ids"]
            assert enc["token_type_ids"] == expected["token_type_ids"]
            specials = [s == 0 for s in enc["segments"]]
            assert [o == (0, 0) for o in enc["offsets"]] == specials
            assert [i in byte_bpe.all_special_ids for i in enc["input_ids"]] == specials


@pytest.mark.parametrize("max_length", [8, 13, 20])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_other_layouts_fit_max_length(byte_bpe, strategy, max_length):
    n_special = layout(byte_bpe).n_special(pair=True)
    enc = encode(byte_bpe, TEXT, TEXT[::-1], max_length, strategy)
    assert len(enc["input_ids"]) == len(enc["token_type_ids"]) == len(enc["offsets"]) == max_length
    assert enc["segments"].count(0) == n_special and {1, 2} <= set(enc["segments"])
    assert len(encode(byte_bpe, TEXT, None, max_length, strategy)["input_ids"]) == max_length


def test_layout_frame_and_spread(tok):
    specials = layout(tok)
    cls, sep = tok.cls_token_id, tok.sep_token_id
    assert specials.frame([7, 8]) == {
        "input_ids": [cls, 7, 8, sep],
        "token_type_ids": [0] * 4,
        "segments": [0, 1, 1, 0],
    }
    framed = specials.frame([7], [8, 9])
    assert framed == {
        "input_ids": [cls, 7, sep, 8, 9, sep],
        "token_type_ids": [0, 0, 0, 1, 1, 1],
        "segments": [0, 1, 0, 2, 2, 0],
    }
    assert spread(framed["segments"], ["a"], ["b", "c"], "-") == ["-", "a", "-", "b", "c", "-"]
    assert (specials.n_special(pair=False), specials.n_special(pair=True)) == (2, 3)

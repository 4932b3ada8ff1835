"""jieba words under any tokenizer's tokens (word_fusion)."""

from __future__ import annotations

from plmkit.data.truncation import encode
from plmkit.data.words import token_word_ids, word_id, word_spans


def test_word_spans_cover_the_text():
    text = "我爱北京天安门 hello"
    spans = word_spans(text)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(a == b for (_, a), (b, _) in zip(spans, spans[1:]))  # contiguous
    assert (2, 4) in spans  # 北京


def test_every_token_of_a_word_reads_that_word(minilm):
    """MiniLM's WordPiece cuts `unbelievably` into several sub-tokens: all take the word's one id."""
    text = "unbelievably good"
    enc = encode(minilm, text, None, 32, "head")
    ids = token_word_ids([text], enc["offsets"], enc["segments"], 1000)
    pieces = minilm.convert_ids_to_tokens(enc["input_ids"])
    n_sub = sum(1 for p in pieces if p.startswith("##"))
    assert n_sub >= 1
    first = [i for i, (a, _) in enumerate(enc["offsets"]) if enc["segments"][i] and a < len("unbelievably")]
    assert len(first) == n_sub + 1 and len({ids[i] for i in first}) == 1
    assert ids[first[0]] == word_id("unbelievably", 1000)
    assert ids[0] == 0 and ids[-1] == 0  # [CLS], [SEP]
    assert 0 < min(i for i in ids if i) and max(ids) < 1000


def test_characters_of_a_chinese_word_share_it_and_pairs_read_their_own_text(tok):
    a, b = "北京欢迎你", "中国"
    enc = encode(tok, a, b, 32, "head")
    ids = token_word_ids([a, b], enc["offsets"], enc["segments"], 5000)
    by_segment = {s: [i for i, t in zip(ids, enc["segments"]) if t == s] for s in (1, 2)}
    assert by_segment[2] == [word_id("中国", 5000)] * 2  # 中 and 国: one word, one vector
    assert by_segment[1][:2] == [word_id("北京", 5000)] * 2

"""The classical peers: a CRF learns a tiny NER task; jieba's spans cover the text."""

from __future__ import annotations

import random

from seqeval.metrics import f1_score
from seqeval.scheme import IOB2

from plmkit.data.tagging import Sentence, spans_to_tags, tags_to_spans
from plmkit.peers import char_class, crf_tagger, jieba_cws, unit_features

NAMES = ["张伟", "王芳", "李娜", "刘洋", "陈静", "杨帆", "赵磊", "黄敏", "周杰", "吴刚", "欧阳修", "司马光"]
PLACES = ["北京", "上海", "广州", "深圳", "南京", "杭州"]
TEMPLATES = [
    "{p}今天去了{l}。",
    "昨天{p}在{l}开会。",
    "记者从{l}获悉，{p}已经回国。",
    "我们听说{p}很喜欢{l}的天气。",
    "{p}和朋友一起参观了{l}博物馆。",
    "据报道，{p}将于明年访问{l}。",
]


def char_sentence(template: str, person: str, place: str) -> Sentence:
    """Fill a template and tag it character by character: PER for the person, LOC for the place."""
    text, spans = "", []
    for i, piece in enumerate(template.replace("{p}", "\0p\0").replace("{l}", "\0l\0").split("\0")):
        if piece in ("p", "l") and i % 2 == 1:
            word, kind = (person, "PER") if piece == "p" else (place, "LOC")
            spans.append((len(text), len(text) + len(word), kind))
            text += word
        else:
            text += piece
    units = tuple((i, i + 1) for i in range(len(text)))
    return Sentence(text, units, tuple(spans_to_tags(len(text), spans, "bio")))


def toy_ner(n: int, seed: int) -> list[Sentence]:
    rng = random.Random(seed)
    return [char_sentence(rng.choice(TEMPLATES), rng.choice(NAMES), rng.choice(PLACES)) for _ in range(n)]


def test_char_sentence_tags():
    s = char_sentence("{p}今天去了{l}。", "欧阳修", "北京")
    assert s.text == "欧阳修今天去了北京。"
    assert tags_to_spans(s.tags, "bio") == [(0, 3, "PER"), (7, 9, "LOC")]


def test_features_and_char_classes():
    assert [char_class(c) for c in "7７三亿aＺ，。!中"] == ["D", "D", "D", "D", "L", "L", "P", "P", "P", "H"]
    feats = unit_features(list("北京大学"))
    assert len(feats) == 4
    assert {"bias", "c0=北", "c-1=<s>", "c+1=京", "b+1=北|京", "t0=H"} <= set(feats[0])
    assert {"c0=学", "c+1=</s>", "c-2=京", "b-1=大|学"} <= set(feats[3])


def test_crf_tagger_learns_a_toy_task():
    train, test = toy_ner(60, seed=0), toy_ner(30, seed=1)
    out = crf_tagger(train, test, max_iterations=50)
    assert set(out) >= {"pred", "seconds", "params"}
    assert out["params"]["max_iterations"] == 50
    assert [len(p) for p in out["pred"]] == [len(s.tags) for s in test]
    gold = [list(s.tags) for s in test]
    assert f1_score(gold, out["pred"], mode="strict", scheme=IOB2) >= 0.9


def test_jieba_spans_cover_the_text():
    texts = [
        "我们在北京大学读书",
        "今天天气很好。",
        "Hello world 2024年，ＡＢＣ１２３！",
        "a  b\tc",
        "。",
        "欧阳修写了《醉翁亭记》",
    ]
    sentences = [Sentence(t, tuple((i, i + 1) for i in range(len(t)))) for t in texts]
    out = jieba_cws(sentences)
    assert set(out) >= {"pred", "seconds"} and len(out["pred"]) == len(texts)
    for text, spans in zip(texts, out["pred"]):
        assert spans and spans[0][0] == 0 and spans[-1][1] == len(text)
        assert all(a < b for a, b in spans)
        assert all(prev[1] == nxt[0] for prev, nxt in zip(spans, spans[1:]))
    words = [texts[0][a:b] for a, b in out["pred"][0]]
    assert "北京大学" in words or "北京" in words
    assert "我们" in words


def test_lac_segments_and_finds_entities_with_offsets():
    from plmkit.data.tagging import Sentence
    from plmkit.peers import lac_tagger

    texts = ["张三在北京市工作", "李四去上海", "ＡＢＣ公司的iPhone 15"]
    out = lac_tagger([Sentence(t, None) for t in texts], batch_size=2)
    for text, words in zip(texts, out["words"]):
        assert words[0][0] == 0 and words[-1][1] == len(text)
        assert all(a < b and b == c for (a, b), (c, _) in zip(words, words[1:]))  # contiguous, in order
    assert (0, 2, "PER") in out["entities"][0] and (3, 6, "LOC") in out["entities"][0]
    assert (0, 2, "PER") in out["entities"][1]

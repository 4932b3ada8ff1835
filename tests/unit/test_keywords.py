"""Keywords with jieba's TextRank and TF-IDF, per corpus and per label, and what `plmkit keywords` writes."""

from __future__ import annotations

import json

import pytest

from plmkit.data.examples import Example
from plmkit.errors import ConfigError, DataError
from plmkit.keywords import extract, keywords

GOOD = ["酒店的服务很好，早餐丰富，房间干净。", "服务热情，房间宽敞，早餐不错。", "早餐很好，服务周到，位置方便。"]
BAD = ["房间很脏，空调坏了，隔音太差。", "空调不制冷，房间有异味，隔音差。", "隔音很差，空调噪音大，卫生间脏。"]


@pytest.mark.parametrize("method", ["textrank", "tfidf"])
def test_each_label_gets_its_own_keywords(method):
    examples = [Example(t, label="good") for t in GOOD] + [Example(t, label="bad") for t in BAD]
    found = keywords(examples, by_label=True, top=5, method=method)
    assert list(found) == ["bad", "good"]
    bad, good = ({w for w, _ in found[k]} for k in ("bad", "good"))
    assert {"空调", "隔音"} <= bad and "早餐" in good and not {"空调", "隔音"} & good
    for words in found.values():
        scores = [s for _, s in words]
        assert len(words) <= 5 and scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)
    assert list(keywords(examples, top=3, method=method)) == ["all"]


def test_the_same_texts_give_the_same_keywords():
    assert extract(GOOD + BAD, 8, "textrank") == extract(GOOD + BAD, 8, "textrank")


def test_bad_requests_are_named():
    with pytest.raises(ConfigError, match="method: unknown 'lda'; known: textrank, tfidf"):
        extract(GOOD, 5, "lda")
    with pytest.raises(ConfigError, match="top: 0"):
        extract(GOOD, 0, "tfidf")
    with pytest.raises(DataError, match=r"f.csv:3 \(field 'label'\)"):
        keywords([Example("好", label="good"), Example("差", where="f.csv:3")], by_label=True)


def test_cli_writes_json_chart_and_report(tmp_path, capsys):
    from conftest import write_jsonl

    from plmkit.cli import main

    data = write_jsonl(
        tmp_path / "r.jsonl", [{"text": t, "label": "good"} for t in GOOD] + [{"text": t, "label": "bad"} for t in BAD]
    )
    out = tmp_path / "kw"
    assert main(["keywords", "--data", str(data), "--by-label", "--top", "4", "--output", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sorted(p.name for p in out.iterdir()) == ["keywords.json", "keywords.png", "report.html", "report.md"]
    assert json.loads((out / "keywords.json").read_text()) == printed and set(printed) == {"bad", "good"}
    assert (out / "keywords.png").read_bytes()[:4] == b"\x89PNG"
    assert printed["bad"][0][0] in (out / "report.md").read_text()

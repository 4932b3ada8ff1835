"""Tag schemes, the CoNLL and JSONL readers, the shipped People's Daily sets, metrics."""

from __future__ import annotations

import pytest
from conftest import write_jsonl

from plmkit.data.builtin import load_tagged_builtin
from plmkit.data.tagging import (
    check_sequence,
    detect_scheme,
    read_conll,
    read_jsonl,
    read_tagged,
    spans_to_tags,
    tags_to_spans,
)
from plmkit.errors import DataError
from plmkit.tasks.tagging import cws_metrics, ner_metrics


@pytest.mark.parametrize(
    "scheme,tags,spans",
    [
        ("bio", ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC"], [(0, 2, "PER"), (3, 4, "LOC"), (4, 6, "LOC")]),
        ("bioes", ["B-PER", "I-PER", "E-PER", "O", "S-LOC", "S-LOC"], [(0, 3, "PER"), (4, 5, "LOC"), (5, 6, "LOC")]),
        ("bmes", ["B", "M", "E", "S", "B", "E"], [(0, 3, ""), (3, 4, ""), (4, 6, "")]),
    ],
)
def test_tags_and_spans_round_trip(scheme, tags, spans):
    assert tags_to_spans(tags, scheme) == spans
    assert spans_to_tags(len(tags), spans, scheme) == tags
    assert check_sequence(tags, scheme) is None
    assert detect_scheme(set(tags)) == scheme


@pytest.mark.parametrize(
    "scheme,tags,bad",
    [
        ("bio", ["O", "I-PER"], 1),
        ("bio", ["B-PER", "I-LOC"], 1),
        ("bio", ["I-PER"], 0),
        ("bioes", ["B-PER", "O"], 1),
        ("bioes", ["B-PER", "I-PER"], 1),  # never closed
        ("bmes", ["B", "S"], 1),
        ("bmes", ["E"], 0),
        ("bio", ["B-PER", "X-PER"], 1),
    ],
)
def test_broken_sequences_are_reported_at_the_tag(scheme, tags, bad):
    found = check_sequence(tags, scheme)
    assert found is not None and found[0] == bad


def test_lenient_decoding_of_invalid_predictions():
    """A decoder's output may break the scheme; spans still come out, one per run."""
    assert tags_to_spans(["O", "I-PER", "I-PER", "B-LOC", "I-PER"], "bio") == [
        (1, 3, "PER"),
        (3, 4, "LOC"),
        (4, 5, "PER"),
    ]
    assert tags_to_spans(["M", "E", "B"], "bmes") == [(0, 2, ""), (2, 3, "")]


def test_conll_reader(tmp_path):
    p = tmp_path / "a.conll"
    p.write_text(
        "-DOCSTART- O\n\n江 B-PER\n泽 I-PER\n民 I-PER\n好 O\n\n\nNew B-LOC\nYork I-LOC\n2024 O\n", encoding="utf-8"
    )
    sents = read_conll(p)
    assert [s.text for s in sents] == ["江泽民好", "New York 2024"]
    assert sents[1].units == ((0, 3), (4, 8), (9, 13))
    assert sents[0].tags == ("B-PER", "I-PER", "I-PER", "O")
    assert (sents[0].line, sents[1].line) == (3, 9)


def test_conll_bmes_lowercase_and_bioes(tmp_path):
    p = tmp_path / "seg.txt"
    p.write_text("迈 b\n向 e\n新 s\n", encoding="utf-8")
    assert read_conll(p)[0].tags == ("B", "E", "S")
    q = tmp_path / "e.bioes"
    q.write_text("北 B-LOC\n京 E-LOC\n在 O\n", encoding="utf-8")
    assert read_conll(q)[0].tags == ("B-LOC", "E-LOC", "O")


@pytest.mark.parametrize(
    "content,line,message",
    [
        ("江 B-PER\n泽 I-PER\n\n好 O\n民 I-PER\n", 5, "never opened"),
        ("江 B-PER\n泽 I-PER\n民 X I-PER\n", 3, "3 columns"),
        ("江\n", 1, "TOKEN and TAG"),
        ("北 B-LOC\n京 I-LOC\n\n站 S-LOC\n", 2, "never closed"),
    ],
)
def test_conll_errors_name_file_and_line(tmp_path, content, line, message):
    p = tmp_path / "bad.conll"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message) as e:
        read_conll(p)
    assert e.value.line == line and e.value.path == str(p)


def test_conll_without_sentences(tmp_path):
    p = tmp_path / "blank.conll"
    p.write_text("-DOCSTART- O\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no sentences"):
        read_conll(p)


def test_jsonl_reader_and_its_errors(tmp_path):
    ok = write_jsonl(
        tmp_path / "ok.jsonl",
        [
            {
                "text": "江泽民在北京",
                "entities": [
                    {"start": 0, "end": 3, "type": "PER", "text": "江泽民"},
                    {"start": 4, "end": 6, "label": "LOC"},
                ],
            }
        ],
    )
    (s,) = read_tagged(ok, "ner")
    assert s.units is None and s.spans == ((0, 3, "PER"), (4, 6, "LOC"))
    cases = [
        ({"text": "江泽民", "entities": [{"start": 0, "end": 2, "type": "PER", "text": "江泽民"}]}, "cover '江泽'"),
        ({"text": "江泽民", "entities": [{"start": 1, "end": 9, "type": "PER"}]}, "outside the text"),
        (
            {
                "text": "江泽民",
                "entities": [{"start": 0, "end": 2, "type": "PER"}, {"start": 1, "end": 3, "type": "PER"}],
            },
            "overlap",
        ),
        ({"text": "  ", "entities": []}, "empty text"),
        ({"text": "江泽民", "entities": [{"start": "0", "end": 2, "type": "PER"}]}, "expected"),
        ({"text": "江泽民"}, "entities"),
    ]
    for row, message in cases:
        p = write_jsonl(tmp_path / "bad.jsonl", [{"text": "好", "entities": []}, row])
        with pytest.raises(DataError, match=message) as e:
            read_jsonl(p)
        assert e.value.line == 2


def test_jsonl_words_for_segmentation(tmp_path):
    p = write_jsonl(tmp_path / "seg.jsonl", [{"text": "迈向 新世纪", "words": ["迈向", "新", "世纪"]}])
    assert read_tagged(p, "cws")[0].spans == ((0, 2, ""), (3, 4, ""), (4, 6, ""))
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "迈向新世纪", "words": ["迈向", "世纪"]}])
    with pytest.raises(DataError, match="does not match the text at offset 2"):
        read_tagged(bad, "cws")


def test_peoples_daily_sets():
    """Counts as documented in the README; NER and segmentation split the same sentences alike."""
    ner = {s: load_tagged_builtin(f"builtin:peoples-daily-ner:{s}") for s in ("train", "dev", "test")}
    cws = {s: load_tagged_builtin(f"builtin:peoples-daily-cws:{s}") for s in ("train", "dev", "test")}
    assert {s: len(v) for s, v in ner.items()} == {"train": 15565, "dev": 1935, "test": 1984}
    for split in ner:
        assert [s.text for s in ner[split]] == [s.text for s in cws[split]]
    counts = {}
    for s in ner["test"]:
        assert check_sequence(s.tags, "bio") is None
        for _, _, kind in tags_to_spans(s.tags, "bio"):
            counts[kind] = counts.get(kind, 0) + 1
    assert counts == {"PER": 1819, "LOC": 3016, "ORG": 366}
    first = next(s for s in ner["train"] if s.text.startswith("中共中央总书记、国家主席江泽民"))
    assert tags_to_spans(first.tags, "bio") == [(0, 4, "ORG"), (12, 15, "PER")]  # 江/nr 泽民/nr is one person
    assert all(check_sequence(s.tags, "bmes") is None for s in cws["dev"])
    with pytest.raises(DataError, match="another kind of task"):
        load_tagged_builtin("builtin:reviews")


def test_ner_metrics_are_strict_entity_level():
    gold = [("B-PER", "I-PER", "O", "B-LOC"), ("B-ORG", "I-ORG")]  # tuples, as the readers give them
    pred = [["B-PER", "I-PER", "O", "O"], ["I-ORG", "I-ORG"]]  # the ORG never opens: strict mode does not count it
    m = ner_metrics(gold, pred, "bio")
    assert (m["precision"], m["recall"]) == (1.0, pytest.approx(1 / 3))
    assert m["per_type"]["PER"]["f1"] == 1.0 and m["per_type"]["ORG"]["recall"] == 0.0


def test_cws_metrics_count_words():
    gold = [["B", "E", "S", "B", "M", "E"]]  # 迈向 / 新 / 世纪末
    pred = [["B", "E", "B", "E", "B", "E"]]  # 迈向 / 新世 / 纪末
    m = cws_metrics(gold, pred, "bmes")
    assert (m["precision"], m["recall"]) == (pytest.approx(1 / 3), pytest.approx(1 / 3))

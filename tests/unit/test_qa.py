"""Extractive QA: readers, units and windows, decoding, metrics, and the MRC-NER builtin."""

from __future__ import annotations

import json
import random

import pytest
import torch

from plmkit.config import TrainConfig
from plmkit.data.squad import QARecord, read_qa
from plmkit.errors import ConfigError, DataError
from plmkit.tasks import qa

TEXT = "2008年北京奥运会，Beijing Olympics（第29届）在中国举行。"


def squad_file(tmp_path, qas, context=TEXT, name="train.json"):
    path = tmp_path / name
    data = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]}
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def answer(text, start=None):
    return {"text": text, "answer_start": TEXT.index(text) if start is None else start}


@pytest.fixture(scope="module")
def e5_tok():
    from plmkit.models.encoders import load_tokenizer, resolve_model

    return load_tokenizer(resolve_model("e5-small"))


@pytest.fixture(params=["tiny-bert", "e5-small"])
def any_tok(request, tok, e5_tok):
    """A WordPiece tokenizer (units: its words) and a sentencepiece one (units: characters and runs)."""
    return tok if request.param == "tiny-bert" else e5_tok


# --- readers ------------------------------------------------------------------------------------------------------


def test_squad_v2_and_cmrc_json_read(tmp_path):
    path = squad_file(
        tmp_path,
        [
            {"id": "q1", "question": "哪一年?", "answers": [answer("2008")]},
            {"id": "q2", "question": "第几届?", "answers": [answer("第29届"), answer("29")]},
            {"id": "q3", "question": "在哪里?", "answers": [], "is_impossible": True},
        ],
    )
    records = read_qa(path)
    assert [r.id for r in records] == ["q1", "q2", "q3"]
    assert records[0] == QARecord("q1", "哪一年?", TEXT, ((0, "2008"),))
    assert records[1].answers == ((TEXT.index("第29届"), "第29届"), (TEXT.index("29"), "29"))
    assert records[2].answers == ()
    assert all(r.answers is None for r in read_qa(path, labelled=False))


def test_jsonl_reads(tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = [{"id": "a", "question": "哪一年?", "context": TEXT, "answers": [answer("2008")]}]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    assert read_qa(path) == [QARecord("a", "哪一年?", TEXT, ((0, "2008"),))]


@pytest.mark.parametrize(
    "qa_row, message",
    [
        ({"id": "bad1", "question": "q", "answers": [answer("2008", 3)]}, r"'bad1'.*answer text '2008' is not at"),
        ({"id": "bad2", "question": "q", "answers": [answer("2008", 999)]}, r"'bad2'.*answer_start 999 is out of"),
        ({"id": "bad3", "answers": [answer("2008")]}, r"'bad3'.*question is missing"),
        ({"id": "bad4", "question": "q", "answers": [{"text": "2008"}]}, r"'bad4'.*answer_start is missing"),
    ],
)
def test_reader_errors_name_file_question_and_field(tmp_path, qa_row, message):
    path = squad_file(tmp_path, [{"id": "ok", "question": "q", "answers": [answer("2008")]}, qa_row])
    with pytest.raises(DataError, match=message) as info:
        read_qa(path)
    text = str(info.value)
    assert "train.json" in text and "qas[1]" in text
    assert info.value.field in ("answers[0].answer_start", "question")


def test_jsonl_errors_name_the_line(tmp_path):
    path = tmp_path / "qa.jsonl"
    good = {"id": "a", "question": "q", "context": TEXT, "answers": [answer("2008")]}
    path.write_text(json.dumps(good) + "\n" + json.dumps(good | {"answers": [answer("2008", 1)]}) + "\n")
    with pytest.raises(DataError, match=r"qa.jsonl:2 \(field 'answers\[0\].answer_start'\)"):
        read_qa(path)


def test_gbk_empty_and_questionless_files_are_clear_errors(tmp_path):
    good = {"id": "a", "question": "哪一年?", "context": TEXT, "answers": [answer("2008")]}
    gbk = tmp_path / "gbk.jsonl"
    gbk.write_bytes((json.dumps(good) + "\n" + json.dumps(good, ensure_ascii=False) + "\n").encode("gbk"))
    with pytest.raises(DataError, match=r"gbk.jsonl:2.*not valid utf-8.*encoding gbk"):
        read_qa(gbk)
    assert read_qa(gbk, encoding="gbk")[1] == QARecord("a", "哪一年?", TEXT, ((0, "2008"),))
    empty = tmp_path / "empty.json"
    empty.write_text("  \n")
    with pytest.raises(DataError, match=r"empty.json.*file is empty"):
        read_qa(empty)
    broken = tmp_path / "broken.json"
    broken.write_text('{"data": [\n  {"paragraphs": [}\n]}')
    with pytest.raises(DataError, match=r"broken.json:2.*not valid JSON"):
        read_qa(broken)
    with pytest.raises(DataError, match=r"train.json.*no questions"):
        read_qa(squad_file(tmp_path, []))


# --- units, windows, offsets --------------------------------------------------------------------------------------


def cfg(**kw):
    return TrainConfig(task="qa", **({"head": "span", "max_length": 64} | kw))


SPANS = [
    "2008",
    "年",
    "北京奥运会",
    "，",
    "Beijing",
    "Olympics",
    "Beijing Olympics",
    "（",
    "第29届",
    "（第29届）",
    "29",
    "。",
]


@pytest.mark.parametrize("head", qa.QA_HEADS)
def test_answers_map_to_tokens_and_back_exactly(any_tok, head):
    """Every answer's start and end tokens map back to its exact characters in the original text: Latin
    words, digits and full-width punctuation included; nothing needed widening."""
    records = [QARecord(str(i), "这是什么?", TEXT, ((TEXT.index(s), s),)) for i, s in enumerate(SPANS)]
    data = qa.featurize(records, any_tok, cfg(head=head), None, "x")
    assert data.context.snapped == 0
    assert len(data.items) == len(records)  # one window each
    for item, s in zip(data.items, SPANS):
        if head == "span":
            first, last = item["start_position"], item["end_position"]
        else:
            ((first, last),) = tagged_runs(item["tags"])
        units = data.context.contexts[item["record"]].units
        a, b = units[item["token_unit"][first]][0], units[item["token_unit"][last]][1]
        assert TEXT[a:b] == s
        assert item["start_ok"][first] and item["end_ok"][last]


def tagged_runs(tags):
    """(first, last) positions of every B I* run of multi_span's tags."""
    runs = []
    for t, tag in enumerate(tags):
        if tag == qa.TAG_B:
            runs.append([t, t])
        elif tag == qa.TAG_I:
            assert runs and runs[-1][1] == t - 1  # an I follows its answer's B or I
            runs[-1][1] = t
    return [tuple(r) for r in runs]


def test_multi_span_tags_only_the_context(any_tok):
    records = [QARecord("1", "这是什么?", TEXT, ((TEXT.index("北京"), "北京"), (TEXT.index("29"), "29")))]
    (item,) = qa.featurize(records, any_tok, cfg(head="multi_span"), None, "x").items
    context = [t != qa.IGNORED for t in item["tags"]]
    assert context == [u >= 0 for u in item["token_unit"]]  # the question and special tokens are not tagged
    assert len(tagged_runs(item["tags"])) == 2


def test_chinese_context_is_one_unit_per_character(e5_tok):
    """e5's sentencepiece alone joins characters (是中国); the context is tokenised per character."""
    text = "他说这是中国的首都北京。"
    c = qa.encode_contexts([text], e5_tok, "auto")[0]
    assert [text[a:b] for a, b in c.units] == list(text)
    assert all(len(t) == 1 for t in c.tokens)


def random_context(rng, n):
    return "".join(rng.choice("甲乙丙丁戊己庚辛壬癸子丑寅卯") for _ in range(n))


@pytest.mark.parametrize("head", qa.QA_HEADS)
@pytest.mark.parametrize("max_length, doc_stride", [(32, 8), (40, 16), (24, 100)])
def test_windows_with_stride_cover_every_answer(any_tok, head, max_length, doc_stride):
    rng = random.Random(0)
    records = []
    for i in range(20):
        text = random_context(rng, rng.randint(30, 120))
        start = rng.randrange(len(text) - 6)
        span = text[start : start + rng.randint(1, 6)]
        records.append(QARecord(str(i), "问题", text, ((start, span),)))
    data = qa.featurize(records, any_tok, cfg(head=head, max_length=max_length, doc_stride=doc_stride), None, "x")
    assert all(len(it["input_ids"]) <= max_length for it in data.items)
    covered = set()
    for item in data.items:
        r, units = records[item["record"]], data.context.contexts[item["record"]].units
        if head == "span":
            pairs = [(item["start_position"], item["end_position"])] if item["start_position"] else []
        else:
            pairs = tagged_runs(item["tags"])
        for s, e in pairs:
            a, b = units[item["token_unit"][s]][0], units[item["token_unit"][e]][1]
            assert (a, r.context[a:b]) == r.answers[0]
            covered.add(item["record"])
    assert covered == set(range(len(records)))
    windows_per_record = [sum(it["record"] == k for it in data.items) for k in range(len(records))]
    assert max(windows_per_record) > 1  # the contexts do need windows


def test_no_room_for_the_context_is_a_config_error(tok):
    records = [QARecord("1", "问题" * 40, TEXT, ((0, "2008"),))]
    with pytest.raises(ConfigError, match="max_length: 16 leaves no room"):
        qa.featurize(records, tok, cfg(max_length=16, max_query_length=64), None, "x")


# --- decoding -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_n_best_never_inverts_or_exceeds_the_length_limit(seed):
    gen = torch.Generator().manual_seed(seed)
    start, end = torch.randn(50, generator=gen), torch.randn(50, generator=gen)
    start_ok = torch.rand(50, generator=gen) > 0.3
    end_ok = torch.rand(50, generator=gen) > 0.3
    start_ok[:5] = end_ok[:5] = False  # the question and specials
    pairs = qa.best_spans(start, end, start_ok, end_ok, n_best=10, max_answer_length=4)
    assert pairs and len(pairs) <= 10
    assert [p[0] for p in pairs] == sorted((p[0] for p in pairs), reverse=True)
    for score, s, e in pairs:
        assert s <= e < s + 4 and start_ok[s] and end_ok[e]
        assert score == pytest.approx(float(start[s] + end[e]))


def test_n_best_finds_the_best_allowed_pair():
    start = torch.tensor([9.0, 0.0, 5.0, -1.0, -1.0, -1.0])
    end = torch.tensor([9.0, 4.0, 0.0, 0.0, 3.0, 8.0])
    ok = torch.tensor([False, True, True, True, True, True])
    # 0 is not allowed; 2..5 (13) is the best sum but 4 tokens long; the best within 3 tokens is 2..4 (8)
    assert qa.best_spans(start, end, ok, ok, n_best=20, max_answer_length=3)[0][1:] == (2, 4)
    assert qa.best_spans(start, end, ok, ok, n_best=20, max_answer_length=4)[0][1:] == (2, 5)


def one_window(text):
    """A context of one unit per character, read as [CLS] q [SEP] text [SEP]: positions 3.. are the text."""
    c = qa.Context([(i, i + 1) for i in range(len(text))], [[i] for i in range(len(text))])
    n = len(text) + 4
    token_unit = [-1, -1, -1] + list(range(len(text))) + [-1]
    ok = [int(u >= 0) for u in token_unit]
    return c, {"token_unit": token_unit, "start_ok": ok, "end_ok": ok}, n


def reading(head="span", allow_null=True, threshold=0.0, max_len=30):
    return qa.Reading([], head, allow_null, 20, max_len, threshold)


def test_no_answer_against_the_best_span_with_null_threshold():
    text = "甲乙丙丁"
    c, item, n = one_window(text)
    scores = torch.zeros(n, 2)
    scores[0] = torch.tensor([3.0, 3.0])  # null: 6
    scores[4, 0], scores[5, 1] = 2.5, 2.5  # 乙丙: 5
    assert qa.decode_record(text, c, [(item, scores)], reading()) == []
    assert qa.decode_record(text, c, [(item, scores)], reading(threshold=1.5))[0]["text"] == "乙丙"
    assert qa.decode_record(text, c, [(item, scores)], reading(allow_null=False))[0]["text"] == "乙丙"
    scores[4, 0] = 4.0  # 7 beats null
    (best,) = qa.decode_record(text, c, [(item, scores)], reading())
    assert (best["start"], best["end"], best["text"]) == (1, 3, "乙丙") and 0 < best["score"] <= 1


def test_multi_span_reads_the_runs_of_b_and_i():
    O, B, I = qa.TAG_O, qa.TAG_B, qa.TAG_I  # noqa: E741
    tags = [O, B, I, O, I, I, B, B, I, O]  # an I after O starts a run; a B ends the run before it
    probs = torch.nn.functional.one_hot(torch.tensor(tags), 3).float() * 0.8 + 0.1 / 1.5
    units = [-1] + list(range(8)) + [-1]  # the first and the last positions are not context
    runs = qa.tag_spans(probs, units, max_answer_length=30)
    assert [(s, e) for _, s, e in runs] == [(1, 2), (4, 5), (6, 6), (7, 8)]
    assert runs[0][0] == pytest.approx(float(probs[1].max()))
    assert [(s, e) for _, s, e in qa.tag_spans(probs, units, max_answer_length=1)] == [(6, 6)]
    # a run is cut where the context ends: position 8 (I) is not context here
    assert [(s, e) for _, s, e in qa.tag_spans(probs, units[:8] + [-1, -1], 30)][-1] == (7, 7)


def test_multi_span_windows_merge_and_deduplicate_by_character_span():
    text = "甲乙丙丁戊"
    c, item, n = one_window(text)
    a = torch.zeros(n, 3)
    a[:, qa.TAG_O] = 5.0
    a[3, qa.TAG_B], a[4, qa.TAG_I] = 10.0, 10.0  # 甲乙
    b = a.clone()
    b[6, qa.TAG_B], b[7, qa.TAG_I] = 10.0, 10.0  # 丁戊
    b[3, qa.TAG_B], b[4, qa.TAG_I] = 6.0, 6.0  # 甲乙 again, less sure
    found = qa.decode_record(text, c, [(item, a), (item, b)], reading("multi_span"))
    assert [(x["start"], x["end"], x["text"]) for x in found] == [(0, 2, "甲乙"), (3, 5, "丁戊")]
    assert found[0]["score"] == pytest.approx(float(a[3].softmax(-1).max()), abs=1e-6)


# --- metrics ------------------------------------------------------------------------------------------------------


def test_cmrc_f1_and_em_by_hand():
    assert qa.exact_match("北京奥运会。", " 北京奥运会") == 1.0  # punctuation and spaces do not count
    assert qa.exact_match("ＡＢＣ１２３", "abc123") == 1.0  # NFKC, lower case
    # 北京奥运 vs 北京奥运会: common 4; precision 4/4, recall 4/5 -> F1 8/9
    assert qa.char_f1("北京奥运", "北京奥运会") == pytest.approx(8 / 9)
    # the longest common substring, not a bag of characters: 奥运会, 3 of 5 each way
    assert qa.char_f1("奥运会北京", "北京奥运会") == pytest.approx(2 * (3 / 5) * (3 / 5) / (6 / 5))
    assert qa.char_f1("上海", "北京") == 0.0
    assert qa.char_f1("", "") == 1.0 and qa.char_f1("北京", "") == 0.0
    # max over the gold answers
    assert qa.question_scores(["第29届"], ["29", "第29届"], multi=False) == (1.0, 1.0)
    em, f1 = qa.question_scores(["29届"], ["29", "第29届"], multi=False)
    assert em == 0.0 and f1 == pytest.approx(max(2 * (2 / 3) * 1 / (2 / 3 + 1), 2 * (3 / 3) * (3 / 4) / (1 + 3 / 4)))
    assert qa.question_scores([], [], multi=False) == (1.0, 1.0)  # no answer, none predicted
    assert qa.question_scores(["北京"], [], multi=False) == (0.0, 0.0)


def test_multi_answer_scores_by_hand():
    assert qa.question_scores(["北京", "上海"], ["上海", "北京"], multi=True) == (1.0, 1.0)
    em, f1 = qa.question_scores(["北京"], ["北京", "上海"], multi=True)  # precision 1, recall 1/2
    assert em == 0.0 and f1 == pytest.approx(2 / 3)
    assert qa.question_scores([], [], multi=True) == (1.0, 1.0)
    assert qa.question_scores(["北京"], [], multi=True) == (0.0, 0.0)


# --- the MRC-NER builtin ------------------------------------------------------------------------------------------


def test_mrc_builtin_has_the_ner_split_and_a_question_per_type():
    from plmkit.data.builtin import MRC_QUESTIONS, load_qa_builtin, load_tagged_builtin
    from plmkit.data.tagging import tags_to_spans

    for split in ("train", "dev", "test"):
        ner = load_tagged_builtin(f"builtin:peoples-daily-ner:{split}")
        mrc = load_qa_builtin(f"builtin:peoples-daily-mrc:{split}")
        assert len(mrc) == 3 * len(ner)
        assert [r.context for r in mrc[::3]] == [s.text for s in ner]
        if split != "dev":
            continue
        for s, group in zip(ner, zip(mrc[::3], mrc[1::3], mrc[2::3])):
            assert [r.question for r in group] == list(MRC_QUESTIONS.values())
            spans = tags_to_spans(list(s.tags), "bio")
            for r, kind in zip(group, MRC_QUESTIONS):
                assert r.answers == tuple((a, s.text[a:b]) for a, b, k in spans if k == kind)
                assert all(r.context[a : a + len(t)] == t for a, t in r.answers)
    dev = load_qa_builtin("builtin:peoples-daily-mrc:dev")
    assert any(r.answers for r in dev) and any(not r.answers for r in dev)
    with pytest.raises(DataError, match="another kind of task"):
        load_qa_builtin("builtin:peoples-daily-ner")

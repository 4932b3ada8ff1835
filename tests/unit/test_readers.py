"""Readers: CSV, TSV, JSONL and plain text; every error names file, line and field."""

from __future__ import annotations

import re

import pytest
from conftest import write_csv, write_jsonl

from plmkit.data.readers import read_corpus_file, read_examples, read_text
from plmkit.errors import DataError


def _error(call, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        call(*args, **kwargs)
    return str(info.value)


# --- reading good files -------------------------------------------------------------------------------------------


def test_csv_text_and_label(tmp_path):
    path = write_csv(tmp_path / "a.csv", [("好棒", "good"), ("差坏", "bad")])
    examples = read_examples(path)
    assert [(e.text, e.text_pair, e.label) for e in examples] == [("好棒", None, "good"), ("差坏", None, "bad")]
    assert [e.where for e in examples] == [f"{path}:2", f"{path}:3"]


def test_csv_quoted_comma_and_label_whitespace(tmp_path):
    path = write_csv(tmp_path / "a.csv", [("你好, 世界", " pos "), ("再见", "neg")])
    examples = read_examples(path)
    assert examples[0].text == "你好, 世界"
    assert [e.label for e in examples] == ["pos", "neg"]


def test_tsv_with_pairs(tmp_path):
    path = write_csv(
        tmp_path / "a.tsv",
        [("今天下雨", "今天天晴", "contradiction"), ("我爱北京", "我喜欢北京", "entailment")],
        header=("text", "text_pair", "label"),
        delimiter="\t",
    )
    examples = read_examples(path, text_pair_column="text_pair")
    assert [(e.text, e.text_pair, e.label) for e in examples] == [
        ("今天下雨", "今天天晴", "contradiction"),
        ("我爱北京", "我喜欢北京", "entailment"),
    ]


def test_tsv_comma_is_not_a_separator(tmp_path):
    path = write_csv(tmp_path / "a.tsv", [("一,二,三", "x"), ("四", "y")], delimiter="\t")
    assert [e.text for e in read_examples(path)] == ["一,二,三", "四"]


def test_jsonl_labels_kept_as_written_and_int_label_becomes_string(tmp_path):
    path = write_jsonl(
        tmp_path / "a.jsonl",
        [{"text": "好", "label": 1}, {"text": "差", "label": "0"}, {"text": "中", "label": "neutral"}],
    )
    examples = read_examples(path)
    assert [e.label for e in examples] == ["1", "0", "neutral"]
    assert all(isinstance(e.label, str) for e in examples)
    assert [e.where for e in examples] == [f"{path}:1", f"{path}:2", f"{path}:3"]


def test_jsonl_with_pairs_and_blank_lines(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(
        '{"text": "甲", "text_pair": "乙", "label": "x"}\n\n{"text": "丙", "text_pair": "丁", "label": "y"}\n',
        encoding="utf-8",
    )
    examples = read_examples(path, text_pair_column="text_pair")
    assert [(e.text, e.text_pair, e.label) for e in examples] == [("甲", "乙", "x"), ("丙", "丁", "y")]
    assert examples[1].where == f"{path}:3"


def test_configurable_column_names(tmp_path):
    path = write_csv(
        tmp_path / "a.csv",
        [("q1", "s1", "标签一", "junk"), ("q2", "s2", "标签二", "junk")],
        header=("sentence1", "sentence2", "gold", "other"),
    )
    examples = read_examples(path, text_column="sentence1", text_pair_column="sentence2", label_column="gold")
    assert [(e.text, e.text_pair, e.label) for e in examples] == [("q1", "s1", "标签一"), ("q2", "s2", "标签二")]


def test_jsonl_configurable_columns(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"content": "文本", "y": "a"}])
    [example] = read_examples(path, text_column="content", label_column="y")
    assert (example.text, example.label) == ("文本", "a")


def test_unlabelled_read(tmp_path):
    path = write_csv(tmp_path / "a.csv", [("只有文本",)], header=("text",))
    [example] = read_examples(path, label_column=None)
    assert (example.text, example.label) == ("只有文本", None)


def test_regression_labels_are_floats(tmp_path):
    path = write_csv(tmp_path / "a.csv", [("a", "b", "3.5"), ("c", "d", "0")], header=("text", "text_pair", "label"))
    examples = read_examples(path, text_pair_column="text_pair", label_type="float")
    assert [e.label for e in examples] == [3.5, 0.0]
    assert all(isinstance(e.label, float) for e in examples)


def test_plain_text_unlabelled_only(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("第一行\n\n第二行\n", encoding="utf-8")
    examples = read_examples(path, label_column=None)
    assert [(e.text, e.label, e.where) for e in examples] == [
        ("第一行", None, f"{path}:1"),
        ("第二行", None, f"{path}:3"),
    ]
    message = _error(read_examples, path)  # label_column defaults to "label"
    assert str(path) in message and "plain-text" in message
    message = _error(read_examples, path, label_column=None, text_pair_column="text_pair")
    assert str(path) in message


def test_read_corpus_file_skips_blank_lines_and_strips(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("  句子一  \n\n\t\n句子二\n", encoding="utf-8")
    assert read_corpus_file(path) == ["句子一", "句子二"]


def test_utf8_bom_reads_fine(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("text,label\n你好,pos\n".encode("utf-8-sig"))
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    [example] = read_examples(path)
    assert (example.text, example.label) == ("你好", "pos")
    assert not read_text(path).startswith("\ufeff")


# --- bad input ----------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    message = _error(read_examples, path)
    assert str(path) in message and "not found" in message
    corpus = tmp_path / "nope.txt"
    assert str(corpus) in _error(read_corpus_file, corpus)


def test_directory_is_not_a_file(tmp_path):
    d = tmp_path / "dir.csv"
    d.mkdir()
    message = _error(read_examples, d)
    assert str(d) in message and "directory" in message


@pytest.mark.parametrize("content", ["", "   \n\n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_text(content, encoding="utf-8")
    message = _error(read_examples, path)
    assert str(path) in message and "empty" in message


def test_empty_corpus_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n\n", encoding="utf-8")
    message = _error(read_corpus_file, path)
    assert str(path) in message and "empty" in message


def test_header_only_csv(tmp_path):
    path = write_csv(tmp_path / "h.csv", [])
    message = _error(read_examples, path)
    assert str(path) in message and "no examples" in message


def test_missing_column_names_it_and_lists_header(tmp_path):
    path = write_csv(tmp_path / "a.csv", [("好", "good")], header=("sentence", "label"))
    message = _error(read_examples, path)
    assert f"{path}:1" in message
    assert "'text'" in message
    assert "sentence" in message and "label" in message  # the header, listed


def test_missing_label_column(tmp_path):
    path = write_csv(tmp_path / "a.csv", [("好",)], header=("text",))
    message = _error(read_examples, path)
    assert f"{path}:1" in message and "field 'label'" in message and "text" in message


def test_empty_text_field_line_counts_header(tmp_path):
    path = write_csv(tmp_path / "a.csv", [("好", "good"), ("差", "bad"), ("  ", "bad"), ("好", "good")])
    message = _error(read_examples, path)
    assert f"{path}:4" in message
    assert "field 'text'" in message and "empty" in message


def test_empty_label_field(tmp_path):
    path = write_csv(tmp_path / "a.csv", [("好", "good"), ("差", "")])
    message = _error(read_examples, path)
    assert f"{path}:3" in message and "field 'label'" in message


def test_line_numbers_survive_blank_lines(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("text,label\n好,good\n\n\n,bad\n", encoding="utf-8")
    message = _error(read_examples, path)
    assert f"{path}:5" in message and "field 'text'" in message


def test_jsonl_missing_label(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "好", "label": "good"}, {"text": "差"}])
    message = _error(read_examples, path)
    assert f"{path}:2" in message and "field 'label'" in message and "missing" in message


def test_jsonl_null_text_is_missing(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": None, "label": "good"}])
    message = _error(read_examples, path)
    assert f"{path}:1" in message and "field 'text'" in message


def test_jsonl_missing_pair(tmp_path):
    path = write_jsonl(
        tmp_path / "a.jsonl", [{"text": "a", "text_pair": "b", "label": "x"}, {"text": "c", "label": "y"}]
    )
    message = _error(read_examples, path, text_pair_column="text_pair")
    assert f"{path}:2" in message and "field 'text_pair'" in message


def test_wrong_column_count(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("text,label\n好,good\n差,bad,extra\n", encoding="utf-8")
    message = _error(read_examples, path)
    assert f"{path}:3" in message
    assert "3 columns" in message and "2" in message


def test_too_few_columns(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_text("text\tlabel\n好\tgood\n好\tgood\n差\n", encoding="utf-8")
    message = _error(read_examples, path)
    assert f"{path}:4" in message and "1 columns" in message


def test_invalid_json_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "好", "label": "good"}\n{"text": "差", "label": bad}\n', encoding="utf-8")
    message = _error(read_examples, path)
    assert f"{path}:2" in message and "JSON" in message


def test_json_line_not_an_object(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(
        '{"text": "好", "label": "good"}\n{"text": "好", "label": "good"}\n["差", "bad"]\n', encoding="utf-8"
    )
    message = _error(read_examples, path)
    assert f"{path}:3" in message and "object" in message


def test_non_numeric_regression_label(tmp_path):
    path = write_csv(tmp_path / "a.csv", [("a", "1.5"), ("b", "high")])
    message = _error(read_examples, path, label_type="float")
    assert f"{path}:3" in message and "field 'label'" in message and "'high'" in message


def test_unknown_extension(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_text("text,label\n好,good\n", encoding="utf-8")
    message = _error(read_examples, path)
    assert str(path) in message and ".xlsx" in message
    assert ".csv" in message and ".jsonl" in message  # lists the known ones


def test_gbk_file_is_named_and_reads_with_gbk(tmp_path):
    path = tmp_path / "gbk.csv"
    path.write_bytes("text,label\n".encode("ascii") + "中文文本,标签".encode("gbk") + b"\n")
    message = _error(read_examples, path)
    assert f"{path}:2" in message
    assert "GBK" in message and "--encoding" in message
    [example] = read_examples(path, encoding="gbk")
    assert (example.text, example.label) == ("中文文本", "标签")


def test_gbk_bytes_only(tmp_path):
    path = tmp_path / "gbk.csv"
    path.write_bytes("中文文本,标签".encode("gbk"))
    message = _error(read_text, path)
    assert f"{path}:1" in message and "GBK" in message and "--encoding" in message
    assert read_text(path, encoding="gbk") == "中文文本,标签"


def test_non_utf8_non_gbk_has_no_gbk_hint(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"ok\n\xff\xff\xff\n")
    message = _error(read_text, path)
    assert f"{path}:2" in message and "GBK" not in message
    assert re.search(r"0xff", message)


def test_unknown_encoding(tmp_path):
    path = write_csv(tmp_path / "a.csv", [("好", "good")])
    message = _error(read_examples, path, encoding="no-such-codec")
    assert str(path) in message and "no-such-codec" in message


def test_multiline_quoted_field_keeps_physical_line_numbers(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text('text,label\n"第一行\n第二行",good\n好,\n', encoding="utf-8")
    message = _error(read_examples, path)
    assert f"{path}:4" in message and "field 'label'" in message
    path.write_text('text,label\n"第一行\n第二行",good\n好,bad\n', encoding="utf-8")
    assert [e.text for e in read_examples(path)] == ["第一行\n第二行", "好"]


@pytest.mark.parametrize("suffix, delimiter", [(".csv", ","), (".tsv", "\t")])
def test_long_text_field_reads(tmp_path, suffix, delimiter):
    """Long documents are what head/tail truncation is for; a CSV/TSV field over the csv module's
    default 131072-character limit must read like the same text in JSONL does."""
    long_text = "长" * 200_000
    path = write_csv(tmp_path / f"long{suffix}", [(long_text, "good"), ("短", "bad")], delimiter=delimiter)
    examples = read_examples(path)
    assert len(examples[0].text) == 200_000 and examples[1].text == "短"


def test_lines_end_at_line_feeds_only(tmp_path):
    """U+2028, U+0085, a form feed or a lone CR inside a JSON string or a text is a character, not a line end."""
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "一\u2028二", "label": "a"}\r\n{"text": "三\u0085四", "label": "b"}\n', encoding="utf-8")
    examples = read_examples(path)
    assert [(e.text, e.label, e.where) for e in examples] == [
        ("一\u2028二", "a", f"{path}:1"),
        ("三\u0085四", "b", f"{path}:2"),
    ]
    txt = tmp_path / "a.txt"
    txt.write_text("甲\u2028乙\r丙\x0c丁\r\n戊\n", encoding="utf-8")
    assert [e.text for e in read_examples(txt, label_column=None)] == ["甲\u2028乙\r丙\x0c丁", "戊"]


@pytest.mark.parametrize(
    "label, message",
    [
        ('"nan"', "expected a finite number, got 'nan'"),
        ('"inf"', "expected a finite number, got 'inf'"),
        ("1e400", "expected a finite number, got inf"),  # JSON's 1e400 parses as infinity
        ('"abc"', "expected a number, got 'abc'"),
        ("true", "expected a number, got true or false"),
        ("[1, 2]", "expected a number, got a list"),
    ],
)
def test_regression_labels_must_be_finite_numbers(tmp_path, label, message):
    path = tmp_path / "r.jsonl"
    path.write_text('{"text": "好", "label": 1.5}\n{"text": "坏", "label": ' + label + "}\n", encoding="utf-8")
    error = _error(read_examples, path, label_type="float")
    assert error.startswith(f"{path}:2 (field 'label'): ") and error.endswith(message)


@pytest.mark.parametrize(
    "label, kind", [('["a", "b"]', "a list"), ('{"x": 1}', "an object"), ("false", "true or false")]
)
def test_a_class_label_that_is_a_list_or_an_object_is_an_error(tmp_path, label, kind):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "好", "label": "pos"}\n{"text": "坏", "label": ' + label + "}\n", encoding="utf-8")
    error = _error(read_examples, path)
    assert error == f"{path}:2 (field 'label'): expected a string or a number, got {kind}"


def test_predict_reads_standard_input_at_line_feeds_and_names_a_bad_byte(monkeypatch):
    import io
    import sys

    from plmkit.api import _read_predict_input

    def stdin(data: bytes):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))

    stdin("一\r二\u2028三\r\n四\n".encode())
    assert [e.text for e in _read_predict_input("-", False, "utf-8", "text", "text_pair")] == ["一\r二\u2028三", "四"]
    stdin("好\n".encode() + "坏".encode("gbk") + b"\n")
    with pytest.raises(DataError, match=r"^<stdin>:2: not valid utf-8 \(byte 0xbb\); pass --encoding gbk$"):
        _read_predict_input("-", False, "utf-8", "text", "text_pair")
    stdin("坏\n".encode("gbk"))
    assert [e.text for e in _read_predict_input("-", False, "gbk", "text", "text_pair")] == ["坏"]
    stdin("好\n坏\x00的\n".encode())  # a NUL byte: refused as in a file
    with pytest.raises(DataError, match=r"^<stdin>:2: a NUL character \(byte 0x00\)"):
        list(_read_predict_input("-", False, "utf-8", "text", "text_pair"))


# --- reading as the examples are taken (predict streams) ----------------------------------------------------------


def test_iter_examples_reads_as_they_are_taken(tmp_path):
    """The examples before a bad line come out before its error; a file that is not there, or of an unknown
    type, is an error at the call, before any example is asked for."""
    from plmkit.data.readers import iter_examples

    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "一"}\n{"text": "二"}\n\n{"text": 三}\n', encoding="utf-8")
    examples = iter_examples(path, label_column=None)
    assert [next(examples).text, next(examples).text] == ["一", "二"]
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:4: not valid JSON"):
        next(examples)
    with pytest.raises(DataError, match="not found"):
        iter_examples(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="unknown file type"):
        iter_examples(tmp_path / "a.xlsx")
    with pytest.raises(DataError, match="unknown encoding"):
        iter_examples(path, encoding="no-such-codec")


def test_a_bad_byte_after_a_bom_names_its_line_and_file_offset(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("text,label\n好,pos\n".encode("utf-8-sig") + b"\xff,neg\n")
    message = _error(read_examples, path)
    assert message.startswith(f"{path}:3: not valid utf-8 (byte 0xff at offset {len(path.read_bytes()) - 6})")


def test_utf16_reads_whole_and_gives_the_same_examples(tmp_path):
    """UTF-16's line feed is two bytes: such a file is decoded whole rather than cut at the byte 0x0a."""
    path = tmp_path / "a.csv"
    path.write_text("text,label\n好棒,pos\r\n\u010a差,neg\n", encoding="utf-16")  # U+010A: a 0x0a byte in UTF-16
    examples = read_examples(path, encoding="utf-16")
    assert [(e.text, e.label, e.where) for e in examples] == [
        ("好棒", "pos", f"{path}:2"),
        ("\u010a差", "neg", f"{path}:3"),
    ]

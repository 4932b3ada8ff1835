"""Extractive question answering data: SQuAD v1.1 / v2.0 and CMRC 2018 JSON (one shape), and JSONL.

JSON: {"data": [{"paragraphs": [{"context": ..., "qas": [{"id", "question", "answers": [{"text",
"answer_start"}], "is_impossible" (v2)}]}]}]}. JSONL: one {"id", "question", "context", "answers":
[{"text", "answer_start"}]} a line. Every answer is checked against its context: its text must be
there, at `answer_start`; an error names the file, the question (id and position) and the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plmkit.data.readers import iter_lines, read_text
from plmkit.errors import DataError


@dataclass(frozen=True)
class QARecord:
    id: str
    question: str
    context: str
    # (start character, text) of each gold answer; empty: no answer (SQuAD 2.0); None: unlabelled
    answers: tuple[tuple[int, str], ...] | None = None


def _text(obj: dict, key: str, path: str, where: str, line: int | None) -> str:
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, str):
        problem = "missing" if not isinstance(obj, dict) or key not in obj else f"not a string ({value!r})"
        raise DataError(f"{where}: {key} is {problem}", path=path, line=line, field=key)
    return value


def _answers(qa: dict, context: str, qid: str, path: str, where: str, line: int | None) -> tuple[tuple[int, str], ...]:
    if qa.get("is_impossible") is True:
        return ()
    answers = qa.get("answers")
    if not isinstance(answers, list):
        raise DataError(f"{where}: answers is missing or not a list", path=path, line=line, field="answers")
    out = []
    for n, answer in enumerate(answers):
        at = f"{where}, answers[{n}]"
        text = _text(answer, "text", path, at, line)
        start = answer.get("answer_start") if isinstance(answer, dict) else None
        field = f"answers[{n}].answer_start"
        if not isinstance(start, int) or isinstance(start, bool):
            raise DataError(f"{at}: answer_start is missing or not an integer ({start!r})", path, line, field)
        if not text:
            raise DataError(f"{at}: text is empty", path, line, f"answers[{n}].text")
        if not 0 <= start <= len(context) - len(text):
            raise DataError(
                f"{at}: answer_start {start} is out of range for an answer of {len(text)} characters in a "
                f"context of {len(context)}",
                path,
                line,
                field,
            )
        if context[start : start + len(text)] != text:
            raise DataError(
                f"{at}: answer text {text!r} is not at answer_start {start} "
                f"(the context there reads {context[start : start + len(text)]!r})",
                path,
                line,
                field,
            )
        out.append((start, text))
    return tuple(out)


def read_squad_json(path: str | Path, encoding: str = "utf-8") -> list[QARecord]:
    """SQuAD v1.1 / v2.0 or CMRC 2018 JSON -> records in file order."""
    path = str(path)
    text = read_text(path, encoding)  # not found, not decodable (with the line), empty: each a clear error
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON: {e.msg} (column {e.colno})", path=path, line=e.lineno) from None
    articles = data.get("data") if isinstance(data, dict) else None
    if not isinstance(articles, list):
        raise DataError("expected {'data': [{'paragraphs': [...]}, ...]} (SQuAD / CMRC 2018)", path, field="data")
    out: list[QARecord] = []
    for i, article in enumerate(articles):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise DataError(f"data[{i}]: paragraphs is missing or not a list", path, field="paragraphs")
        for j, paragraph in enumerate(paragraphs):
            where = f"data[{i}].paragraphs[{j}]"
            context = _text(paragraph, "context", path, where, None)
            qas = paragraph.get("qas")
            if not isinstance(qas, list):
                raise DataError(f"{where}: qas is missing or not a list", path, field="qas")
            for k, qa in enumerate(qas):
                at = f"{where}.qas[{k}]"
                qid = str(qa["id"]) if isinstance(qa, dict) and "id" in qa else None
                if qid is None:
                    raise DataError(f"{at}: id is missing", path, field="id")
                at = f"question {qid!r} ({at})"
                question = _text(qa, "question", path, at, None)
                out.append(QARecord(qid, question, context, _answers(qa, context, qid, path, at, None)))
    if not out:
        raise DataError("no questions (every paragraph's qas is empty)", path=path, field="qas")
    return out


def iter_qa_jsonl(path: str | Path, encoding: str = "utf-8", labelled: bool = True) -> Iterator[QARecord]:
    """One {"id", "question", "context", "answers"} a line, read as the records are taken (memory does not
    grow with the file); `id` defaults to the line number; without `labelled`, answers are not read. A
    file that is not there, a directory or an unknown encoding is an error at once; the rest when reading
    reaches the line, and "no questions" at the end."""
    return _qa_jsonl(str(path), iter_lines(path, encoding), labelled)


def _qa_jsonl(path: str, raw_lines: Iterator[str], labelled: bool) -> Iterator[QARecord]:
    found = False
    for n, line in enumerate(raw_lines, 1):
        line = line.removesuffix("\n").removesuffix("\r")
        if not line.strip():
            continue
        try:
            obj: Any = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"not valid JSON: {e}", path=path, line=n) from None
        qid = str(obj.get("id", n)) if isinstance(obj, dict) else str(n)
        at = f"question {qid!r}"
        context = _text(obj, "context", path, at, n)
        question = _text(obj, "question", path, at, n)
        answers = _answers(obj, context, qid, path, at, n) if labelled else None
        found = True
        yield QARecord(qid, question, context, answers)
    if not found:
        raise DataError("no questions", path=path)


def read_qa_jsonl(path: str | Path, encoding: str = "utf-8", labelled: bool = True) -> list[QARecord]:
    """One {"id", "question", "context", "answers"} a line; `id` defaults to the line number; without
    `labelled`, answers are not read."""
    return list(iter_qa_jsonl(path, encoding, labelled))


def read_qa(path: str | Path, encoding: str = "utf-8", labelled: bool = True) -> list[QARecord]:
    """By extension: .jsonl one question a line, anything else SQuAD-shaped JSON."""
    if str(path).lower().endswith(".jsonl"):
        return read_qa_jsonl(path, encoding, labelled)
    records = read_squad_json(path, encoding)
    return records if labelled else [QARecord(r.id, r.question, r.context) for r in records]

"""Readers: CSV, TSV, JSONL (text[, text_pair][, label]) and plain text, one example a line.

Every error names the file, the line and the field. Non-UTF-8 input is caught at the
first bad byte; a file that decodes as GB18030 (GBK is a subset, common for Chinese
CSVs) is named as such, with the option that reads it.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from plmkit.data.examples import Example
from plmkit.errors import DataError

csv.field_size_limit(2**31 - 1)  # long documents are what truncation is for; the default cap is 128 KiB

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".txt": "text"}


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path=str(path))
    if path.is_dir():
        raise DataError("is a directory, expected a file", path=str(path))
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig" if encoding.lower().replace("-", "") == "utf8" else encoding)
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        hint = ""
        try:
            raw.decode("gb18030")
            hint = "; it decodes as GBK/GB18030: pass --encoding gbk (or encoding=gbk)"
        except UnicodeDecodeError:
            pass
        raise DataError(
            f"not valid {encoding} (byte 0x{raw[e.start]:02x} at offset {e.start}){hint}", path=str(path), line=line
        ) from None
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r}", path=str(path)) from None
    if not text.strip():
        raise DataError("file is empty", path=str(path))
    return text


def lines(text: str) -> list[str]:
    """`text` cut at line feeds only, a CRLF's carriage return dropped. `str.splitlines` also cuts at
    U+2028, U+0085, form feeds and lone carriage returns, which a JSON string or a text may hold."""
    out = text.split("\n")
    if out[-1] == "":
        out.pop()
    return [line[:-1] if line.endswith("\r") else line for line in out]


def _records(path: Path, text: str, fmt: str) -> list[tuple[int, dict]]:
    """(line number, {column: value}) per record."""
    if fmt == "jsonl":
        out = []
        for n, line in enumerate(lines(text), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"not valid JSON: {e.msg}", path=str(path), line=n) from None
            if not isinstance(obj, dict):
                raise DataError("expected a JSON object per line", path=str(path), line=n)
            out.append((n, obj))
        return out
    if fmt == "text":
        return [(n, {"text": line}) for n, line in enumerate(lines(text), 1) if line.strip()]
    reader = csv.reader(io.StringIO(text), delimiter="," if fmt == "csv" else "\t")
    try:
        header = next(reader)
    except StopIteration:
        raise DataError("file is empty", path=str(path)) from None
    header = [h.strip() for h in header]
    out = []
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataError(
                    f"{len(row)} columns, but the header has {len(header)} ({', '.join(header)})",
                    path=str(path),
                    line=reader.line_num,
                )
            out.append((reader.line_num, dict(zip(header, row))))
    except csv.Error as e:
        raise DataError(f"malformed {fmt.upper()}: {e}", path=str(path), line=reader.line_num) from None
    return out


def _column(path: Path, records: list[tuple[int, dict]], column: str, fmt: str) -> None:
    if fmt in ("csv", "tsv") and records and column not in records[0][1]:
        raise DataError(
            f"no column {column!r}; the header has: {', '.join(records[0][1])}", path=str(path), line=1, field=column
        )


def read_examples(
    path: str | Path,
    *,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str | None = "label",
    label_type: str = "class",  # class | float
    encoding: str = "utf-8",
) -> list[Example]:
    """Read labelled (label_column set) or unlabelled examples. `text_pair_column` set means
    pairs are required."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"unknown file type {path.suffix!r}; expected one of {', '.join(FORMATS)}", path=str(path))
    if fmt == "text" and (label_column or text_pair_column):
        raise DataError("a plain-text file holds texts only; labelled data needs CSV, TSV or JSONL", path=str(path))
    records = _records(path, read_text(path, encoding), fmt)
    if not records:
        raise DataError("file has no examples", path=str(path))
    columns = (
        [text_column] + ([text_pair_column] if text_pair_column else []) + ([label_column] if label_column else [])
    )
    for column in columns:
        _column(path, records, column, fmt)
    examples = []
    for line, rec in records:
        where = f"{path}:{line}"
        values = {}
        for column in columns:
            value = rec.get(column)
            if value is None or (isinstance(value, str) and not value.strip()):
                what = "missing" if value is None else "empty"
                raise DataError(f"{what} {column!r}", path=str(path), line=line, field=column)
            values[column] = value
        text, pair = str(values[text_column]), (str(values[text_pair_column]) if text_pair_column else None)
        label = None
        if label_column:
            raw = values[label_column]
            if isinstance(raw, (list, dict, bool)):  # JSON: a class is a string or a number, a score a number
                kind = {list: "a list", dict: "an object", bool: "true or false"}[type(raw)]
                wanted = "a number" if label_type == "float" else "a string or a number"
                raise DataError(f"expected {wanted}, got {kind}", path=str(path), line=line, field=label_column)
            if label_type == "float":
                try:
                    label = float(raw)
                except (TypeError, ValueError):
                    raise DataError(
                        f"expected a number, got {raw!r}", path=str(path), line=line, field=label_column
                    ) from None
                if not math.isfinite(label):
                    raise DataError(
                        f"expected a finite number, got {raw!r}", path=str(path), line=line, field=label_column
                    )
            else:
                label = raw.strip() if isinstance(raw, str) else str(raw)
        examples.append(Example(text=text, text_pair=pair, label=label, where=where))
    return examples


def read_corpus_file(path: str | Path, encoding: str = "utf-8") -> list[str]:
    """A plain-text corpus: one document or sentence a line, blank lines skipped."""
    return [line.strip() for line in lines(read_text(path, encoding)) if line.strip()]

"""Readers: CSV, TSV, JSONL (text[, text_pair][, label]) and plain text, one example a line.

Every error names the file, the line and the field. Non-UTF-8 input is caught at the
first bad byte; a file that decodes as GB18030 (GBK is a subset, common for Chinese
CSVs) is named as such, with the option that reads it.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path

from plmkit.data.examples import Example
from plmkit.errors import DataError

csv.field_size_limit(2**31 - 1)  # long documents are what truncation is for; the default cap is 128 KiB

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".txt": "text"}


# what an error about a file that is not valid in its encoding adds when the whole file decodes as GB18030
GBK_HINT = "; it decodes as GBK/GB18030: pass --encoding gbk (or encoding=gbk)"


def is_utf8(encoding: str) -> bool:
    """Whether `encoding` names UTF-8 as `--encoding` spells it (utf-8, UTF8): the default, read with a BOM
    skipped, and the one a GBK hint is given for."""
    return encoding.lower().replace("-", "") == "utf8"


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    path = Path(path)
    _is_file(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig" if is_utf8(encoding) else encoding)
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        hint = ""
        try:
            raw.decode("gb18030")
            hint = GBK_HINT
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


def _is_file(path: Path) -> None:
    if not path.exists():
        raise DataError("file not found", path=str(path))
    if path.is_dir():
        raise DataError("is a directory, expected a file", path=str(path))


def _decodes(path: Path, encoding: str) -> bool:
    """Whether the whole file decodes in `encoding` (line by line: as little in memory as `iter_lines`)."""
    try:
        with open(path, "rb") as f:
            for raw in f:
                raw.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def iter_lines(path: str | Path, encoding: str = "utf-8") -> Iterator[str]:
    """The lines of a text file one at a time, each with its line feed (the last one may have none): the
    file is read a line at a time, so memory does not grow with its size. The errors of `read_text`, the
    same words: not found, a directory, an unknown encoding (these three before the first line), a bad byte
    (its line and offset, and the GBK hint when the file decodes as GB18030; raised when reading reaches
    it) and an empty file (raised at the end). Lines end at line feeds only, as `lines` cuts them; an
    encoding in which a line feed is not the byte 0x0a (UTF-16, UTF-32) is decoded whole instead."""
    path = Path(path)
    _is_file(path)
    utf8 = is_utf8(encoding)
    codec = "utf-8" if utf8 else encoding
    try:
        byte_lines = "\n".encode(codec) == b"\n"
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r}", path=str(path)) from None
    if not byte_lines:  # a line feed is two or four bytes, or a BOM leads: no cutting at 0x0a
        return _feed_lines(read_text(path, encoding))
    return _iter_byte_lines(path, encoding, codec, utf8)


def _feed_lines(text: str) -> Iterator[str]:
    """`text` cut after each line feed (only there), the line feeds kept."""
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def _iter_byte_lines(path: Path, encoding: str, codec: str, utf8: bool) -> Iterator[str]:
    offset, seen = 0, False  # bytes before this line; whether a line had more than white space
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            skip = 3 if n == 1 and utf8 and raw.startswith(b"\xef\xbb\xbf") else 0  # a UTF-8 BOM: not text
            try:
                line = raw[skip:].decode(codec)
            except UnicodeDecodeError as e:
                at = offset + skip + e.start
                hint = ""
                if _decodes(path, "gb18030"):
                    hint = GBK_HINT
                raise DataError(
                    f"not valid {encoding} (byte 0x{raw[skip + e.start]:02x} at offset {at}){hint}",
                    path=str(path),
                    line=n,
                ) from None
            offset += len(raw)
            if not seen and line.strip():
                seen = True
            yield line
    if not seen:
        raise DataError("file is empty", path=str(path))


def _records(path: Path, raw_lines: Iterable[str], fmt: str) -> Iterator[tuple[int, dict]]:
    """(line number, {column: value}) per record, as `raw_lines` (each with its line feed) are read."""
    if fmt in ("jsonl", "text"):
        for n, line in enumerate(raw_lines, 1):
            line = line.removesuffix("\n").removesuffix("\r")
            if not line.strip():
                continue
            if fmt == "text":
                yield n, {"text": line}
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"not valid JSON: {e.msg}", path=str(path), line=n) from None
            if not isinstance(obj, dict):
                raise DataError("expected a JSON object per line", path=str(path), line=n)
            yield n, obj
        return
    reader = csv.reader(raw_lines, delimiter="," if fmt == "csv" else "\t")
    try:
        header = next(reader)
    except StopIteration:
        raise DataError("file is empty", path=str(path)) from None
    except csv.Error as e:
        raise DataError(f"malformed {fmt.upper()}: {e}", path=str(path), line=reader.line_num) from None
    header = [h.strip() for h in header]
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
            yield reader.line_num, dict(zip(header, row))
    except csv.Error as e:
        raise DataError(f"malformed {fmt.upper()}: {e}", path=str(path), line=reader.line_num) from None


def _column(path: Path, record: dict, column: str, fmt: str) -> None:
    if fmt in ("csv", "tsv") and column not in record:
        raise DataError(
            f"no column {column!r}; the header has: {', '.join(record)}", path=str(path), line=1, field=column
        )


def iter_examples(
    path: str | Path,
    *,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str | None = "label",
    label_type: str = "class",  # class | float
    encoding: str = "utf-8",
) -> Iterator[Example]:
    """`read_examples` one example at a time: the file is read as the examples are taken, so memory does not
    grow with its size. The same checks and errors; those about the file as a whole (its type, not found,
    a directory, an unknown encoding) come at once, the others when reading reaches their line, and "file
    has no examples" at the end."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"unknown file type {path.suffix!r}; expected one of {', '.join(FORMATS)}", path=str(path))
    if fmt == "text" and (label_column or text_pair_column):
        raise DataError("a plain-text file holds texts only; labelled data needs CSV, TSV or JSONL", path=str(path))
    columns = (
        [text_column] + ([text_pair_column] if text_pair_column else []) + ([label_column] if label_column else [])
    )
    records = _records(path, iter_lines(path, encoding), fmt)
    return _examples(path, records, fmt, columns, text_column, text_pair_column, label_column, label_type)


def _examples(
    path: Path,
    records: Iterator[tuple[int, dict]],
    fmt: str,
    columns: list[str],
    text_column: str,
    text_pair_column: str | None,
    label_column: str | None,
    label_type: str,
) -> Iterator[Example]:
    first = True
    for line, rec in records:
        if first:
            for column in columns:
                _column(path, rec, column, fmt)
            first = False
        where = f"{path}:{line}"
        values = {}
        for column in columns:
            value = rec.get(column)
            if value is None or (isinstance(value, str) and not value.strip()):
                what = "missing" if value is None else "empty"
                raise DataError(f"{what} {column!r}", path=str(path), line=line, field=column)
            if isinstance(value, str) and "\x00" in value:  # no text holds one: a binary file, or UTF-16 read as UTF-8
                raise DataError(
                    "a NUL character (byte 0x00): a binary file, or UTF-16 text (pass --encoding utf-16)",
                    path=str(path),
                    line=line,
                    field=column,
                )
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
        yield Example(text=text, text_pair=pair, label=label, where=where)
    if first:
        raise DataError("file has no examples", path=str(path))


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
    pairs are required. `iter_examples` reads them one at a time."""
    return list(
        iter_examples(
            path,
            text_column=text_column,
            text_pair_column=text_pair_column,
            label_column=label_column,
            label_type=label_type,
            encoding=encoding,
        )
    )


def iter_corpus_file(path: str | Path, encoding: str = "utf-8") -> Iterator[str]:
    """A plain-text corpus a line at a time: one document or sentence a line, stripped, blank lines skipped.
    The errors of `iter_lines`, when it raises them."""
    return (text for text in (line.strip() for line in iter_lines(path, encoding)) if text)


def read_corpus_file(path: str | Path, encoding: str = "utf-8") -> list[str]:
    """`iter_corpus_file`'s lines as a list (read a line at a time: the list of lines is all it holds)."""
    return list(iter_corpus_file(path, encoding))

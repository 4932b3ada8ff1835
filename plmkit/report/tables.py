"""Reports as data: a title and a list of blocks, rendered to Markdown and to a standalone HTML page.

A block is (kind, payload):
    ("heading", text)            a section heading
    ("text", text)               a paragraph; `backtick spans` are code; a blank line starts a new paragraph
    ("table", (rows, columns))   rows: dicts; columns: (key, header) pairs
    ("image", (path, alt))       path relative to the report's folder
    ("code", text)               preformatted text
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plmkit.io import atomic_write_text

MISSING = "–"
BLOCK_KINDS = ("heading", "text", "table", "image", "code")

Columns = Sequence[tuple[str, str]]


@dataclass
class Report:
    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: "–" for None, ints as ints, floats with `digits` decimals, anything else as str()."""
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else str(value)
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def numeric_columns(rows: Sequence[dict], columns: Columns) -> list[bool]:
    """For each column, whether its present values are all numbers (and there is at least one)."""
    out = []
    for key, _ in columns:
        present = [r.get(key) for r in rows if r.get(key) is not None]
        out.append(bool(present) and all(_is_number(v) for v in present))
    return out


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def markdown_table(rows: Sequence[dict], columns: Columns) -> str:
    """A pipe table; numeric columns right-aligned; a missing key or None shows as "–"."""
    numeric = numeric_columns(rows, columns)
    lines = [
        "| " + " | ".join(_md_cell(header) for _, header in columns) + " |",
        "| " + " | ".join("---:" if num else "---" for num in numeric) + " |",
    ]
    lines += ["| " + " | ".join(_md_cell(fmt(r.get(key))) for key, _ in columns) + " |" for r in rows]
    return "\n".join(lines)


def _fence(text: str) -> str:
    """A backtick fence longer than any backtick run inside `text`."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _check_kind(kind: str) -> None:
    if kind not in BLOCK_KINDS:
        raise ValueError(f"unknown report block kind {kind!r}; known kinds: {', '.join(BLOCK_KINDS)}")


def _markdown_block(kind: str, payload: Any) -> str:
    _check_kind(kind)
    if kind == "heading":
        return f"## {payload}"
    if kind == "text":
        return str(payload)
    if kind == "table":
        rows, columns = payload
        return markdown_table(rows, columns)
    if kind == "image":
        src, alt = payload
        src = Path(src).as_posix()
        if re.search(r"[\s()]", src):
            src = f"<{src}>"
        return f"![{alt}]({src})"
    code = str(payload).rstrip("\n")
    fence = _fence(code)
    return f"{fence}\n{code}\n{fence}"


def to_markdown(report: Report) -> str:
    parts = [f"# {report.title}"] + [_markdown_block(kind, payload) for kind, payload in report.blocks]
    return "\n\n".join(parts) + "\n"


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       max-width: 64rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.5; color: #222; }
h1, h2 { line-height: 1.2; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #bbb; padding: 0.3rem 0.6rem; text-align: left; }
th { background: #f2f2f2; }
th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; }
figure { margin: 1rem 0; }
figcaption { color: #555; font-size: 0.9em; }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; background: #f4f4f4;
       padding: 0 0.2em; border-radius: 3px; }
pre { background: #f4f4f4; padding: 0.8rem; overflow-x: auto; }
pre code { padding: 0; }
""".strip()


def inline_html(text: str) -> str:
    """Escape text for HTML, rendering `backtick spans` as <code>; an unmatched backtick stays literal."""
    parts = re.split(r"`([^`]+)`", text)  # plain, code, plain, code, ..., plain
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts))


def html_table(rows: Sequence[dict], columns: Columns) -> str:
    numeric = numeric_columns(rows, columns)
    cls = [' class="num"' if num else "" for num in numeric]
    head = "".join(f"<th{c}>{html.escape(header)}</th>" for c, (_, header) in zip(cls, columns))
    body = [
        "<tr>" + "".join(f"<td{c}>{html.escape(fmt(r.get(key)))}</td>" for c, (key, _) in zip(cls, columns)) + "</tr>"
        for r in rows
    ]
    return (
        "<table>\n<thead>\n<tr>"
        + head
        + "</tr>\n</thead>\n<tbody>\n"
        + "".join(line + "\n" for line in body)
        + "</tbody>\n</table>"
    )


def _html_block(kind: str, payload: Any) -> str:
    _check_kind(kind)
    if kind == "heading":
        return f"<h2>{inline_html(str(payload))}</h2>"
    if kind == "text":
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", str(payload)) if p.strip()]
        return "\n".join(f"<p>{inline_html(p)}</p>" for p in paragraphs)
    if kind == "table":
        rows, columns = payload
        return html_table(rows, columns)
    if kind == "image":
        src, alt = payload
        return (
            f'<figure><img src="{html.escape(Path(src).as_posix(), quote=True)}" alt="{html.escape(alt, quote=True)}">'
            f"<figcaption>{html.escape(alt)}</figcaption></figure>"
        )
    code = str(payload).rstrip("\n")
    return f"<pre><code>{html.escape(code)}</code></pre>"


def to_html(report: Report) -> str:
    title = html.escape(report.title)
    body = "\n".join(_html_block(kind, payload) for kind, payload in report.blocks)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
        f"<style>\n{CSS}\n</style>\n</head>\n<body>\n<h1>{title}</h1>\n{body}\n</body>\n</html>\n"
    )


def write_report(report: Report, out_dir: str | Path, name: str = "report") -> tuple[Path, Path]:
    """Write <name>.md and <name>.html into out_dir, each atomically; returns their paths."""
    markdown, page = to_markdown(report), to_html(report)  # render both before writing either
    out_dir = Path(out_dir)
    md_path, html_path = out_dir / f"{name}.md", out_dir / f"{name}.html"
    atomic_write_text(md_path, markdown)
    atomic_write_text(html_path, page)
    return md_path, html_path

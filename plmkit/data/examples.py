"""The one in-memory record every reader produces."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    text: str
    text_pair: str | None = None
    label: str | float | None = None
    where: str = ""  # "file:line", for error messages

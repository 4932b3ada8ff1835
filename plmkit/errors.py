"""Errors a user can act on. Each names where the problem is: file, line, field."""

from __future__ import annotations


class PlmkitError(Exception):
    """Base of every error plmkit raises on bad input or configuration."""


class DataError(PlmkitError):
    def __init__(self, message: str, path: str | None = None, line: int | None = None, field: str | None = None):
        where = ""
        if path is not None:
            where = str(path) + (f":{line}" if line is not None else "")
            if field is not None:
                where += f" (field {field!r})"
            where += ": "
        elif field is not None:
            where = f"field {field!r}: "
        super().__init__(where + message)
        self.path, self.line, self.field = path, line, field


class ConfigError(PlmkitError):
    pass


class ModelError(PlmkitError):
    pass


class TrainingError(PlmkitError):
    pass

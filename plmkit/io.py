"""Atomic writes: a reader never sees a half-written file or directory.

Each write goes to a temporary `.NAME.PID.XXXX.tmp` beside its target and is renamed into place. A
process killed mid-write leaves its temporary behind; the next write of the same name removes those
whose process (PID) is gone, so a later run cleans what an earlier one could not."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from plmkit import faults


def plain_mode(directory: bool = False) -> int:
    """The mode a plain open() or mkdir() would give under the current umask (mkstemp and
    mkdtemp make private 0600 / 0700 files and folders)."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def temporary_prefix(name: str) -> str:
    """`.NAME.PID.`: what this process's temporaries for `name` start with (they end with `.tmp`)."""
    return f".{name}.{os.getpid()}."


def sweep_stale(parent: str | Path, name: str) -> list[Path]:
    """Remove the temporaries for `name` in `parent` (`.NAME.PID.*.tmp`) whose process is gone: what a
    kill mid-write left. A live process's are kept (it may be writing). Returns what was removed."""
    parent, prefix, removed = Path(parent), f".{name}.", []
    if not parent.is_dir():
        return removed
    for entry in parent.iterdir():
        if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
            continue
        pid, _, rest = entry.name[len(prefix) :].partition(".")
        if not (pid.isdigit() and rest) or _alive(int(pid)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path.name), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, plain_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a directory under a temporary name, then swap it in for `path`.

    The old directory stays in place until the new one is complete; if the process
    dies between the two renames, `path.old` still holds the previous version.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path.parent, path.name)
    tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix(path.name), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.chmod(tmp, plain_mode(directory=True))
    old = path.with_name(path.name + ".old")
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        faults.point("swap")
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def existing_dir(path: str | Path) -> Path | None:
    """`path`, or its `.old` twin left by an interrupted swap, or None."""
    path = Path(path)
    if path.is_dir():
        return path
    old = path.with_name(path.name + ".old")
    return old if old.is_dir() else None

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
from plmkit.errors import PlmkitError


def plain_mode(directory: bool = False) -> int:
    """The mode a plain open() or mkdir() would give under the current umask (mkstemp and
    mkdtemp make private 0600 / 0700 files and folders)."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def cache_root() -> Path:
    """$PLMKIT_CACHE, or ~/.cache/plmkit."""
    return Path(os.environ.get("PLMKIT_CACHE") or Path.home() / ".cache" / "plmkit")


class WriteError(PlmkitError):
    """The file system refused a write: full, read-only, not permitted, or over a size limit."""


def write_failure(path: str | Path, error: BaseException) -> WriteError | None:
    """Why writing `path` failed, when the file system is the cause; None otherwise. Call it before a failed
    write's temporary is removed: a full disk has room again afterwards. Libraries that write themselves
    (torch.save, safetensors) raise their own errors without an errno, so the file system is asked too."""
    import errno

    reasons = {
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EFBIG: "file too large (a file size limit)",
    }
    reason = reasons.get(getattr(error, "errno", None))
    if reason is None and isinstance(error, Exception):
        probe = Path(path)
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            fs = os.statvfs(probe)
        except OSError:
            return None
        if fs.f_flag & os.ST_RDONLY:
            reason = reasons[errno.EROFS]
        elif fs.f_bavail * fs.f_frsize < 1 << 20:
            reason = f"{reasons[errno.ENOSPC]} ({fs.f_bavail * fs.f_frsize // 1024} KiB free)"
    if reason is None:
        return None
    return WriteError(f"{path}: cannot write it: {reason}; nothing was replaced (what was there before is kept)")


@contextmanager
def writing(path: str | Path, tmp: str | Path | None = None) -> Iterator[None]:
    """Turn a failed write under it into a WriteError naming `path` where the file system is the cause. With
    `tmp`, the write's temporary file or folder: any failure (an interrupt too) removes it first."""
    try:
        yield
    except BaseException as e:
        failure = None if isinstance(e, WriteError) else write_failure(path, e)  # asked before tmp frees room
        if tmp is not None:
            remove(tmp)
        if failure is None:
            raise
        raise failure from None


def remove(path: str | Path) -> None:
    """Remove a file or a folder (not what a link points to); nothing when it is not there."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


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
        remove(entry)
        removed.append(entry)
    return removed


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(path.parent, path.name)
        fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path.name), suffix=".tmp", dir=path.parent)
        os.close(fd)
    with writing(path, tmp):
        yield Path(tmp)
        os.chmod(tmp, plain_mode())
        faults.point("output.rename")
        os.replace(tmp, path)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the system or file
    system cannot, and nothing was changed."""
    import ctypes
    import errno

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a directory under a temporary name, then swap it in for `path`.

    Where the system can, the new directory and the old one trade places in one step (RENAME_EXCHANGE), so
    `path` always holds a complete version. Elsewhere the old one is renamed to `path.old` first; a process
    dying between the two renames leaves the previous version there, and the next write of `path` (or
    `existing_dir`) finds it.
    """
    path = Path(path)
    old = path.with_name(path.name + ".old")
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(path.parent, path.name)
        if old.is_dir() and not path.exists():  # a swap interrupted between its renames: put the old one back
            os.replace(old, path)
        shutil.rmtree(old, ignore_errors=True)  # one interrupted after them: the new one is in place
        tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix(path.name), suffix=".tmp", dir=path.parent))
    with writing(path, tmp):
        yield tmp
    os.chmod(tmp, plain_mode(directory=True))
    if path.is_dir() and not path.is_symlink() and exchange(tmp, path):
        faults.point("swap")  # the new one is in place; the old one, under the temporary name, goes next
        shutil.rmtree(tmp, ignore_errors=True)
        return
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


class OutputLocked(PlmkitError):
    """Another live process holds the lock on an output."""


@contextmanager
def output_lock(path: str | Path) -> Iterator[None]:
    """Hold `.NAME.lock` beside `path` (an output file or directory) while this run writes it: a second run
    given the same output refuses at once, naming the owner's pid, instead of interleaving its writes.

    The lock is the kernel's (flock), so a killed owner's lock is released with its process; the file holds
    the owner's pid for the message and is removed when the owner finishes. Under `accelerate launch` only
    the main process (RANK 0) takes it: the other ranks write nothing."""
    import fcntl

    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    while True:
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, plain_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputLocked(
                f"{path}: another plmkit run (pid {owner}) is writing it; wait for that run to end or choose "
                "another output"
            ) from None
        try:  # the owner before us may have removed the file between our open and our lock: lock anew
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        try:
            os.unlink(lock)
        finally:
            os.close(fd)

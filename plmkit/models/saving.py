"""The saved model directory: what Hugging Face opens, plus plmkit.json, and a manifest that makes the
save all-or-nothing.

A save writes every file into a private temporary folder, hashes them into `manifest.json` (name ->
size, blake2b), and renames the folder to `.save.commit` inside the model directory: that rename is
the commit. The files are then moved into place one by one, the manifest last. A process killed before
the commit leaves the previous save untouched; one killed after it leaves `.save.commit`, which the next
load or save of the directory finishes moving (roll forward). Loading checks every file the manifest
names, so a mixture of two saves is never read as a model. A file whose hash was checked before, and
which is the same file unchanged since (its device, inode, size, mtime and ctime as they were then), is not
hashed again: $PLMKIT_CACHE/verified.json keeps what was checked.

Shapes (legend in plmkit/models/__init__.py): none; no tensors here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from plmkit import faults
from plmkit.errors import ModelError, PlmkitError
from plmkit.io import atomic_write_json, cache_root, plain_mode, sweep_stale, temporary_prefix, writing

MANIFEST = "manifest.json"
COMMIT = ".save.commit"


def file_digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _read_manifest(path: Path) -> dict[str, dict[str, Any]]:
    try:
        files = json.loads(path.read_text(encoding="utf-8"))["files"]
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{path}: damaged manifest ({e}); save the model again") from None
    return files


def write_manifest(folder: Path, kept: dict[str, dict[str, Any]] | None = None) -> None:
    """`folder/manifest.json`: each file's size and hash, plus the `kept` entries of files written before."""
    files = [f for f in folder.iterdir() if f.is_file() and f.name != MANIFEST]
    written = {f.name: {"size": f.stat().st_size, "blake2b": file_digest(f)} for f in files}
    manifest = {"files": dict(sorted(((kept or {}) | written).items()))}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def finish_commit(path: Path) -> None:
    """Move what an interrupted save had committed (`.save.commit`) into `path`, its manifest last."""
    commit = path / COMMIT
    if not commit.is_dir():
        return
    if not (commit / MANIFEST).is_file():  # never happens: the folder is renamed here only when complete
        shutil.rmtree(commit, ignore_errors=True)
        return
    for f in sorted(commit.iterdir()):
        if f.name != MANIFEST:
            os.chmod(f, plain_mode())  # files written inside the private temporary folder may be private too
            os.replace(f, path / f.name)
            faults.point("save.commit")
    os.chmod(commit / MANIFEST, plain_mode())
    os.replace(commit / MANIFEST, path / MANIFEST)
    shutil.rmtree(commit, ignore_errors=True)


def save_model_dir(
    path: str | Path,
    model=None,
    tokenizer=None,
    extra: dict[str, Any] | None = None,
    files: dict[str, Callable[[Path], None]] | None = None,
) -> None:
    """Save `model` and `tokenizer` (Hugging Face's files), each `extra` NAME -> object as JSON and each
    `files` NAME -> writer(path) into `path`, all or nothing. Without a model, the files already there stay
    and only the given ones are replaced (a feature-mode head saved beside an encoder saved once)."""
    path = Path(path)
    with writing(path):
        path.mkdir(parents=True, exist_ok=True)
        finish_commit(path)  # what a save killed after its commit left
        sweep_stale(path, "save")  # what a save killed before it left
        tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix("save"), suffix=".tmp", dir=path))
    with writing(path, tmp):
        if model is not None:
            model.save_pretrained(tmp, safe_serialization=True)
            faults.point("save.files")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name, write in (files or {}).items():
            write(tmp / name)
            faults.point("save.files")
        for name, obj in (extra or {}).items():
            (tmp / name).write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        if any(f.is_dir() for f in tmp.iterdir()):
            raise ModelError(f"{path}: a saved model directory holds files only")  # never: nothing writes folders
        kept = {n: e for n, e in _read_manifest(path / MANIFEST).items() if (path / n).is_file()}
        write_manifest(tmp, kept)
        os.replace(tmp, path / COMMIT)  # the commit: from here on, the new save is what the directory holds
    finish_commit(path)


def verify_model_dir(path: str | Path) -> None:
    """Finish a committed save that a kill interrupted, then check every file the manifest names (there,
    of its size and hash). A directory without a manifest (a Hugging Face checkpoint) is not checked."""
    path = Path(path)
    if (path / COMMIT).is_dir():
        try:
            finish_commit(path)
        except OSError as e:
            raise ModelError(
                f"{path}: a save was interrupted and cannot be finished here ({e.strerror}); open it where it "
                "can be written once, or save it again"
            ) from None
    checked = Checked()
    for name, entry in _read_manifest(path / MANIFEST).items():
        f = path / name
        if not f.is_file():
            raise ModelError(f"{path}: {name} is missing (the manifest names it); save the model again")
        if f.stat().st_size != entry.get("size") or checked.digest(f) != entry.get("blake2b"):
            raise ModelError(
                f"{path}: {name} is not the file that was saved (its size or hash differs from the manifest's); "
                "it was changed or damaged after saving: save the model again, or remove manifest.json to take the "
                "directory as it is"
            )
    checked.save()


class Checked:
    """The files whose hash was computed before: a file that is the same one, unchanged since (device, inode,
    size, mtime, ctime: any write, rename or replacement sets ctime, which no call of a user's sets), keeps
    the hash it had, so loading a large model does not read it twice. Kept in $PLMKIT_CACHE/verified.json;
    a cache that cannot be read or written only costs the hashing."""

    LIMIT = 256  # files remembered; the oldest are forgotten first

    def __init__(self):
        self.path = cache_root() / "verified.json"
        try:
            self.seen = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(self.seen, dict):
                self.seen = {}
        except (OSError, ValueError):
            self.seen = {}
        self.changed = False

    def digest(self, f: Path) -> str:
        st = f.stat()
        key = str(f.resolve())
        stamp = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        record = self.seen.get(key)
        if isinstance(record, list) and len(record) == 6 and record[:5] == stamp:
            return record[5]
        digest = file_digest(f)
        self.seen.pop(key, None)
        self.seen[key] = [*stamp, digest]  # last in order: the newest
        self.changed = True
        return digest

    def save(self) -> None:
        if not self.changed:
            return
        seen = dict(list(self.seen.items())[-self.LIMIT :])
        try:
            atomic_write_json(self.path, seen)
        except (OSError, PlmkitError):
            pass  # a read-only home or cache: the hashes are computed again next time

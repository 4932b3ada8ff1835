"""Model directories saved all or nothing (plmkit.models.saving), checked at load, and the record of files
already hashed."""

from __future__ import annotations

import errno
import json
import os

import pytest

from plmkit.errors import ModelError
from plmkit.io import WriteError, atomic_path
from plmkit.models import saving
from plmkit.models.saving import MANIFEST, save_model_dir, verify_model_dir


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PLMKIT_CACHE", str(tmp_path / "cache"))


def writer(text: str):
    return lambda path: path.write_text(text, encoding="utf-8")


def saved(tmp_path, **files):
    folder = tmp_path / "model"
    save_model_dir(folder, files={name: writer(text) for name, text in files.items()})
    return folder


def count_hashing(monkeypatch) -> list[str]:
    hashed: list[str] = []
    digest = saving.file_digest

    def counting(path):
        hashed.append(path.name)
        return digest(path)

    monkeypatch.setattr(saving, "file_digest", counting)
    return hashed


def test_a_save_names_every_file_with_its_size_and_hash(tmp_path):
    folder = saved(tmp_path, **{"a.txt": "one", "b.txt": "twenty"})
    files = json.loads((folder / MANIFEST).read_text())["files"]
    assert sorted(files) == ["a.txt", "b.txt"]
    assert files["b.txt"]["size"] == 6
    assert files["a.txt"]["blake2b"] == saving.file_digest(folder / "a.txt")
    verify_model_dir(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt", "b.txt", MANIFEST]


def test_a_file_hashed_once_is_not_hashed_again_while_unchanged(tmp_path, monkeypatch):
    folder = saved(tmp_path, **{"a.txt": "one", "b.txt": "two"})
    hashed = count_hashing(monkeypatch)
    verify_model_dir(folder)
    assert sorted(hashed) == ["a.txt", "b.txt"]
    verify_model_dir(folder)
    verify_model_dir(folder)
    assert sorted(hashed) == ["a.txt", "b.txt"]  # the record answered
    assert (tmp_path / "cache" / "verified.json").is_file()


def test_a_file_changed_in_place_after_a_check_is_refused(tmp_path):
    folder = saved(tmp_path, **{"a.txt": "one"})
    verify_model_dir(folder)  # recorded as checked
    stat = (folder / "a.txt").stat()
    with open(folder / "a.txt", "r+b") as f:  # same size, same inode, the old mtime put back
        f.write(b"ONE")
    os.utime(folder / "a.txt", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(ModelError, match="a.txt is not the file that was saved"):
        verify_model_dir(folder)


def test_a_file_replaced_after_a_check_is_refused(tmp_path):
    folder = saved(tmp_path, **{"a.txt": "one"})
    verify_model_dir(folder)
    (tmp_path / "other.txt").write_text("owe")
    os.replace(tmp_path / "other.txt", folder / "a.txt")
    with pytest.raises(ModelError, match="a.txt is not the file that was saved"):
        verify_model_dir(folder)


def test_an_unreadable_record_only_costs_the_hashing(tmp_path, monkeypatch):
    folder = saved(tmp_path, **{"a.txt": "one"})
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "verified.json").write_text("[not json")
    hashed = count_hashing(monkeypatch)
    verify_model_dir(folder)
    assert hashed == ["a.txt"]
    assert isinstance(json.loads((tmp_path / "cache" / "verified.json").read_text()), dict)


def test_a_save_interrupted_before_its_commit_keeps_the_previous_one(tmp_path):
    folder = saved(tmp_path, **{"a.txt": "first"})

    def interrupted(path):
        path.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_model_dir(folder, files={"a.txt": interrupted})
    assert (folder / "a.txt").read_text() == "first"
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt", MANIFEST]  # its temporary folder is gone
    verify_model_dir(folder)


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    folder = saved(tmp_path, **{"a.txt": "first"})

    def full(path):
        path.write_text("part")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteError, match=r"model: cannot write it: no space left on the device; nothing was replaced"):
        save_model_dir(folder, files={"a.txt": full})
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt", MANIFEST]

    target = tmp_path / "out.txt"
    target.write_text("kept")
    with pytest.raises(WriteError, match="out.txt: cannot write it: read-only file system"):
        with atomic_path(target) as tmp:
            tmp.write_text("new")
            raise OSError(errno.EROFS, "Read-only file system")
    assert target.read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out.txt"]  # its temporary is gone

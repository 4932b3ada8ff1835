"""Atomic writes: content lands whole or not at all, and no temporary files are left behind."""

from __future__ import annotations

import json
import os

import pytest

from plmkit.io import atomic_dir, atomic_path, atomic_write_json, atomic_write_text, existing_dir


class Boom(Exception):
    pass


def _names(d):
    return sorted(p.name for p in d.iterdir())


def test_atomic_write_text_new_and_replace(tmp_path):
    path = tmp_path / "sub" / "dir" / "a.txt"  # parents created
    atomic_write_text(path, "第一版\n")
    assert path.read_text(encoding="utf-8") == "第一版\n"
    atomic_write_text(path, "second")
    assert path.read_text(encoding="utf-8") == "second"
    assert _names(path.parent) == ["a.txt"]


def test_atomic_write_text_accepts_str_path(tmp_path):
    atomic_write_text(str(tmp_path / "a.txt"), "x")
    assert (tmp_path / "a.txt").read_text() == "x"


def test_atomic_write_json(tmp_path):
    path = tmp_path / "meta.json"
    obj = {"labels": ["好", "差"], "n": 3, "nested": {"x": 1.5, "none": None}}
    atomic_write_json(path, obj)
    text = path.read_text(encoding="utf-8")
    assert json.loads(text) == obj
    assert "好" in text  # written as UTF-8, not \u escapes
    assert text.endswith("\n")
    assert _names(tmp_path) == ["meta.json"]


def test_atomic_write_json_unserialisable_leaves_original(tmp_path):
    path = tmp_path / "meta.json"
    atomic_write_json(path, {"ok": True})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"bad": object()})
    assert json.loads(path.read_text(encoding="utf-8")) == {"ok": True}
    assert _names(tmp_path) == ["meta.json"]


def test_atomic_path_success(tmp_path):
    path = tmp_path / "out.bin"
    with atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp != path
        tmp.write_bytes(b"\x00\x01")
        assert not path.exists()  # nothing visible until the block ends
    assert path.read_bytes() == b"\x00\x01"
    assert _names(tmp_path) == ["out.bin"]


def test_atomic_path_exception_keeps_original(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("original", encoding="utf-8")
    with pytest.raises(Boom):
        with atomic_path(path) as tmp:
            tmp.write_text("half-writ", encoding="utf-8")
            raise Boom
    assert path.read_text(encoding="utf-8") == "original"
    assert _names(tmp_path) == ["out.txt"]


def test_atomic_path_exception_no_original(tmp_path):
    path = tmp_path / "new.txt"
    with pytest.raises(Boom):
        with atomic_path(path) as tmp:
            tmp.write_text("x", encoding="utf-8")
            raise Boom
    assert not path.exists()
    assert _names(tmp_path) == []


def test_atomic_path_exception_after_removing_temp(tmp_path):
    path = tmp_path / "new.txt"
    with pytest.raises(Boom):
        with atomic_path(path) as tmp:
            tmp.unlink()
            raise Boom
    assert _names(tmp_path) == []


def test_atomic_dir_new(tmp_path):
    path = tmp_path / "model"
    with atomic_dir(path) as tmp:
        assert tmp.is_dir() and tmp.parent == tmp_path and tmp != path
        (tmp / "a.txt").write_text("a")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("b")
        assert not path.exists()
    assert (path / "a.txt").read_text() == "a" and (path / "sub" / "b.txt").read_text() == "b"
    assert _names(tmp_path) == ["model"]


def test_atomic_dir_replaces_whole_directory(tmp_path):
    path = tmp_path / "ckpt"
    path.mkdir()
    (path / "old_only.txt").write_text("old")
    (path / "shared.txt").write_text("old")
    with atomic_dir(path) as tmp:
        (tmp / "shared.txt").write_text("new")
        assert (path / "old_only.txt").read_text() == "old"  # old one in place while the new is built
    assert _names(path) == ["shared.txt"]
    assert (path / "shared.txt").read_text() == "new"
    assert _names(tmp_path) == ["ckpt"]  # no .old, no temporary


def test_atomic_dir_exception_keeps_original(tmp_path):
    path = tmp_path / "ckpt"
    path.mkdir()
    (path / "weights").write_text("good")
    with pytest.raises(Boom):
        with atomic_dir(path) as tmp:
            (tmp / "weights").write_text("partial")
            raise Boom
    assert _names(path) == ["weights"] and (path / "weights").read_text() == "good"
    assert _names(tmp_path) == ["ckpt"]


def test_atomic_dir_exception_no_original(tmp_path):
    with pytest.raises(Boom):
        with atomic_dir(tmp_path / "ckpt") as tmp:
            (tmp / "x").write_text("x")
            raise Boom
    assert _names(tmp_path) == []


def test_atomic_dir_clears_stale_old(tmp_path):
    path = tmp_path / "ckpt"
    stale = tmp_path / "ckpt.old"
    stale.mkdir()
    (stale / "stale").write_text("s")
    path.mkdir()
    with atomic_dir(path) as tmp:
        (tmp / "new").write_text("n")
    assert _names(path) == ["new"]
    assert _names(tmp_path) == ["ckpt"]


def test_existing_dir(tmp_path):
    path = tmp_path / "ckpt"
    assert existing_dir(path) is None
    old = tmp_path / "ckpt.old"
    old.mkdir()
    assert existing_dir(path) == old  # interrupted swap: only X.old is there
    assert existing_dir(str(path)) == old
    path.mkdir()
    assert existing_dir(path) == path  # X preferred over X.old


def test_existing_dir_ignores_files(tmp_path):
    (tmp_path / "ckpt").write_text("not a dir")
    (tmp_path / "ckpt.old").write_text("not a dir either")
    assert existing_dir(tmp_path / "ckpt") is None


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_write_text_permissions_follow_umask(tmp_path):
    """A file written atomically gets the same mode as one written with open(): 0o666 & ~umask.

    mkstemp creates its file 0o600 and os.replace keeps that mode, so plmkit.json and
    prediction files would be unreadable to anyone but their owner."""
    path = tmp_path / "a.txt"
    atomic_write_text(path, "x")
    plain = tmp_path / "b.txt"
    plain.write_text("x")
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_atomic_dir_permissions_follow_umask(tmp_path):
    """A directory swapped in by atomic_dir gets the mode of one made with mkdir: 0o777 & ~umask (mkdtemp
    makes 0o700)."""
    path = tmp_path / "ckpt"
    with atomic_dir(path) as tmp:
        (tmp / "x").write_text("x")
    plain = tmp_path / "plain"
    plain.mkdir()
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o777 & ~_umask()


def _dead_pid() -> int:
    """The pid of a process that has exited."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_write_removes_what_a_killed_writer_of_the_same_name_left(tmp_path):
    """A kill mid-write leaves `.NAME.PID.*.tmp`; the next write of NAME removes those of dead processes,
    keeps a live process's (it may be writing) and leaves other names' alone."""
    dead, live = _dead_pid(), os.getpid()
    stale_file = tmp_path / f".out.jsonl.{dead}.abc123.tmp"
    stale_file.write_text("half a file")
    stale_dir = tmp_path / f".checkpoint.{dead}.x9.tmp"
    (stale_dir / "inner").mkdir(parents=True)
    writing = tmp_path / f".out.jsonl.{live}.def456.tmp"
    writing.write_text("being written")
    other = tmp_path / f".other.{dead}.q.tmp"
    other.write_text("not ours")
    atomic_write_text(tmp_path / "out.jsonl", "done\n")
    assert not stale_file.exists() and writing.exists() and other.exists() and stale_dir.exists()
    with atomic_dir(tmp_path / "checkpoint") as d:
        (d / "f").write_text("x")
    assert not stale_dir.exists() and (tmp_path / "checkpoint" / "f").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.jsonl", "checkpoint", writing.name, other.name])


def test_temporaries_carry_the_writers_pid(tmp_path):
    seen = []
    with atomic_path(tmp_path / "a.json") as tmp:
        seen.append(tmp.name)
        tmp.write_text("{}")
    assert seen[0].startswith(f".a.json.{os.getpid()}.") and seen[0].endswith(".tmp")

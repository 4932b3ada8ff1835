"""SIGKILL at named points (plmkit.faults) of real `plmkit` processes: train, pretrain, cross-validate, predict
and export. After each kill the output holds the previous complete state or the new one, never a mixture (every
saved directory's manifest verifies, every checkpoint is whole); a file that was there before the run is
intact; and running again (`--resume` where the command has one) ends with exactly what an uninterrupted run
gives: weights bit for bit, predictions line for line."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from plmkit.models.saving import COMMIT, MANIFEST, file_digest

pytestmark = pytest.mark.slow  # each case runs plmkit as a process two or three times

TRAIN_OPTS = ["progress=false", "batch_size=16", "lr=3e-3", "epochs=2", "save_steps=3", "dropout=0.2"]
PRETRAIN_OPTS = [
    "hidden_size=32", "num_layers=2", "num_heads=2", "intermediate_size=64", "vocab_size=200", "max_length=32",
    "epochs=2", "batch_size=16", "lr=5e-3", "save_steps=3", "progress=false", "heldout_fraction=0.1",
]  # fmt: skip


def plmkit(*args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PLMKIT_FAULT"}
    if fault:
        env["PLMKIT_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "plmkit", *args], capture_output=True, text=True, env=env, timeout=300)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def killed(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == -9, f"not killed at the fault point (exit {result.returncode}): {result.stderr[-1500:]}"


def whole(root: Path) -> None:
    """Every saved directory under `root` is one save, complete: the files its manifest names (the committed
    one's, when a commit was cut short) have their sizes and hashes; every checkpoint has all its files."""
    for manifest in [*root.rglob(MANIFEST)]:
        folder = manifest.parent
        if folder.name == COMMIT:
            continue
        commit = folder / COMMIT
        names = json.loads(((commit if (commit / MANIFEST).is_file() else folder) / MANIFEST).read_text())["files"]
        for name, entry in names.items():
            f = commit / name if (commit / name).is_file() else folder / name
            assert f.is_file(), f"{folder}: {name} missing"
            assert (f.stat().st_size, file_digest(f)) == (entry["size"], entry["blake2b"]), f"{folder}: {name} mixed"
    for checkpoint in root.rglob("checkpoint*"):
        if checkpoint.is_dir() and not checkpoint.name.endswith(".tmp"):
            found = {p.name for p in checkpoint.iterdir()}
            assert found == {"model.safetensors", "optimizer.pt", "scheduler.pt", "loop_state.json"}, checkpoint


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=0, atol=0, msg=f"{a}: {name}")


def no_temporaries(root: Path) -> None:
    left = [p for p in root.rglob("*") if p.name.endswith((".tmp", ".lock")) or p.name in (COMMIT, "checkpoint.old")]
    assert not left, left


def digest_tree(root: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + file_digest(p).encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from conftest import toy_rows

    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    cycle = "子丑寅卯辰巳午未申酉戌亥"
    lines = [(cycle * 3)[k : k + 20] for k in range(12)] * 6 + [t for t, _ in toy_rows(60, seed=5)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def runs(tiny_model_dir, toy_data, corpus, tmp_path_factory):
    """Each command's arguments (for an output path) and its uninterrupted result, made once."""
    root = tmp_path_factory.mktemp("reference")
    data = ["--train", str(toy_data["train"]), "--dev", str(toy_data["dev"])]
    commands = {
        "train": lambda out: ["train", *data, "--model", str(tiny_model_dir), "--output", str(out), *TRAIN_OPTS],
        "pretrain": lambda out: ["pretrain", "--corpus", str(corpus), "--output", str(out), *PRETRAIN_OPTS],
        "cross-validate": lambda out: [
            "cross-validate",
            "--task",
            "classification",
            "--model",
            str(tiny_model_dir),
            "--train",
            str(toy_data["train"]),
            "--test",
            str(toy_data["test"]),
            "--folds",
            "2",
            "--output",
            str(out),
            "progress=false",
            "batch_size=16",
            "lr=3e-3",
            "epochs=2",
            "save_steps=3",
        ],  # fmt: skip
    }
    reference = {name: root / name for name in commands}
    for name, args in commands.items():
        ok(plmkit(*args(reference[name])))
    model = reference["train"]
    commands["predict"] = lambda out: ["predict", "--model", str(model), "--input", str(toy_data["test"]),
                                       "--output", str(out)]  # fmt: skip
    commands["export"] = lambda out: ["export", "--model", str(model), "--output", str(out), "--check-limit", "16"]
    for name in ("predict", "export"):
        reference[name] = root / ("predictions.jsonl" if name == "predict" else "export")
        ok(plmkit(*commands[name](reference[name])))
    return commands, reference


# (command, fault point): where in the run the process is killed
MATRIX = [
    ("train", "step:7"),  # mid-epoch, after the checkpoints of steps 3 and 6
    ("train", "checkpoint.files:3"),  # between the weights and the optimiser state of the third checkpoint
    ("train", "swap:3"),  # the third checkpoint in place, the second not yet removed
    ("train", "save.files:1"),  # writing the best model (epoch 1's; epoch 2 is no better)
    ("train", "save.commit:3"),  # the best model's files half moved into place
    ("pretrain", "step:5"),
    ("pretrain", "checkpoint.files:2"),
    ("pretrain", "swap:2"),
    ("pretrain", "save.files:2"),  # writing the second best model, the first one in place
    ("pretrain", "save.commit:8"),  # moving the second best model's files into place
    ("cross-validate", "step:14"),  # in the second fold
    ("cross-validate", "save.commit:3"),  # the first fold's model half moved into place
    ("cross-validate", "output.rename:3"),  # a results file written, not yet renamed
    ("predict", "output.write:20"),  # twenty lines of predictions written
    ("predict", "output.rename:1"),
    ("export", "swap:1"),  # the new export in place, the previous one not yet removed
    ("export", "output.rename:1"),  # export.json written inside the unfinished export
]


@pytest.mark.parametrize("command,point", MATRIX, ids=[f"{c}-{p}" for c, p in MATRIX])
def test_killed_at_fault_point_then_rerun_ends_as_an_uninterrupted_run(runs, tmp_path, command, point):
    commands, reference = runs
    out = tmp_path / reference[command].name
    keep = tmp_path / "before.txt"  # a file that was there before the run, beside the output
    keep.write_text("已有的文件\n", encoding="utf-8")
    if command in ("train", "pretrain", "cross-validate"):
        out.mkdir()
        (out / "notes.txt").write_text("mine\n", encoding="utf-8")  # and one inside it
    else:  # predict and export replace a previous output: it must survive a kill whole
        copy = shutil.copytree if reference[command].is_dir() else shutil.copy
        copy(reference[command], out)
        (out / "export.json").write_text("{}\n") if out.is_dir() else out.write_text("old\n")
        if out.is_dir():
            from plmkit.models.saving import write_manifest

            (out / MANIFEST).unlink()
            write_manifest(out)
    before = digest_tree(out) if out.is_dir() else out.read_text()

    killed(plmkit(*commands[command](out), fault=point))

    assert keep.read_text(encoding="utf-8") == "已有的文件\n"
    if out.is_dir():
        whole(out)
        if command == "export":  # the previous export or the new one, whole
            assert (
                digest_tree(out) == before
                or (out / "model.onnx").read_bytes() == (reference[command] / "model.onnx").read_bytes()
            )
    else:
        assert out.read_text() == before  # predictions: the old file, untouched

    resume = ["--resume"] if command in ("train", "pretrain") else []
    ok(plmkit(*commands[command](out), *resume))

    no_temporaries(tmp_path)
    if command in ("train", "pretrain", "cross-validate"):
        assert (out / "notes.txt").read_text() == "mine\n"
    if command in ("train", "pretrain"):
        whole(out)
        same_weights(out, reference[command])
    elif command == "cross-validate":
        for fold in ("fold-1", "fold-2"):
            same_weights(out / fold, reference[command] / fold)
        assert (out / "oof.jsonl").read_text() == (reference[command] / "oof.jsonl").read_text()
        assert (out / "test_predictions.jsonl").read_text() == (
            reference[command] / "test_predictions.jsonl"
        ).read_text()
    elif command == "predict":
        assert out.read_text() == reference[command].read_text()
    else:
        whole(out)
        assert (out / "model.onnx").read_bytes() == (reference[command] / "model.onnx").read_bytes()


def test_a_second_run_on_the_same_output_refuses_while_the_first_runs(runs, tmp_path):
    """The first run holds the output's lock (it is stopped at a point by SIGSTOP, not killed): the second
    refuses at once, naming the first's pid; once the first is gone, the lock is free again."""
    import signal
    import time

    commands, _ = runs
    out = tmp_path / "model"
    first = subprocess.Popen([sys.executable, "-m", "plmkit", *commands["train"](out)], stderr=subprocess.PIPE)
    try:
        lock = tmp_path / ".model.lock"
        deadline = time.monotonic() + 120
        while not (lock.is_file() and lock.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(first.pid, signal.SIGSTOP)
        second = plmkit(*commands["train"](out))
        assert second.returncode == 2
        assert second.stderr.strip() == (
            f"plmkit train: error: {out}: another plmkit run (pid {first.pid}) is writing it; wait for that run "
            "to end or choose another output"
        )
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    assert lock.is_file()  # the killed owner's file stays; its lock went with its process
    ok(plmkit(*commands["train"](out)))
    assert not lock.exists()


def _namespace_mounts() -> bool:
    """Whether this machine lets a test mount its own small file system (a private mount namespace)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt && touch /mnt/x"], capture_output=True
    )
    return probe.returncode == 0


mounts = pytest.mark.skipif(not _namespace_mounts(), reason="no private mount namespace (unshare -m) here")


def in_small_filesystem(tmp_path: Path, script: str) -> dict[str, str]:
    """Run `script` (sh) with $MNT a fresh 4 MiB tmpfs and $PLMKIT the plmkit command; what it leaves in $OUT
    (a folder outside the mount), as {name: text}."""
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    env = {**os.environ, "MNT": str(mnt), "OUT": str(out), "PLMKIT": f"{sys.executable} -m plmkit"}
    env.pop("PLMKIT_FAULT", None)
    setup = 'mount -t tmpfs -o size=4m tmpfs "$MNT" && cd "$MNT"\n'
    done = subprocess.run(["unshare", "-m", "sh", "-ec", setup + script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return {p.name: p.read_text() for p in out.iterdir()}


def train_twice(runs, tmp_path: Path, between: str) -> dict[str, str]:
    """Train into $MNT/model, run the `between` lines (sh), train again into it: the second run's exit status
    and stderr, and the model directory's files with their hashes before and after it, and its entries."""
    args = " ".join(runs[0]["train"]("$MNT/model"))
    listing = 'find "$MNT/model" -type f | sort | xargs sha256sum'
    return in_small_filesystem(
        tmp_path,
        f"""
        $PLMKIT {args}
        {listing} > "$OUT/before"
        {between}
        $PLMKIT {args} 2> "$OUT/stderr" || echo $? > "$OUT/status"
        {listing} > "$OUT/after"
        ls -A "$MNT/model" > "$OUT/entries"
        """,
    )


@mounts
def test_disk_full_during_training_keeps_the_previous_model(runs, tmp_path):
    full = """
        dd if=/dev/zero of=filler bs=4k 2>/dev/null || true   # the disk full...
        truncate -s -64K filler                             # ...but for room for the lock, not a checkpoint
    """
    result = train_twice(runs, tmp_path, full)
    assert result["status"].strip() == "2"
    assert result["stderr"].count("\n") == 1 and "Traceback" not in result["stderr"]
    assert "cannot write it: no space left on the device" in result["stderr"]
    assert "nothing was replaced (what was there before is kept)" in result["stderr"]
    assert result["after"] == result["before"]  # the model saved before, byte for byte
    assert not [e for e in result["entries"].split() if e.endswith((".tmp", ".lock")) or e == COMMIT]


@mounts
def test_read_only_output_refuses_at_once_and_keeps_everything(runs, tmp_path):
    result = train_twice(runs, tmp_path, 'mount -o remount,ro "$MNT"')
    assert result["status"].strip() == "2"
    assert (
        result["stderr"] == f"plmkit train: error: {tmp_path}/mnt/model: cannot write it: read-only file system; "
        "nothing was replaced (what was there before is kept)\n"
    )
    assert result["after"] == result["before"]


def test_predictions_over_a_file_size_limit_keep_the_previous_file(runs, tmp_path):
    """A size-limited file (RLIMIT_FSIZE, as a quota would): the write fails, the previous predictions stay."""
    import resource
    import signal

    commands, reference = runs
    out = tmp_path / "predictions.jsonl"
    out.write_text("old\n")

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))

    assert reference["predict"].stat().st_size > 2000
    done = subprocess.run(
        [sys.executable, "-m", "plmkit", *commands["predict"](out)], capture_output=True, text=True, preexec_fn=limit
    )
    assert done.returncode == 2
    assert (
        done.stderr == f"plmkit predict: error: {out}: cannot write it: file too large (a file size limit); "
        "nothing was replaced (what was there before is kept)\n"
    )
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.jsonl"]

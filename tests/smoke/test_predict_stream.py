"""`predict` reads, predicts and writes its input a chunk at a time: the rows are those of the whole input
predicted at once (every task, with truncation and windows), a file or standard input, the API or the CLI;
standard input is answered before it ends."""

from __future__ import annotations

import json
import os
import random
import select
import subprocess
import sys
import time

import pytest
from conftest import POS, toy_rows, write_csv, write_jsonl

from plmkit import api
from plmkit.cli import main
from plmkit.errors import ConfigError, DataError

FAST = {"epochs": 1, "lr": 3e-3, "batch_size": 16, "progress": False, "log_steps": 1}
CHUNK = 64  # the inputs have 150 to 300 records: three to five chunks and a part


def close(a, b) -> bool:
    """Equal, floats to 1e-5 (a chunk's batches pad to other lengths than the whole input's)."""
    if isinstance(a, float) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-5
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    return a == b


def long_texts(n: int, seed: int) -> list[str]:
    """Toy texts, every fifth one several times max_length long (truncated, or cut into windows)."""
    rng = random.Random(seed)
    texts = [t for t, _ in toy_rows(n, seed)]
    return [t * rng.randint(4, 9) if i % 5 == 0 else t for i, t in enumerate(texts)]


def toy_questions(n: int, seed: int) -> list[dict]:
    """Contexts of filler with one run of 子丑寅卯; some contexts need several windows."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        before = "".join(rng.choice(POS) for _ in range(rng.randint(2, 30)))
        run = "".join(rng.choice("子丑寅卯") for _ in range(rng.randint(2, 4)))
        after = "".join(rng.choice(POS) for _ in range(rng.randint(2, 30)))
        answers = [{"text": run, "answer_start": len(before)}]
        rows.append({"id": f"q{seed}-{i}", "question": "是什么?", "context": before + run + after, "answers": answers})
    return rows


@pytest.fixture(scope="module")
def models(tiny_model_dir, toy_data, toy_ner, tmp_path_factory):
    """A tiny model of each kind of task (one epoch: what they predict does not matter, only that streaming
    keeps it), and an input of 150 to 300 records for each."""
    d = tmp_path_factory.mktemp("stream")
    tiny = {"model": str(tiny_model_dir)} | FAST
    pairs = [(a, b, str(len(a) / 10)) for (a, _), (b, _) in zip(toy_rows(80, 5), toy_rows(80, 6))]
    regression = write_csv(d / "regression.csv", pairs, header=("text", "text_pair", "label"))
    qa_train = write_jsonl(d / "qa.jsonl", toy_questions(60, 1))
    trains = {
        "classification": (toy_data["train"], {"max_length": 12, "truncation": "head_tail"}),
        "regression": (regression, {"task": "regression", "max_length": 16}),
        "ner": (toy_ner["train"], {"task": "ner", "max_length": 12, "window_overlap": 4}),
        "qa": (qa_train, {"task": "qa", "max_length": 24, "max_query_length": 8, "doc_stride": 8}),
    }
    out = {}
    for name, (train, options) in trains.items():
        api.train(str(train), d / name, overrides=tiny | options)
        out[name] = d / name
    texts = long_texts(300, 7)
    questions = [{k: v for k, v in q.items() if k != "answers"} for q in toy_questions(150, 8)]
    inputs = {
        "classification": write_csv(d / "in.csv", [(t,) for t in texts], header=("text",)),
        "regression": write_jsonl(d / "in.jsonl", [{"text": a, "text_pair": b} for a, b in zip(texts, texts[::-1])]),
        "ner": d / "in.txt",
        "qa": write_jsonl(d / "in-qa.jsonl", questions),
    }
    inputs["ner"].write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    return out, inputs


@pytest.mark.parametrize("task", ["classification", "regression", "ner", "qa"])
def test_streamed_rows_are_the_whole_inputs_rows(models, task, tmp_path):
    model, source = models[0][task], str(models[1][task])
    whole = api.predict(model, input=source, chunk_size=0)
    assert len(whole) >= 150
    streamed = api.predict_stream(model, input=source, chunk_size=CHUNK)
    assert not isinstance(streamed, list)
    streamed = list(streamed)
    assert close(streamed, whole), task
    assert close(api.predict(model, input=source), whole)  # the default chunk size: one chunk here
    out = tmp_path / "out.jsonl"
    assert main(["predict", "--model", str(model), "--input", source, "--output", str(out), "--chunk-size", "7"]) == 0
    assert close([json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()], whole)


def test_csv_output_streamed_equals_written_whole(models, tmp_path):
    model, source = models[0]["classification"], str(models[1]["classification"])
    api.predict(model, input=source, output=tmp_path / "whole.csv", chunk_size=0)
    n = api.write_predictions(api.predict_stream(model, input=source, chunk_size=CHUNK), tmp_path / "streamed.csv")
    whole = (tmp_path / "whole.csv").read_text(encoding="utf-8").splitlines()
    streamed = (tmp_path / "streamed.csv").read_text(encoding="utf-8").splitlines()
    assert n == 300 and whole[0] == streamed[0] == "text,label,p(bad),p(good)" and len(streamed) == 301
    for a, b in zip(whole[1:], streamed[1:]):
        ta, *pa = a.rsplit(",", 3)
        tb, *pb = b.rsplit(",", 3)
        assert ta == tb and pa[0] == pb[0] and close([float(p) for p in pa[1:]], [float(p) for p in pb[1:]])


def test_a_bad_line_late_in_the_input_fails_with_its_line_and_leaves_no_output(models, tmp_path):
    model = models[0]["classification"]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in long_texts(200, 3)) + "{broken\n")
    out = tmp_path / "out.jsonl"
    with pytest.raises(DataError, match=rf"^{source}:201: not valid JSON"):
        api.write_predictions(api.predict_stream(model, input=str(source), chunk_size=CHUNK), out)
    assert not out.exists() and not list(tmp_path.glob(".out.jsonl*.tmp"))
    with pytest.raises(DataError, match="not found"):  # the file is opened before the first row is asked for
        api.predict_stream(model, input=str(tmp_path / "nope.csv"))
    with pytest.raises(DataError, match="unknown output type"):  # before any prediction
        api.write_predictions(iter(()), tmp_path / "out.txt")
    with pytest.raises(ConfigError, match="chunk size"):
        api.predict_stream(model, input=str(source), chunk_size=-1)


def test_standard_input_is_answered_before_it_ends(models):
    """Through a pipe, a line's row comes out while standard input is still open (it is not read to the end
    first), and the next line's after it."""
    model = models[0]["classification"]
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "plmkit", "predict", "--model", str(model), "--input", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )

    def read_line(timeout: float) -> bytes:
        deadline, line = time.monotonic() + timeout, b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
                proc.kill()
                pytest.fail(f"no row within {timeout} s: {line!r}; stderr: {proc.stderr.read().decode()[-2000:]}")
            byte = proc.stdout.read1(1)
            if not byte:
                pytest.fail(f"stdout ended; stderr: {proc.stderr.read().decode()[-2000:]}")
            line += byte
        return line

    try:
        proc.stdin.write("好棒赞的东西\n".encode())
        proc.stdin.flush()
        first = json.loads(read_line(180))  # the model loads first: a loaded machine is slow
        assert first["text"] == "好棒赞的东西" and proc.poll() is None
        proc.stdin.write("差坏烂的东西\n\n".encode())
        proc.stdin.flush()
        assert json.loads(read_line(60))["text"] == "差坏烂的东西" and proc.poll() is None
        proc.stdin.close()
        assert proc.wait(60) == 0
        assert proc.stdout.read() == b""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_chunks_end_at_their_size_and_early_at_a_none():
    from plmkit.train.run import chunks

    assert list(chunks(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunks(range(7), 0)) == [list(range(7))]
    assert list(chunks([None, 1, 2, None, None, 3], 2)) == [[1, 2], [3]]
    assert list(chunks([1, None, 2, 3, 4], 0)) == [[1, 2, 3, 4]]  # 0: all at once
    assert list(chunks([], 5)) == [] and list(chunks([None], 5)) == []


def test_tagging_windows_and_conll_context_survive_chunks(models, tmp_path):
    """A sentence much longer than max_length is cut into windows that are stitched back per sentence,
    whichever chunk it falls in."""
    model = models[0]["ner"]
    text = "好甲子寅的午京一二乙丑" * 6
    (alone,) = api.predict(model, text=text)
    source = tmp_path / "in.txt"
    source.write_text("美的东西\n" * 5 + text + "\n" + "美的东西\n" * 5, encoding="utf-8")
    rows = list(api.predict_stream(model, input=str(source), chunk_size=4))
    assert len(rows) == 11 and close(rows[5], alone)

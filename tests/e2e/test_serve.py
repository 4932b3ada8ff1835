"""`plmkit serve` on tiny trained models: a real uvicorn server on loopback, real HTTP requests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from plmkit import api
from plmkit.config import ServeConfig
from plmkit.serve.app import create_app, load_predictor

FAST = {"progress": "false", "batch_size": "16", "lr": "3e-3"}
TEXTS = ["好棒赞的东西", "差坏烂糟的东西", "优美爱的东西", "恨丑的东西", "好", "差坏烂糟恨丑差坏烂糟恨丑的东西"]


@pytest.fixture(scope="module")
def classifier(tiny_model_dir, toy_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serve") / "cls"
    overrides = {"model": str(tiny_model_dir), "epochs": "6", **FAST}
    api.train(str(toy_data["train"]), out, dev=str(toy_data["dev"]), overrides=overrides)
    return out


@pytest.fixture(scope="module")
def tagger(tiny_model_dir, toy_ner, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serve") / "ner"
    overrides = {"task": "ner", "model": str(tiny_model_dir), "epochs": "2", **FAST}
    api.train(str(toy_ner["train"]), out, dev=str(toy_ner["dev"]), overrides=overrides)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(model: Path, **options):
    """A uvicorn server in a thread on a free loopback port, its model loaded: yields the base URL and app."""
    import uvicorn

    cfg = ServeConfig(port=free_port(), **options)
    app = create_app(lambda: load_predictor(model, cfg.max_batch_texts), cfg)
    server = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{cfg.port}"
    wait_ready(base)
    try:
        yield base, app
    finally:
        server.should_exit = True
        thread.join(10)


def wait_ready(base: str, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if call(base, "/ready")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{base} not ready in {seconds}s")


def call(base: str, path: str, body=None, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else None if body is None else json.dumps(body, ensure_ascii=False).encode()
    request = urllib.request.Request(base + path, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def same_rows(served: list[dict], expected: list[dict]) -> None:
    assert len(served) == len(expected)
    for got, want in zip(served, expected):
        assert got["label"] == want["label"] and got["text"] == want["text"]
        for name, p in want["probabilities"].items():
            assert got["probabilities"][name] == pytest.approx(p, abs=1e-5)


def test_endpoints_answer_what_predict_writes(classifier):
    expected = [api.predict(classifier, text=t)[0] for t in TEXTS]
    with serving(classifier) as (base, _):
        status, health = call(base, "/health")
        assert status == 200 and health["ready"] is True
        assert call(base, "/info") == (200, {"task": "classification", "labels": ["bad", "good"],
                                             "model": str(classifier), "fields": ["text"]})  # fmt: skip
        status, row = call(base, "/predict", {"text": TEXTS[0]})
        assert status == 200, row
        same_rows([row], expected[:1])
        status, body = call(base, "/predict", {"texts": TEXTS})
        assert status == 200
        same_rows(body["predictions"], expected)
        with urllib.request.urlopen(base + "/") as page:
            assert page.status == 200 and "text/html" in page.headers["content-type"]
            assert "/predict" in page.read().decode()


def test_concurrent_requests_batch_together_and_match_sequential_predict(classifier):
    texts = [TEXTS[i % len(TEXTS)] + "的" * (i % 5) for i in range(32)]
    expected = [api.predict(classifier, text=t)[0] for t in texts]
    with serving(classifier, batch_window_ms=50) as (base, app):
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda t: call(base, "/predict", {"text": t}), texts))
        stats = call(base, "/health")[1]
    assert [status for status, _ in answers] == [200] * len(texts)
    same_rows([row for _, row in answers], expected)
    assert stats["requests"] == len(texts) and stats["inputs"] == len(texts)
    assert stats["batches"] < len(texts) / 2 and stats["largest_batch"] > 1  # requests shared model runs


def test_without_batching_each_request_runs_alone(classifier):
    with serving(classifier, batching=False) as (base, _):
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda t: call(base, "/predict", {"text": t}), TEXTS))
        stats = call(base, "/health")[1]
    assert all(status == 200 for status, _ in answers)
    assert stats["batches"] == len(TEXTS) and stats["largest_batch"] == 1


def test_limits_and_bad_input_are_json_refusals_and_the_server_goes_on(classifier):
    options = {"max_body_bytes": 2000, "max_text_chars": 50, "max_request_texts": 4}
    with serving(classifier, **options) as (base, _):
        refusals = [
            (call(base, "/predict", raw=b'{"text": "' + "好".encode() * 1000 + b'"}'), 413, None),
            (call(base, "/predict", {"text": "好" * 51}), 413, "text"),
            (call(base, "/predict", {"texts": ["好"] * 5}), 413, "texts"),
            (call(base, "/predict", raw=b'{"text": "good'), 422, None),
            (call(base, "/predict", raw="好".encode("gbk")), 422, None),
            (call(base, "/predict", {}), 422, "text"),
            (call(base, "/predict", {"txt": "好"}), 422, "txt"),
            (call(base, "/predict", {"text": 3}), 422, "text"),
            (call(base, "/predict", {"text": "  "}), 422, "text"),
            (call(base, "/predict", {"texts": ["好", ""]}), 422, "texts[1]"),
            (call(base, "/predict", {"text": "好", "text_pair": "东西"}), 422, "text_pair"),
            (call(base, "/predict", [1, 2]), 422, None),
        ]
        for (status, body), want, field in refusals:
            assert status == want, body
            assert body["error"] and body.get("field") == field, body
        status, row = call(base, "/predict", {"text": "好棒的东西"})
        assert status == 200 and row["label"] in ("good", "bad")


def test_a_full_queue_answers_429(classifier):
    with serving(classifier, batch_window_ms=1500, max_queue_texts=3) as (base, _):
        with ThreadPoolExecutor(8) as pool:
            statuses = [s for s, _ in pool.map(lambda t: call(base, "/predict", {"text": t}), TEXTS + TEXTS[:2])]
        assert sorted(statuses) == [200] * 3 + [429] * 5
        assert call(base, "/predict", {"texts": TEXTS[:4]})[0] == 429  # larger than the whole queue
        assert call(base, "/predict", {"text": "好"})[0] == 200  # and it empties


def test_ner_server_gives_entities_with_offsets(tagger):
    text = "甲子在辰京好棒"
    expected = api.predict(tagger, text=text)[0]
    with serving(tagger) as (base, _):
        assert call(base, "/info")[1]["task"] == "ner"
        status, row = call(base, "/predict", {"text": text})
    assert status == 200 and row == expected
    for entity in row["entities"]:
        assert text[entity["start"] : entity["end"]] == entity["text"]


def test_an_exported_model_serves_as_its_pytorch_model(classifier, tmp_path):
    api.export(classifier, tmp_path / "onnx", quantize="int8")
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS), encoding="utf-8")
    # int8 activations are scaled per batch (dynamic quantisation): compared with the same texts in one run
    expected = api.predict(tmp_path / "onnx", input=str(tmp_path / "texts.txt"))
    with serving(tmp_path / "onnx") as (base, _):
        status, body = call(base, "/predict", {"texts": TEXTS})
    assert status == 200
    same_rows(body["predictions"], expected)
    torch_labels = [api.predict(classifier, text=t)[0]["label"] for t in TEXTS]
    assert [r["label"] for r in body["predictions"]] == torch_labels  # and int8 keeps the tiny model's decisions


def start_cli(model: Path, port: int, *options: str) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    command = [sys.executable, "-m", "plmkit", "serve", "--model", str(model), "--port", str(port), *options]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_cli_server_finishes_in_flight_requests_on_sigterm(classifier):
    port = free_port()
    server = start_cli(classifier, port, "batch_window_ms=1500")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base)
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(call, base, "/predict", {"text": "好棒的东西"})
            time.sleep(0.5)  # the request waits in its batch window
            server.send_signal(signal.SIGTERM)
            status, row = answer.result(30)
        assert status == 200 and row["label"] in ("good", "bad")
        assert server.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
        assert "Traceback" not in server.stderr.read()
    finally:
        server.kill()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=10000", "--window-size=900,600"]  # fmt: skip


def render(model: Path, text: str, tmp_path: Path) -> tuple[str, Path]:
    """The page of a served model, opened at ?text=TEXT in headless Chromium: (its DOM once the prediction
    has shown, a screenshot)."""
    port = free_port()
    server = start_cli(model, port)
    url = f"http://127.0.0.1:{port}/?text=" + urllib.request.quote(text)
    flags = [*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    try:
        wait_ready(f"http://127.0.0.1:{port}")
        dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
        shot = tmp_path / "page.png"
        subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", url], capture_output=True, timeout=120)
    finally:
        server.terminate()
        server.wait(30)
    assert shot.is_file() and shot.stat().st_size > 5000  # a rendered page, not an empty one
    if os.environ.get("PLMKIT_KEEP_SCREENSHOT"):
        shutil.copy(shot, Path(os.environ["PLMKIT_KEEP_SCREENSHOT"]) / f"{model.name}.png")
    return dom.stdout, shot


needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")


@pytest.mark.slow
@needs_chromium
def test_page_shows_label_bars_in_headless_chromium(classifier, tmp_path):
    expected = api.predict(classifier, text="好棒赞的东西")[0]
    html, _ = render(classifier, "好棒赞的东西", tmp_path)
    assert f'class="bar top" data-label="{expected["label"]}"' in html, html[-2000:]
    assert f"{100 * expected['probabilities'][expected['label']]:.1f}%" in html


@pytest.mark.slow
@needs_chromium
def test_page_highlights_entities_in_headless_chromium(tagger, tmp_path):
    text = "甲子在辰京好棒，乙丑去午京"
    expected = api.predict(tagger, text=text)[0]["entities"]
    html, _ = render(tagger, text, tmp_path)
    assert 'id="marked"' in html, html[-2000:]
    for entity in expected:
        assert f'data-type="{entity["type"]}">{entity["text"]}<small>' in html
    assert html.count("<mark ") == len(expected)

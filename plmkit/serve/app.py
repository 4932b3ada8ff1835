"""The HTTP server of a saved model: an ASGI app (FastAPI) over the dynamic batcher.

    POST /predict   {"text": ..., ["text_pair": ...]} -> the row `plmkit predict` writes for it
                    {"texts": [...], ["text_pairs": [...]]} -> {"predictions": [row, ...]}
                    {"question": ..., "context": ...} (a qa model) -> the row
    GET  /health    200 while the process runs, with the batcher's counts
    GET  /ready     200 once the model is loaded, 503 before
    GET  /info      the model's task, labels and what a request must carry
    GET  /          a page to try the model in a browser

Refusals are JSON `{"error": ..., "field": ...}`: 413 for a body, a text or a batch over its limit,
422 for bad JSON, a missing, empty or wrong-typed field, 429 when the queue is full, 503 while the
model loads. The model loads in a thread after the server starts, so /health answers at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from plmkit.config import ServeConfig
from plmkit.data.examples import Example
from plmkit.errors import PlmkitError
from plmkit.serve.batcher import Batcher, QueueFull

log = logging.getLogger("plmkit.serve")
PAGE = Path(__file__).with_name("page.html")


@dataclass
class Predictor:
    """What the server needs of a model: what it reads, and a function from examples to rows."""

    task: str
    pair: bool  # reads text pairs (pair, regression); qa reads question + context
    labels: list[str]
    name: str
    run: Callable[[list[Example]], list[dict[str, Any]]]


def load_predictor(model_dir: str | Path, batch_size: int = 64) -> Predictor:
    from plmkit.train.run import load, predict

    loaded = load(model_dir, batch_size)
    return Predictor(
        task=loaded.task.name,
        pair=loaded.task.pair,
        labels=list(loaded.labels.names),
        name=str(model_dir),
        run=lambda examples: predict(None, examples, loaded=loaded),
    )


class Refused(Exception):
    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def _refusal(status: int, message: str, field: str | None = None, headers: dict | None = None):
    body = {"error": message} | ({"field": field} if field else {})
    return JSONResponse(body, status_code=status, headers=headers)


def _text(value: Any, where: str, cfg: ServeConfig) -> str:
    """`value` as a request's text: a string, not blank, within max_text_chars; Refused naming `where` otherwise."""
    if not isinstance(value, str):
        raise Refused(422, f"{where}: expected a string, got {type(value).__name__}", where)
    if not value.strip():
        raise Refused(422, f"{where}: empty", where)
    if len(value) > cfg.max_text_chars:
        raise Refused(413, f"{where}: {len(value)} characters; the limit is {cfg.max_text_chars}", where)
    return value


def parse_request(body: Any, predictor: Predictor, cfg: ServeConfig) -> tuple[list[Example], bool]:
    """(examples, whether the request was a batch); Refused naming the field otherwise."""
    if not isinstance(body, dict):
        raise Refused(422, "expected a JSON object")
    known = {"text", "text_pair", "texts", "text_pairs", "question", "context"}
    if unknown := sorted(set(body) - known):
        raise Refused(422, f"unknown field {unknown[0]!r}; known: {', '.join(sorted(known))}", unknown[0])
    if predictor.task == "qa":
        if "question" not in body or "context" not in body:
            missing = "question" if "question" not in body else "context"
            raise Refused(422, f"{missing}: missing; a qa model reads a question and a context", missing)
        return [
            Example(text=_text(body["question"], "question", cfg), text_pair=_text(body["context"], "context", cfg))
        ], False
    if ("text" in body) == ("texts" in body):
        raise Refused(422, "text: give `text` (one) or `texts` (a list), not both or neither", "text")
    if "text" in body:
        pair = _text(body.get("text_pair"), "text_pair", cfg) if predictor.pair else None
        if pair is None and "text_pair" in body:
            raise Refused(422, "text_pair: this model reads one text", "text_pair")
        return [Example(text=_text(body["text"], "text", cfg), text_pair=pair)], False
    texts = body["texts"]
    if not isinstance(texts, list) or not texts:
        raise Refused(422, "texts: expected a non-empty list of strings", "texts")
    if len(texts) > cfg.max_request_texts:
        raise Refused(413, f"texts: {len(texts)} texts; the limit is {cfg.max_request_texts}", "texts")
    pairs: list[Any] = [None] * len(texts)
    if predictor.pair:
        pairs = body.get("text_pairs")
        if not isinstance(pairs, list) or len(pairs) != len(texts):
            raise Refused(422, "text_pairs: expected a list as long as texts", "text_pairs")
        pairs = [_text(p, f"text_pairs[{i}]", cfg) for i, p in enumerate(pairs)]
    elif "text_pairs" in body:
        raise Refused(422, "text_pairs: this model reads one text", "text_pairs")
    examples = [Example(text=_text(t, f"texts[{i}]", cfg), text_pair=p) for i, (t, p) in enumerate(zip(texts, pairs))]
    return examples, True


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 before the app reads any of it
    (by Content-Length when sent, else by counting the chunks)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send, int(declared))
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                return await self._refuse(send, size)
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    async def _refuse(self, send, size: int) -> None:
        body = json.dumps({"error": f"request body over the limit of {self.limit} bytes (at least {size})"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def create_app(load: Callable[[], Predictor], cfg: ServeConfig | None = None):
    """The app; `load` runs in a thread once the server has started (the model loads while /health answers)."""
    cfg = cfg or ServeConfig()
    state: dict[str, Any] = {"predictor": None, "batcher": None, "error": None}

    async def load_model() -> None:
        try:
            predictor = await asyncio.to_thread(load)
            batcher = Batcher(
                predictor.run,
                batching=cfg.batching,
                window_s=cfg.batch_window_ms / 1000,
                max_batch=cfg.max_batch_texts,
                max_queue=cfg.max_queue_texts,
            )
            batcher.start()
            state["predictor"], state["batcher"] = predictor, batcher
            log.info("model %s loaded: task %s", predictor.name, predictor.task)
        except Exception as error:  # reported by /ready; the process stays up to say so
            log.exception("the model did not load")
            state["error"] = f"{type(error).__name__}: {error}"

    @asynccontextmanager
    async def lifespan(app):
        loading = asyncio.create_task(load_model())
        yield
        loading.cancel()
        if state["batcher"] is not None:
            await state["batcher"].stop()

    app = FastAPI(title="plmkit", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.plmkit = state

    def ready() -> tuple[Predictor, Batcher]:
        if state["predictor"] is None:
            raise Refused(503, state["error"] or "the model is loading")
        return state["predictor"], state["batcher"]

    @app.exception_handler(Refused)
    async def refused(request, error: Refused):
        headers = {"Retry-After": "1"} if error.status in (429, 503) else None
        return _refusal(error.status, error.message, error.field, headers)

    @app.exception_handler(Exception)
    async def failed(request, error: Exception):  # logged by the server; the next request is answered as usual
        return _refusal(500, f"{type(error).__name__}: {error}")

    @app.get("/health")
    async def health():
        batcher = state["batcher"]
        stats = asdict(batcher.stats) | {"queued": batcher.queued} if batcher else {}
        return {"status": "ok", "ready": state["predictor"] is not None} | stats

    @app.get("/ready")
    async def is_ready():
        predictor, _ = ready()
        return {"status": "ready", "task": predictor.task}

    @app.get("/info")
    async def info():
        predictor, _ = ready()
        fields = ["question", "context"] if predictor.task == "qa" else ["text", "text_pair"][: 1 + predictor.pair]
        return {"task": predictor.task, "labels": predictor.labels, "model": predictor.name, "fields": fields}

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.post("/predict")
    async def predict(request: Request):
        predictor, batcher = ready()
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise Refused(422, f"the body is not JSON: {error}") from None
        examples, many = parse_request(body, predictor, cfg)
        try:
            rows = await batcher.submit(examples)
        except QueueFull as error:
            raise Refused(429, str(error)) from None
        except PlmkitError as error:
            raise Refused(422, str(error)) from None
        return JSONResponse({"predictions": rows} if many else rows[0])

    return BodyLimit(app, cfg.max_body_bytes)

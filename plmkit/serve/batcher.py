"""Dynamic batching: requests that arrive within a short window run as one model call.

The event loop only queues and wakes; the model runs in one worker thread, so the server keeps
accepting and answering (health, limits, errors) while a batch computes. A batch is a list of
requests, each a list of inputs; `run` gets all their inputs at once (the runner sorts them by
length and pads each sub-batch only to its longest) and returns one output per input, in order.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


class QueueFull(Exception):
    """More inputs are waiting than the queue holds; the caller should retry later (HTTP 429)."""


@dataclass
class _Request:
    inputs: Sequence[Any]
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


@dataclass
class BatchStats:
    requests: int = 0
    inputs: int = 0
    batches: int = 0  # model calls
    largest_batch: int = 0  # inputs in the largest model call


class Batcher:
    """`await submit(inputs)` -> outputs, one per input. With `batching`, the first waiting request
    waits up to `window_s` for others, up to `max_batch` inputs in all; without, each runs alone.
    At most `max_queue` inputs wait; past that, `submit` raises QueueFull at once."""

    def __init__(
        self,
        run: Callable[[list[Any]], list[Any]],
        *,
        batching: bool = True,
        window_s: float = 0.005,
        max_batch: int = 64,
        max_queue: int = 1024,
    ):
        self.run, self.batching, self.window_s = run, batching, window_s
        self.max_batch, self.max_queue = max_batch, max_queue
        self.stats = BatchStats()
        self._waiting: deque[_Request] = deque()
        self._queued = 0  # inputs in self._waiting
        self._wake = asyncio.Event()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="plmkit-model")
        self._task: asyncio.Task | None = None

    @property
    def queued(self) -> int:
        return self._queued

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        """After the waiting requests have run: the server's in-flight requests finish before this."""
        while self._waiting:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=True)

    async def submit(self, inputs: Sequence[Any]) -> list[Any]:
        if self._queued + len(inputs) > self.max_queue:
            raise QueueFull(f"{self._queued} inputs are waiting; the queue holds {self.max_queue}")
        request = _Request(inputs, asyncio.get_running_loop().create_future())
        self._waiting.append(request)
        self._queued += len(inputs)
        self.stats.requests += 1
        self.stats.inputs += len(inputs)
        self._wake.set()
        return await request.future

    async def _next_batch(self) -> list[_Request]:
        while not self._waiting:
            self._wake.clear()
            await self._wake.wait()
        if self.batching:  # wait for company until the window of the oldest request closes or the batch is full
            deadline = self._waiting[0].arrived + self.window_s
            while self._queued < self.max_batch and (left := deadline - time.monotonic()) > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except TimeoutError:
                    break
        batch = [self._waiting.popleft()]
        size = len(batch[0].inputs)  # a request larger than max_batch runs alone, whole
        while self.batching and self._waiting and size + len(self._waiting[0].inputs) <= self.max_batch:
            batch.append(self._waiting.popleft())
            size += len(batch[-1].inputs)
        self._queued -= size
        return [r for r in batch if not r.future.done()]  # a client that went away has cancelled its future

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            inputs = [x for r in batch for x in r.inputs]
            self.stats.batches += 1
            self.stats.largest_batch = max(self.stats.largest_batch, len(inputs))
            try:
                outputs = await loop.run_in_executor(self._pool, self.run, inputs)
            except Exception as error:
                if len(batch) == 1:
                    _settle(batch[0], error=error)
                    continue
                for r in batch:  # one bad request must not fail those batched with it: each alone
                    try:
                        _settle(r, await loop.run_in_executor(self._pool, self.run, list(r.inputs)))
                    except Exception as own:
                        _settle(r, error=own)
                continue
            start = 0
            for r in batch:
                _settle(r, outputs[start : start + len(r.inputs)])
                start += len(r.inputs)


def _settle(request: _Request, outputs: list[Any] | None = None, error: BaseException | None = None) -> None:
    if request.future.done():  # cancelled: the client went away
        return
    if error is not None:
        request.future.set_exception(error)
    else:
        request.future.set_result(outputs)

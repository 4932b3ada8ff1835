"""`plmkit serve` under load: requests/s and p50/p99 latency at 1, 8 and 32 concurrent clients, with dynamic
batching on and off, on 127.0.0.1.

    python bench/serve_load.py --model DIR [--requests 200] [--clients 1,8,32]

Each setting starts a fresh `plmkit serve` process and waits for /ready; each client is a bounded loop that
posts one text at a time (`{"text": ...}`) and waits for the answer before the next, drawing texts in turn
from the data; every answer is checked to be 200 with a label. The clients run in this process (one
asyncio loop, httpx), on the same 2 cores as the server, so the figures include the client's own cost.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, batching: bool, options: tuple[str, ...] = ()) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "plmkit", "serve", "--model", model, "--port", str(port),
           f"batching={str(batching).lower()}", *options]  # fmt: skip
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def wait_ready(url: str, server: subprocess.Popen, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited ({server.returncode}): {server.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not get ready")


async def load(url: str, texts: list[str], clients: int, requests: int) -> dict:
    """`requests` in all from `clients` concurrent loops; latency of each, seconds in all."""
    import httpx

    latencies: list[float] = []
    counter = iter(range(requests))

    async def client(http: httpx.AsyncClient) -> None:
        for n in counter:
            started = time.perf_counter()
            r = await http.post(url + "/predict", json={"text": texts[n % len(texts)]})
            latencies.append(time.perf_counter() - started)
            if r.status_code != 200 or "label" not in r.json():
                raise RuntimeError(f"request {n}: {r.status_code} {r.text[:200]}")

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=120) as http:
        await client_warmup(http, url, texts)
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        seconds = time.perf_counter() - started
    latencies.sort()
    return {
        "requests_per_s": round(requests / seconds, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1),
    }


async def client_warmup(http, url: str, texts: list[str]) -> None:
    for text in texts[:4]:
        await http.post(url + "/predict", json={"text": text})


def measure(
    model: str, texts: list[str], clients: list[int], requests: int, batching: bool, options: tuple[str, ...] = ()
) -> dict:
    """One server (`plmkit serve` with `options`, key=value) at each client count in turn."""
    port = free_port()
    server = start_server(model, port, batching, options)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, server)
        out = {}
        for n in clients:
            out[str(n)] = asyncio.run(load(url, texts, n, requests))
            print(f"serve batching={batching} clients={n}: {out[str(n)]}", file=sys.stderr, flush=True)
        import httpx

        out["health"] = httpx.get(url + "/health", timeout=5).json()
        return out
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()


def main(model: str, texts: list[str], clients: list[int], requests: int) -> dict:
    """Batching on and off, each at every client count."""
    return {
        "requests": requests,
        "batching_on": measure(model, texts, clients, requests, True),
        "batching_off": measure(model, texts, clients, requests, False),
    }


if __name__ == "__main__":
    import argparse

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", default="builtin:reviews:test")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--clients", default="1,8,32")
    a = p.parse_args()
    from plmkit.data.builtin import load_builtin

    sample = [ex.text for ex in load_builtin(a.data)]
    print(json.dumps(main(a.model, sample, [int(c) for c in a.clients.split(",")], a.requests)))

"""Closed-loop load generators: C concurrent clients send requests back to back for a fixed time on keep-alive
connections. ``wrk`` (C, from Debian) when it is installed: it needs a few percent of a core where a Python
client needs most of one, which matters on a 2-core box; else asyncio + aiohttp. Streams (SSE) use a small
asyncio protocol with httptools' C parser (wrk cannot time the first token)."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httptools
import numpy as np

try:
    import uvloop
except ImportError:  # the gateway's event loop; plain asyncio works too, with more client CPU
    uvloop = None


async def _closed_loop(call, concurrency: int, seconds: float, warmup: float) -> dict:
    """``concurrency`` clients, each awaiting ``call()`` (-> whether it succeeded) back to back; the calls that
    start after ``warmup`` are counted for ``seconds``."""
    lat: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + warmup + seconds
    record_from = time.perf_counter() + warmup

    async def client():
        nonlocal errors
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            ok = await call()
            t1 = time.perf_counter()
            if t0 >= record_from:
                if ok:
                    lat.append(t1 - t0)
                else:
                    errors += 1
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return summarize(lat, errors, seconds)


async def _run(url: str, body: bytes, concurrency: int, seconds: float, warmup: float, headers: dict) -> dict:
    import aiohttp  # only where wrk is missing (the load extra)
    conn = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=conn, headers={"Content-Type": "application/json", **headers}) as s:
        async def post() -> bool:
            try:
                async with s.post(url, data=body) as r:
                    await r.read()
                    return r.status == 200
            except aiohttp.ClientError:
                return False
        return await _closed_loop(post, concurrency, seconds, warmup)


async def _triton(protocol: str, target: str, inputs: list[tuple[str, str, np.ndarray]], model: str,
                  concurrency: int, seconds: float, warmup: float) -> dict:
    if protocol == "grpc":
        import tritonclient.grpc.aio as lib
        client = lib.InferenceServerClient(target)
    else:
        import tritonclient.http.aio as lib  # type: ignore[no-redef]
        client = lib.InferenceServerClient(target, conn_limit=concurrency)
    tensors = []
    for name, datatype, arr in inputs:
        t = lib.InferInput(name, list(arr.shape), datatype)
        t.set_data_from_numpy(arr)  # binary tensor data, over HTTP as well
        tensors.append(t)

    async def infer() -> bool:
        try:
            await client.infer(model, tensors)
            return True
        except Exception:  # noqa: BLE001 - counted as an error, whatever the client raised
            return False
    try:
        return await _closed_loop(infer, concurrency, seconds, warmup)
    finally:
        await client.close()


def triton(protocol: str, target: str, inputs: list[tuple[str, str, np.ndarray]], model: str, concurrency: int,
           seconds: float = 8.0, warmup: float = 1.0) -> dict:
    """Requests/s of tritonclient's own asyncio client, ``protocol`` "grpc" or "http" (binary tensors): the same
    client code for both, so their ratio compares the protocols."""
    return asyncio.run(_triton(protocol, target, inputs, model, concurrency, seconds, warmup))


def summarize(lat: list[float], errors: int, seconds: float) -> dict:
    a = np.array(lat) * 1000 if lat else np.array([np.nan])
    return {"requests": len(lat), "errors": errors, "rps": len(lat) / seconds,
            "p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "p99_ms": float(np.percentile(a, 99))}


WRK_SCRIPT = Path(__file__).with_name("wrk_report.lua")


def tool() -> str:
    return "wrk" if shutil.which("wrk") and os.environ.get("BENCH_CLIENT", "wrk") == "wrk" else "aiohttp"


def _wrk(url: str, body: bytes, concurrency: int, seconds: float, headers: dict) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        f.write(body)
        f.flush()
        out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "30s",
                              "-s", str(WRK_SCRIPT), url], capture_output=True, text=True, check=True,
                             env={**os.environ, "WRK_BODY_FILE": f.name,
                                  "WRK_HEADERS": "\n".join(f"{k}: {v}" for k, v in headers.items())}).stdout
    r = json.loads(out.strip().splitlines()[-1])
    errors = r["non_2xx"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
    ok = r["requests"] - r["non_2xx"]
    return {"requests": ok, "errors": errors, "rps": ok / r["seconds"], "p50_ms": r["p50_us"] / 1000,
            "p95_ms": r["p95_us"] / 1000, "p99_ms": r["p99_us"] / 1000}


def run(url: str, body: bytes, concurrency: int, seconds: float = 8.0, warmup: float = 1.0,
        headers: dict | None = None) -> dict:
    """POST ``body`` (JSON unless ``headers`` say otherwise) back to back from ``concurrency`` clients."""
    headers = headers or {}
    if tool() == "wrk":
        if warmup > 0:
            _wrk(url, body, concurrency, warmup, headers)
        return _wrk(url, body, concurrency, seconds, headers)
    return asyncio.run(_run(url, body, concurrency, seconds, warmup, headers))


TOKEN_EVENT = b'data: {"token"'


class _StreamClient(asyncio.Protocol):
    """One keep-alive connection that runs SSE generations back to back until ``deadline`` (the one in flight
    then is finished and counted). httptools parses the responses; tokens are counted by their event marker
    in the raw body, without parsing events: at 32 streams the client shares the server's two cores, and
    aiohttp's reader took about 0.25 of them (this takes a few hundredths)."""

    def __init__(self, request: bytes, deadline: float, stats: dict, done: asyncio.Future):
        self.request, self.deadline, self.stats, self.done = request, deadline, stats, done
        self.parser = httptools.HttpResponseParser(self)
        self.transport = None
        self.carry = b""
        self.t0 = self.first = 0.0
        self.ok = True

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._send()

    def _send(self) -> None:
        self.t0, self.first, self.carry, self.ok = time.perf_counter(), 0.0, b"", True
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.stats["errors"] += 1
            self.done.set_result(None)

    def on_headers_complete(self) -> None:
        self.ok = self.parser.get_status_code() == 200

    def on_body(self, body: bytes) -> None:
        text = self.carry + body if self.carry else body
        n = text.count(TOKEN_EVENT)
        self.carry = text[1 - len(TOKEN_EVENT):]
        if n and self.ok:
            if not self.first:
                self.first = time.perf_counter() - self.t0
            self.stats["tokens"] += n

    def on_message_complete(self) -> None:
        if self.ok and self.first:
            self.stats["ttft"].append(self.first)
            self.stats["requests"] += 1
        else:
            self.stats["errors"] += 1
        if time.perf_counter() < self.deadline:
            self._send()
        else:
            self.done.set_result(None)
            self.transport.close()


async def _stream(host: str, port: int, path: str, body: bytes, streams: int, seconds: float) -> dict:
    """``streams`` connections each run SSE generations back to back for ``seconds``: aggregate tokens/s over
    the whole run (in-flight generations are finished and counted), and time to first token per request."""
    loop = asyncio.get_running_loop()
    request = (b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\nAccept: text/event-stream"
               b"\r\nContent-Length: %d\r\n\r\n" % (path.encode(), host.encode(), port, len(body))) + body
    stats = {"ttft": [], "tokens": 0, "errors": 0, "requests": 0}
    t0 = time.perf_counter()
    done = [loop.create_future() for _ in range(streams)]
    for d in done:
        await loop.create_connection(lambda d=d: _StreamClient(request, t0 + seconds, stats, d), host, port)
    await asyncio.gather(*done)
    wall = time.perf_counter() - t0
    a = np.array(stats["ttft"] or [float("nan")]) * 1000
    return {"streams": streams, "requests": stats["requests"], "errors": stats["errors"], "tokens": stats["tokens"],
            "seconds": wall, "tokens_per_s": stats["tokens"] / wall, "ttft_p50_ms": float(np.percentile(a, 50)),
            "ttft_p99_ms": float(np.percentile(a, 99))}


def stream(url: str, body: bytes, streams: int, seconds: float = 8.0) -> dict:
    u = urlsplit(url)
    coro = _stream(u.hostname, u.port or 80, u.path, body, streams, seconds)
    return uvloop.run(coro) if uvloop is not None else asyncio.run(coro)

"""A light closed-loop load generator (asyncio + aiohttp): C concurrent clients send requests back to back for
a fixed time on keep-alive connections; latencies are recorded per request."""
from __future__ import annotations

import asyncio
import time

import aiohttp
import numpy as np


async def _run(url: str, body: bytes, concurrency: int, seconds: float, warmup: float) -> dict:
    lat: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + warmup + seconds
    record_from = time.perf_counter() + warmup
    conn = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=conn, headers={"Content-Type": "application/json"}) as s:
        async def client():
            nonlocal errors
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                try:
                    async with s.post(url, data=body) as r:
                        await r.read()
                        ok = r.status == 200
                except aiohttp.ClientError:
                    ok = False
                t1 = time.perf_counter()
                if t0 >= record_from:
                    if ok:
                        lat.append(t1 - t0)
                    else:
                        errors += 1
        await asyncio.gather(*(client() for _ in range(concurrency)))
    return summarize(lat, errors, seconds)


def summarize(lat: list[float], errors: int, seconds: float) -> dict:
    a = np.array(lat) * 1000 if lat else np.array([np.nan])
    return {"requests": len(lat), "errors": errors, "rps": len(lat) / seconds,
            "p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "p99_ms": float(np.percentile(a, 99))}


def run(url: str, body: bytes, concurrency: int, seconds: float = 8.0, warmup: float = 1.0) -> dict:
    return asyncio.run(_run(url, body, concurrency, seconds, warmup))


async def _stream(url: str, body: bytes, streams: int, repeats: int) -> dict:
    """Concurrent SSE generations: aggregate tokens/s and time to first token."""
    ttft, tokens = [], 0
    async with aiohttp.ClientSession() as s:
        async def one():
            nonlocal tokens
            for _ in range(repeats):
                t0 = time.perf_counter()
                first = None
                async with s.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                    async for line in r.content:
                        if line.startswith(b"data: {\"token\""):
                            first = first or time.perf_counter() - t0
                            tokens += 1
                ttft.append(first)
        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(streams)))
        wall = time.perf_counter() - t0
    a = np.array([t for t in ttft if t is not None]) * 1000
    return {"streams": streams, "tokens": tokens, "seconds": wall, "tokens_per_s": tokens / wall,
            "ttft_p50_ms": float(np.percentile(a, 50)), "ttft_p99_ms": float(np.percentile(a, 99))}


def stream(url: str, body: bytes, streams: int, repeats: int = 2) -> dict:
    return asyncio.run(_stream(url, body, streams, repeats))

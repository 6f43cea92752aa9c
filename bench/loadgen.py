"""Closed-loop load generators: C concurrent clients send requests back to back for a fixed time on keep-alive
connections. ``wrk`` (C, from Debian) when it is installed: it needs a few percent of a core where a Python
client needs most of one, which matters on a 2-core box; else asyncio + aiohttp. Streams (SSE) always use
aiohttp."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

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


WRK_SCRIPT = Path(__file__).with_name("wrk_report.lua")


def tool() -> str:
    return "wrk" if shutil.which("wrk") and os.environ.get("BENCH_CLIENT", "wrk") == "wrk" else "aiohttp"


def _wrk(url: str, body: bytes, concurrency: int, seconds: float) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        f.write(body)
        f.flush()
        out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "30s",
                              "-s", str(WRK_SCRIPT), url], capture_output=True, text=True,
                             env={**os.environ, "WRK_BODY_FILE": f.name}, check=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    errors = r["non_2xx"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
    ok = r["requests"] - r["non_2xx"]
    return {"requests": ok, "errors": errors, "rps": ok / r["seconds"], "p50_ms": r["p50_us"] / 1000,
            "p95_ms": r["p95_us"] / 1000, "p99_ms": r["p99_us"] / 1000}


def run(url: str, body: bytes, concurrency: int, seconds: float = 8.0, warmup: float = 1.0) -> dict:
    if tool() == "wrk":
        _wrk(url, body, concurrency, warmup)
        return _wrk(url, body, concurrency, seconds)
    return asyncio.run(_run(url, body, concurrency, seconds, warmup))


async def _stream(url: str, body: bytes, streams: int, seconds: float) -> dict:
    """``streams`` clients each open SSE generations back to back for ``seconds``: aggregate tokens/s over
    the whole run (in-flight streams are finished and counted), and time to first token per request."""
    ttft, tokens, errors, requests_done = [], 0, 0, 0
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with aiohttp.ClientSession(timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=streams + 4)) as s:
        async def one(deadline: float):
            nonlocal tokens, errors, requests_done
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                first = None
                async with s.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                    if r.status != 200:
                        errors += 1
                        await r.read()
                        continue
                    # count token events per received chunk (cheap) rather than parsing line by line, so the
                    # client is not what limits the measured tokens/s
                    async for chunk in r.content.iter_any():
                        n = chunk.count(b'data: {"token"')
                        if n:
                            first = first or time.perf_counter() - t0
                            tokens += n
                ttft.append(first)
                requests_done += 1
        t0 = time.perf_counter()
        await asyncio.gather(*(one(t0 + seconds) for _ in range(streams)))
        wall = time.perf_counter() - t0
    a = np.array([t for t in ttft if t is not None] or [float("nan")]) * 1000
    return {"streams": streams, "requests": requests_done, "errors": errors, "tokens": tokens, "seconds": wall,
            "tokens_per_s": tokens / wall, "ttft_p50_ms": float(np.percentile(a, 50)),
            "ttft_p99_ms": float(np.percentile(a, 99))}


def stream(url: str, body: bytes, streams: int, seconds: float = 8.0) -> dict:
    return asyncio.run(_stream(url, body, streams, seconds))

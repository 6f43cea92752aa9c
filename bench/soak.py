"""Bounded soak: N requests (default 100k) across every model through the gateway of a running stack, then
the memory (RSS) of every process before and after, and the count of failed requests.

    python -m bench.soak --url http://127.0.0.1:8080 --requests 100000 --concurrency 16
(start the stack first with `make serve`; the script finds its processes by their gunicorn names)."""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import time
from pathlib import Path

import aiohttp

P = json.loads((Path(__file__).resolve().parent.parent / "loadtest" / "payloads.json").read_text())
MIX = [("/api/mnist/predict", lambda: {"image": random.choice(P["digits"])["grid"]}, 6),
       ("/api/sentiment/predict", lambda: {"text": random.choice(P["reviews"])["text"]}, 5),
       ("/api/translate", lambda: {"text": random.choice(P["sentences"]), "beam_size": random.choice([1, 2, 4])}, 2),
       ("/api/generate", lambda: {"prompt": random.choice(P["prompts"]), "max_tokens": 40,
                                  "seed": random.randrange(9999)}, 2),
       ("/api/gan/sample", lambda: {"n": 4, "seed": random.randrange(9999)}, 2)]


def rss() -> dict[str, int]:
    """RSS in MiB of every gunicorn process of the stack, by its --name."""
    out = {}
    ps = subprocess.run(["ps", "-eo", "pid,rss,args"], capture_output=True, text=True).stdout.splitlines()[1:]
    for line in ps:
        pid, kb, args = line.strip().split(None, 2)
        if "gunicorn" in args and "--name" in args:
            name = args.split("--name", 1)[1].split()[0]
            out[f"{name}[{pid}]"] = int(kb) // 1024
    return out


async def drive(url: str, n: int, concurrency: int) -> dict:
    paths = [m for m in MIX for _ in range(m[2])]
    done = failed = 0
    by_status: dict[int, int] = {}
    async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as s:
        async def worker():
            nonlocal done, failed
            while done + failed < n:
                path, body, _ = random.choice(paths)
                try:
                    async with s.post(url + path, data=json.dumps(body())) as r:
                        await r.read()
                        by_status[r.status] = by_status.get(r.status, 0) + 1
                        if r.status == 200:
                            done += 1
                        else:
                            failed += 1
                except aiohttp.ClientError:
                    failed += 1
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"ok": done, "failed": failed, "by_status": by_status}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--requests", type=int, default=100_000)
    p.add_argument("--concurrency", type=int, default=16)
    args = p.parse_args(argv)
    before = rss()
    t0 = time.time()
    res = asyncio.run(drive(args.url, args.requests, args.concurrency))
    after = rss()
    print(json.dumps({"requests": args.requests, "seconds": round(time.time() - t0, 1), **res,
                      "rss_mib_before": before, "rss_mib_after": after}, indent=2))
    return 0 if res["failed"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

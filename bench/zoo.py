"""A zoo under a memory budget: N small imported models (``--models``, 1,000 by default) in one models service
behind the gateway, requests drawn from a Zipf distribution over the models (s = 1.1) by 32 concurrent clients,
with a budget that holds a quarter of them, and the same zoo and load with no budget (everything fits here).

Reported per run: requests/s, p50 and p99 of every request, the hit ratio (requests that found their model
loaded: 1 - loads / requests), cold loads with their p50 and p99 wait (``model_cold_start_seconds``), evictions,
and the peak bytes in use sampled every half second against the budget, and the service's peak PSS.

The same zoo and load also run on Ray Serve's model multiplexing (the anchor, ``run_ray``).

``python -m bench.zoo`` writes ``bench/results/<machine>/zoo.{json,md}``. Its client is Python (aiohttp: each
request names another model, which wrk cannot), on the same 2 cores."""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import requests
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
HIDDEN = 64  # 784 -> 64 -> 10: 0.2 MB of weights a model
NO_BUDGET = 10**13  # bytes: more than any machine here, so everything fits


def build_zoo(n: int, work: Path) -> Path:
    """``n`` MLPs imported with the import command (each its own weights) -> their repository."""
    from tests.imported import import_onnx, mlp  # the test suite's model builder and import call
    for i in range(n):
        import_onnx(mlp(i, HIDDEN), f"z{i:04d}", work, "--max-batch-size", "8")
    return work / "repo"


def metric_sums(url: str) -> dict[str, float]:
    """Every sample of the service's metrics summed by name (over models and workers)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(requests.get(url, timeout=10).text):
        for s in family.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def histogram_quantile(url: str, name: str, q: float) -> float:
    """A quantile of a histogram's buckets (upper bound of the bucket it falls in), over every label set."""
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(requests.get(url, timeout=10).text):
        for s in family.samples:
            if s.name == f"{name}_bucket":
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0
    for le in bounds:
        if total and buckets[le] >= q * total:
            return le
    return float("nan")


async def load(gateway: str, n: int, concurrency: int, seconds: float, seed: int = 0,
               model_header: str | None = None) -> dict:
    """``model_header``: a header that names each request's model too (Ray Serve routes on it)."""
    import aiohttp
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n + 1) ** 1.1
    draws = rng.choice(n, size=2_000_000, p=weights / weights.sum())
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP32",
                                   "data": [0.5] * 784}]}).encode()
    lat, errors, k = [], 0, [0]
    stop_at = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency),
                                     headers={"Content-Type": "application/json"}) as s:
        async def client():
            nonlocal errors
            while time.perf_counter() < stop_at:
                model = f"z{draws[k[0] % len(draws)]:04d}"
                k[0] += 1
                t0 = time.perf_counter()
                try:
                    async with s.post(f"{gateway}/v2/models/{model}/infer", data=body,
                                      headers={model_header: model} if model_header else None) as r:
                        await r.read()
                        ok = r.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    lat.append(time.perf_counter() - t0)
                else:
                    errors += 1
        await asyncio.gather(*(client() for _ in range(concurrency)))
    a = np.array(lat) * 1000
    return {"requests": len(lat), "errors": errors, "rps": len(lat) / seconds,
            "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "distinct_models": int(len(set(draws[:k[0]].tolist())))}


def run(repo: Path, budget: int | None, seconds: float, logs: Path, tag: str) -> dict:
    from bench.run import free_port, start, stop
    ports = {k: free_port() for k in ("models", "gateway")}
    env = {"MODEL_POLL_SECONDS": "0", "LOG_LEVEL": "WARNING"}
    models_env = {**env, "PORT": str(ports["models"]), "MODEL_REPOSITORY": str(repo),
                  "MODEL_MEMORY_BUDGET": str(budget or NO_BUDGET)}
    procs = [start([sys.executable, "-m", "services", "models"], models_env,
                   f"http://127.0.0.1:{ports['models']}/v2/health/ready", logs / f"zoo-{tag}-models.log"),
             start([sys.executable, "-m", "services", "gateway"],
                   {**env, "GATEWAY_PORT": str(ports["gateway"]), "GRPC_V2_PORT": "0", "GRPC_TFS_PORT": "0",
                    "BACKEND_MODELS_URL": f"http://127.0.0.1:{ports['models']}"},
                   f"http://127.0.0.1:{ports['gateway']}/v2/health/live", logs / f"zoo-{tag}-gateway.log")]
    metrics = f"http://127.0.0.1:{ports['models']}/metrics"
    peak = {"in_use": 0.0, "pss": 0}
    done = threading.Event()

    def sample():
        tree = [psutil.Process(procs[0].pid), *psutil.Process(procs[0].pid).children(recursive=True)]
        while not done.wait(0.5):
            try:
                peak["in_use"] = max(peak["in_use"], metric_sums(metrics).get("model_memory_in_use_bytes", 0.0))
                peak["pss"] = max(peak["pss"], sum(p.memory_full_info().pss for p in tree))
            except (requests.RequestException, psutil.Error):
                pass
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        n = sum(1 for p in repo.iterdir() if p.is_dir())
        r = asyncio.run(load(f"http://127.0.0.1:{ports['gateway']}", n, 32, seconds))
        done.set()
        sampler.join()
        m = metric_sums(metrics)
        loads = m.get("model_loads_total", 0.0)
        r.update(loads=loads, evictions=m.get("model_evictions_total", 0.0),
                 hit_ratio=1 - loads / max(r["requests"], 1), budget=metric_sums(metrics).get(
                     "model_memory_budget_bytes", 0.0), peak_in_use=peak["in_use"], peak_pss=peak["pss"],
                 cold_p50_s=histogram_quantile(metrics, "model_cold_start_seconds", 0.5),
                 cold_p99_s=histogram_quantile(metrics, "model_cold_start_seconds", 0.99))
        return r
    finally:
        done.set()
        stop(procs)


def run_ray(repo: Path, models_per_replica: int, seconds: float, logs: Path) -> dict:
    """The same zoo and load on Ray Serve's model multiplexing (bench/peers/ray_zoo.py): two replicas, as the
    models service has two workers, each holding ``models_per_replica`` models (Ray counts models, not bytes)."""
    from bench.peer_envs import PEERS_DIR, ensure_venv
    from bench.run import free_port, start, stop
    venv, port = ensure_venv("ray"), free_port()
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))  # Ray's sessions and sockets, and the replicas' counts
    (work / "stats").mkdir()
    env = {"PORT": str(port), "REPOSITORY": str(repo), "REPLICAS": "2", "MODELS_PER_REPLICA": str(models_per_replica),
           "STATS_DIR": str(work / "stats"), "RAY_TMPDIR": str(work), "TMPDIR": str(work),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    proc = start([str(venv / "bin" / "python"), "ray_zoo.py"], env, f"http://127.0.0.1:{port}/v2/health/ready",
                 logs / "zoo-ray.log", cwd=PEERS_DIR, ok=(200,))
    tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    peak_pss, done = [0], threading.Event()

    def sample():
        while not done.wait(0.5):
            total = 0
            for p in tree:
                try:
                    total += p.memory_full_info().pss
                except psutil.Error:
                    pass
            peak_pss[0] = max(peak_pss[0], total)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        n = sum(1 for p in repo.iterdir() if p.is_dir())
        r = asyncio.run(load(f"http://127.0.0.1:{port}", n, 32, seconds, model_header="serve_multiplexed_model_id"))
        done.set()
        sampler.join()
        per_replica = [json.loads(f.read_text())["loads"] for f in (work / "stats").glob("*.json")]
        loads = sum(per_replica)  # each load past a replica's room dropped its least recently used model
        nan = float("nan")  # figures Ray does not report
        r.update(loads=loads, evictions=sum(max(0, n - models_per_replica) for n in per_replica),
                 hit_ratio=1 - loads / max(r["requests"], 1), budget=nan, peak_in_use=nan, peak_pss=peak_pss[0],
                 cold_p50_s=nan, cold_p99_s=nan)
        return r
    finally:
        done.set()
        for p in tree:  # Ray's own processes (GCS, raylet, workers) may outlive the driver's group
            try:
                p.kill()
            except psutil.Error:
                pass
        stop([proc])
        psutil.wait_procs(tree, timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def budget_mb(budget: float) -> str:
    return "-" if budget != budget else f"{budget / 1e6:.0f}" if budget < NO_BUDGET / 2 else "none"


def secs(x: float) -> str:
    return "-" if x != x else f"{x:g}"


def mb(x: float) -> str:
    return "-" if x != x else f"{x / 1e6:.0f}"  # NaN: Ray reports no such figure


def markdown(r: dict) -> list[str]:
    lines = [f"# A zoo of {r['models']} imported models under a memory budget, Zipf (s = 1.1) at c=32", "",
             f"{r['seconds']:.0f} s a run through the gateway, the models service with 2 workers; model files "
             f"{r['files_bytes'] / 1e6:.0f} MB.", "",
             "| run | req/s | p50 ms | p99 ms | errors | models asked | hit ratio | cold loads | cold wait p50 / p99 s "
             "| evictions | budget MB | peak in use MB | peak PSS MB |", "|---" * 13 + "|"]
    for name, x in r["runs"].items():
        lines.append(f"| {name} | {x['rps']:.0f} | {x['p50_ms']:.1f} | {x['p99_ms']:.1f} | {x['errors']} | "
                     f"{x['distinct_models']} | {x['hit_ratio']:.3f} | {x['loads']:.0f} | "
                     f"{secs(x['cold_p50_s'])} / {secs(x['cold_p99_s'])} | {x['evictions']:.0f} | "
                     f"{budget_mb(x['budget'])} | "
                     f"{mb(x['peak_in_use'])} | {mb(x['peak_pss'])} |")
    lines += ["", "Cold waits are upper bounds of `model_cold_start_seconds` buckets; the budget and bytes in use are "
              "summed over the workers."]
    return lines


def measure(models: int, seconds: float, logs: Path) -> dict:
    """The zoo built, then served with a budget of a quarter of it, and with none."""
    work = Path(tempfile.mkdtemp(prefix="bench-zoo-"))
    try:
        repo = build_zoo(models, work)
        files = sum(f.stat().st_size for f in repo.rglob("model.onnx*"))
        # a quarter of the zoo: each load makes room for 1.25x its files (each of the 2 workers keeps to half)
        budget = int(files / 4 * 1.25)
        return {"models": models, "seconds": seconds, "files_bytes": files, "runs": {
            "budget a quarter of the zoo": run(repo, budget, seconds, logs, "budget"),
            "no budget (it all fits)": run(repo, None, seconds, logs, "unbounded"),
            # the budget's room in models: a quarter of the zoo, half of it a worker (each charged 1.25x its files)
            "Ray Serve multiplexing, a quarter of the zoo": run_ray(repo, models // 8, seconds, logs)}}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.zoo", description=__doc__)
    p.add_argument("--models", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / socket.gethostname().split(".")[0])
    args = p.parse_args(argv)
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    r = measure(args.models, args.seconds, args.out / "logs")
    from bench.run import write_results
    write_results(args.out, "zoo", r, markdown(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

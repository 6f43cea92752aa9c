"""Triton beside us, on its own benchmark: the same MNIST graph, the same v2 request with binary tensors (one real
digit in, both outputs out, what tritonclient sends), wrk on loopback.

Targets: our MNIST service direct, our gateway in front of it, and Triton through PyTriton (its C++ front end and
dynamic batcher, 64 rows and 2 ms as our manifest says, in front of an ONNX Runtime session with our options;
``bench/peers/triton_server.py``). Each at c=1, 8, 32 and 64, then all three in interleaved rounds at c=32.
Every point has requests/s, p50 and p99, the server's CPU time per request (its processes' user + system time:
the gateway's and the service's together for the gateway) and rows per batch (ours from ``model_batch_size``,
Triton's from ``nv_inference_count / nv_inference_exec_count``).

``make bench`` runs it (``bench.run``); ``python -m bench.triton`` runs it alone. Writes
``bench/results/<machine>/triton.{json,md}``."""
from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import sys
import tempfile
from pathlib import Path

import psutil
import requests
from prometheus_client.parser import text_string_to_metric_families

from bench import loadgen, peer_envs

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("service", "gateway", "triton")


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
    return total


def batch_counts(url: str, triton: bool) -> tuple[float, float]:
    """(rows run, batches run) so far, from a server's metrics."""
    rows = batches = 0.0
    for family in text_string_to_metric_families(requests.get(url, timeout=10).text):
        for s in family.samples:
            # the parser names a counter's sample NAME_total
            if triton and s.name in ("nv_inference_count_total", "nv_inference_exec_count_total"):
                rows += s.value if s.name == "nv_inference_count_total" else 0
                batches += s.value if s.name == "nv_inference_exec_count_total" else 0
            elif not triton and s.labels.get("model") == "mnist" and s.name in ("model_batch_size_sum",
                                                                                 "model_batch_size_count"):
                rows += s.value if s.name.endswith("_sum") else 0
                batches += s.value if s.name.endswith("_count") else 0
    return rows, batches


def point(target: dict, concurrency: int, seconds: float) -> dict:
    """One measurement of one target, with its CPU per request and rows per batch over the same seconds."""
    loadgen.run(target["url"], target["body"], concurrency, 1.0, warmup=0.0, headers=target["headers"])  # warm
    cpu0, (rows0, b0) = cpu_seconds(target["pids"]), batch_counts(target["metrics"], target["triton"])
    r = loadgen.run(target["url"], target["body"], concurrency, seconds, warmup=0.0, headers=target["headers"])
    cpu1, (rows1, b1) = cpu_seconds(target["pids"]), batch_counts(target["metrics"], target["triton"])
    r["cpu_ms_per_request"] = 1000 * (cpu1 - cpu0) / max(r["requests"] + r["errors"], 1)
    r["rows_per_batch"] = (rows1 - rows0) / max(b1 - b0, 1)
    return r


def compare(seconds: float, rounds: int, conc: list[int], logs: Path) -> dict:
    from bench.run import free_port, latest, start, stop  # bench.run runs this: imported when called
    from training.data import load_mnist_5k
    digit = load_mnist_5k()["test"][0][0].tolist()
    py, env = sys.executable, {"MODEL_POLL_SECONDS": "0", "LOG_LEVEL": "WARNING"}
    ports = {k: free_port() for k in ("service", "gateway")}
    body, headers = peer_envs.v2_binary(digit)
    peer = peer_envs.peer("triton", latest("mnist") / "model.onnx", [free_port() for _ in range(3)], digit)
    scratch = tempfile.mkdtemp(prefix="bench-triton-")  # PyTriton's own temporary folders, removed below
    procs = []
    try:
        procs.append(start([py, "-m", "services", "mnist"], {**env, "PORT": str(ports["service"])},
                           f"http://127.0.0.1:{ports['service']}/v2/health/ready", logs / "triton-cmp-mnist.log"))
        procs.append(start([py, "-m", "services", "gateway"],
                           {**env, "GATEWAY_PORT": str(ports["gateway"]), "GRPC_V2_PORT": "0", "GRPC_TFS_PORT": "0",
                            "BACKEND_MNIST_URL": f"http://127.0.0.1:{ports['service']}"},
                           f"http://127.0.0.1:{ports['gateway']}/v2/health/live", logs / "triton-cmp-gateway.log"))
        procs.append(start(peer.cmd, {**env, **peer.env, "TMPDIR": scratch}, peer.ready_url, logs / "triton.log",
                           peer.cwd, ok=(200,)))
        service_metrics = f"http://127.0.0.1:{ports['service']}/metrics"
        targets = {
            "service": {"url": f"http://127.0.0.1:{ports['service']}/v2/models/mnist/infer", "pids": [procs[0].pid],
                        "metrics": service_metrics, "triton": False},
            "gateway": {"url": f"http://127.0.0.1:{ports['gateway']}/v2/models/mnist/infer",
                        "pids": [procs[0].pid, procs[1].pid], "metrics": service_metrics, "triton": False},
            "triton": {"url": peer.url, "pids": [procs[2].pid], "metrics": peer.metrics_url, "triton": True}}
        for t in targets.values():
            t.update(body=body, headers=headers)
        out: dict = {"sweep": {k: {} for k in targets}, "interleaved_c32": {k: [] for k in targets}}
        for name, t in targets.items():
            for c in conc:
                r = out["sweep"][name][c] = point(t, c, seconds)
                print(f"triton-cmp {name:8s} c={c:3d}: {r['rps']:7.1f} req/s p50 {r['p50_ms']:6.2f} p99 "
                      f"{r['p99_ms']:6.2f} ms cpu {r['cpu_ms_per_request']:.2f} ms/req rows/batch "
                      f"{r['rows_per_batch']:.1f}", flush=True)
        for i in range(rounds):
            for name in (TARGETS if i % 2 == 0 else TARGETS[::-1]):
                out["interleaved_c32"][name].append(point(targets[name], 32, seconds))
        out["ratios"] = ratios(out)
        print("triton-cmp ratios: " + json.dumps(out["ratios"]), flush=True)
        return out
    finally:
        stop(procs)
        shutil.rmtree(scratch, ignore_errors=True)


def ratios(r: dict) -> dict:
    rounds = r["interleaved_c32"]
    paired = lambda a, b, key="rps": statistics.median(  # noqa: E731
        x[key] / y[key] for x, y in zip(rounds[a], rounds[b], strict=True))
    med = lambda a, key: statistics.median(x[key] for x in rounds[a])  # noqa: E731
    out = {"service_vs_triton_c32": paired("service", "triton"), "gateway_vs_triton_c32": paired("gateway", "triton")}
    for name in TARGETS:
        out[f"{name}_cpu_ms_per_request_c32"] = med(name, "cpu_ms_per_request")
        out[f"{name}_rows_per_batch_c32"] = med(name, "rows_per_batch")
    sweep = r["sweep"]
    if 1 in sweep["service"]:
        out["service_p50_vs_triton_c1"] = sweep["service"][1]["p50_ms"] / sweep["triton"][1]["p50_ms"]
        out["gateway_p50_vs_triton_c1"] = sweep["gateway"][1]["p50_ms"] / sweep["triton"][1]["p50_ms"]
    return out


def markdown(r: dict) -> list[str]:
    lines = ["# Triton beside us: MNIST, v2 binary tensors, wrk", "",
             "| target | concurrency | req/s | p50 ms | p99 ms | server CPU ms / request | rows per batch |",
             "|---|---|---|---|---|---|---|"]
    for name, points in r["sweep"].items():
        for c, p in points.items():
            lines.append(f"| {name} | {c} | {p['rps']:.0f} | {p['p50_ms']:.2f} | {p['p99_ms']:.2f} | "
                         f"{p['cpu_ms_per_request']:.2f} | {p['rows_per_batch']:.1f} |")
    lines += ["", f"Interleaved rounds at c=32 ({len(r['interleaved_c32']['service'])}, the first of each round "
              "alternating), req/s: " + "; ".join(f"{k} {[round(p['rps']) for p in v]}"
                                                 for k, v in r["interleaved_c32"].items()), "",
              "| ratio | value |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in r["ratios"].items()]
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.triton", description=__doc__)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--concurrency", default="1,8,32,64")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / socket.gethostname().split(".")[0])
    args = p.parse_args(argv)
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    r = compare(args.seconds, args.rounds, [int(c) for c in args.concurrency.split(",")], args.out / "logs")
    from bench.run import write_results
    write_results(args.out, "triton", r, markdown(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

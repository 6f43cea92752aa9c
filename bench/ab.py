"""``python -m bench.ab --baseline DIR``: this checkout against another one (a ``git worktree`` of an earlier
commit), side by side in interleaved rounds, on the measurements a serving-core change can move:

* MNIST single-image JSON at concurrency 32, the service hit directly and through the gateway (wrk when
  installed, else the aiohttp client);
* text generation: 1 and 32 concurrent SSE streams of 200 tokens (tokens/s, time to first token);
* one imported model: MNIST's graph imported by each checkout's own ``python -m training import``, served by its
  ``models`` service, one digit as v2 JSON at concurrency 32.

Both checkouts' processes run at once on free ports (an idle one costs nothing); each round measures A then B
or B then A, alternately, so a slow spell of the machine lands on both. Writes
``bench/results/<host>/ab-NAME.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

from bench import loadgen
from bench.run import free_port, start, stop

ROOT = Path(__file__).resolve().parent.parent
IMPORTED = "mnist_generic"
GEN = json.dumps({"prompt": "ROMEO:\n", "max_tokens": 200, "temperature": 0.8, "seed": 1, "stream": True}).encode()


def start_tree(tree: Path, logs: Path, tag: str, extra_env: dict) -> tuple[list, dict]:
    """The MNIST service, a gateway in front of it, the textgen service, and the models service with MNIST
    imported, from ``tree``."""
    py = sys.executable
    ports = {k: free_port() for k in ("mnist", "gateway", "textgen", "models")}
    env = {"MODEL_POLL_SECONDS": "0", "LOG_LEVEL": "WARNING", "PYTHONPATH": str(tree), "GRPC_TFS_PORT": "0",
           "GRPC_V2_PORT": "0", **extra_env}  # no gRPC: both gateways run at once
    procs = [start([py, "-m", "services", "mnist"], {**env, "PORT": str(ports["mnist"])},
                   f"http://127.0.0.1:{ports['mnist']}/v2/health/ready", logs / f"{tag}-mnist.log", cwd=tree),
             start([py, "-m", "services", "gateway"], {**env, "GATEWAY_PORT": str(ports["gateway"]),
                                                       "BACKEND_MNIST_URL": f"http://127.0.0.1:{ports['mnist']}"},
                   f"http://127.0.0.1:{ports['gateway']}/v2/health/live", logs / f"{tag}-gateway.log", cwd=tree),
             start([py, "-m", "services", "textgen"], {**env, "PORT": str(ports["textgen"])},
                   f"http://127.0.0.1:{ports['textgen']}/v2/health/ready", logs / f"{tag}-textgen.log", cwd=tree),
             start([py, "-m", "services", "models"], {**env, "PORT": str(ports["models"]),
                                                      "MODEL_REPOSITORY": str(import_mnist(tree, logs / tag))},
                   f"http://127.0.0.1:{ports['models']}/v2/health/ready", logs / f"{tag}-models.log", cwd=tree)]
    urls = {"mnist_direct_c32": f"http://127.0.0.1:{ports['mnist']}/api/mnist/predict",
            "mnist_gateway_c32": f"http://127.0.0.1:{ports['gateway']}/api/mnist/predict",
            "textgen": f"http://127.0.0.1:{ports['textgen']}/api/generate",
            "imported_direct_c32": f"http://127.0.0.1:{ports['models']}/v2/models/{IMPORTED}/infer"}
    return procs, urls


def import_mnist(tree: Path, workdir: Path) -> Path:
    """MNIST's shipped graph imported by ``tree``'s own import command into ``workdir/repo`` -> that repository."""
    from bench.run import latest
    from training.data import load_mnist_5k
    workdir.mkdir(parents=True, exist_ok=True)
    samples, repo = workdir / "mnist-samples.npz", workdir / "repo"
    shutil.rmtree(repo, ignore_errors=True)
    np.savez(samples, image=(load_mnist_5k()["test"][0][:4, ..., None] / 255.0).astype(np.float32))
    subprocess.run([sys.executable, "-m", "training", "import", IMPORTED, str(latest("mnist") / "model.onnx"),
                    "--samples", str(samples), "--out", str(repo)], cwd=tree, check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(tree)})
    return repo


def measure(urls: dict, bodies: dict, seconds: float, only: set[str]) -> dict:
    """Each measurement, or those named in ``only``; ``bodies``: one digit for MNIST's route and as v2 JSON."""
    out = {}
    for key in ("mnist_direct_c32", "mnist_gateway_c32", "imported_direct_c32"):
        if not only or key in only:
            out[key] = loadgen.run(urls[key], bodies[key.split("_")[0]], 32, seconds)["rps"]
    if only and not only & {"sse_1", "sse_32"}:
        return out
    for streams in (1, 32):
        r = loadgen.stream(urls["textgen"], GEN, streams, seconds)
        out[f"sse_{streams}_tokens_per_s"] = r["tokens_per_s"]
        out[f"sse_{streams}_ttft_p99_ms"] = r["ttft_p99_ms"]
    out["sse_32_vs_1"] = out["sse_32_tokens_per_s"] / out["sse_1_tokens_per_s"]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    p.add_argument("--baseline", type=Path, required=True, help="the other checkout (A); this one is B")
    p.add_argument("--this", type=Path, default=ROOT, help="B's checkout (default: this one)")
    p.add_argument("--env-a", action="append", default=[], metavar="KEY=VALUE", help="environment for A's processes")
    p.add_argument("--env-b", action="append", default=[], metavar="KEY=VALUE", help="environment for B's processes")
    p.add_argument("--name", default="core", help="results file name: ab-NAME.{json,md}")
    p.add_argument("--only", action="append", default=[], metavar="KEY",
                   help="measure only these (mnist_direct_c32, mnist_gateway_c32, imported_direct_c32, sse_1, sse_32)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / socket.gethostname().split(".")[0])
    args = p.parse_args(argv)
    logs = args.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    from training.data import load_mnist_5k
    digit = load_mnist_5k()["test"][0][0]
    bodies = {"mnist": json.dumps({"image": digit.tolist()}).encode(),
              "imported": json.dumps({"inputs": [{"name": "image", "shape": [1, 28, 28, 1], "datatype": "FP32",
                                                  "data": (digit / 255.0).reshape(-1).tolist()}]}).encode()}
    trees = {"A": args.baseline.resolve(), "B": args.this.resolve()}
    envs = {"A": dict(kv.split("=", 1) for kv in args.env_a), "B": dict(kv.split("=", 1) for kv in args.env_b)}
    procs, urls = [], {}
    try:
        for tag, tree in trees.items():
            ps, urls[tag] = start_tree(tree, logs, tag, envs[tag])
            procs += ps
        rounds: dict[str, list[dict]] = {"A": [], "B": []}
        for i in range(args.rounds):
            for tag in (("A", "B") if i % 2 == 0 else ("B", "A")):
                rounds[tag].append(measure(urls[tag], bodies, args.seconds, set(args.only)))
                print(f"round {i + 1} {tag}: " + ", ".join(f"{k} {v:.1f}" for k, v in rounds[tag][-1].items()),
                      flush=True)
    finally:
        stop(procs)
    keys = list(rounds["A"][0])
    summary = {k: {"A_median": statistics.median(r[k] for r in rounds["A"]),
                   "B_median": statistics.median(r[k] for r in rounds["B"]),
                   "B_vs_A_paired_median": statistics.median(
                       b[k] / a[k] for a, b in zip(rounds["A"], rounds["B"], strict=True))}
               for k in keys}
    result = {"A": str(trees["A"]), "B": str(trees["B"]), "env": envs, "rounds": rounds, "summary": summary,
              "seconds": args.seconds, "client": loadgen.tool()}
    (args.out / f"ab-{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# A/B: {args.name} ({args.rounds} interleaved rounds of {args.seconds:.0f} s, "
             f"client {loadgen.tool()})", "",
             f"A: {trees['A']} {envs['A'] or ''}; B: {trees['B']} {envs['B'] or ''}", "",
             "| measurement | A (baseline) median | B (this) median | B / A, median of paired rounds |",
             "|---|---|---|---|"]
    lines += [f"| {k} | {v['A_median']:.1f} | {v['B_median']:.1f} | {v['B_vs_A_paired_median']:.3f} |"
              for k, v in summary.items()]
    (args.out / f"ab-{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

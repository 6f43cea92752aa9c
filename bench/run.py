"""``make bench``: start what is measured, drive it on loopback, write Markdown, JSON and a PNG plot.

MNIST (one 28x28 digit per request, the same JSON semantics everywhere): raw ONNX Runtime in-process at
batch 1 and at its best batch (the ceiling), a naive per-request Flask + onnxruntime app, our service
directly and through the gateway, at concurrency 1, 8, 32, 64. Text generation: aggregate tokens/s and
time to first token at 1, 8, 32 concurrent streams, with continuous batching and with one sequence at a time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

from bench import imported, loadgen, peer_envs, triton, zoo
from services.ports import StackPorts

ROOT = Path(__file__).resolve().parent.parent
REPO = ROOT / "exported_models"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict, ready_url: str, log: Path, cwd: Path = ROOT,
          ok=(200, 404, 405)) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **env}, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    for _ in range(240):
        try:
            if requests.get(ready_url, timeout=1).status_code in ok:
                return proc
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd} exited: {log.read_text()[-2000:]}")
        time.sleep(0.5)
    raise RuntimeError(f"{cmd} not ready")


def write_results(out: Path, name: str, result: dict, lines: list[str], show: bool = True) -> None:
    """``out/NAME.json`` (the figures) and ``out/NAME.md`` (the table), printed too."""
    (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    if show:
        print("\n".join(lines))


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each process group (servers with worker processes), SIGKILL what is left after 30 s."""
    for p_ in procs:
        try:
            os.killpg(p_.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p_ in procs:
        try:
            p_.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p_.pid, signal.SIGKILL)
    procs.clear()


def measure_mnist(name: str, url: str, body: bytes, conc: list[int], seconds: float) -> dict:
    """One MNIST target at every concurrency; prints each point as it is measured."""
    out = {}
    for c in conc:
        r = out[c] = loadgen.run(url, body, c, seconds)
        print(f"mnist {name:12s} c={c:3d}: {r['rps']:8.1f} req/s  p50 {r['p50_ms']:6.2f}  p99 {r['p99_ms']:7.2f} ms"
              f"  errors {r['errors']}", flush=True)
    return out


def latest(name: str) -> Path:
    return REPO / name / str(max(int(p.name) for p in (REPO / name).iterdir() if p.name.isdigit()))


def raw_ort(seconds: float, device: str) -> dict:
    import onnxruntime as ort

    from services.runtime.sessions import create_session
    sess = create_session(latest("mnist") / "model.onnx", device)
    rng = np.random.default_rng(0)
    out = {}
    for batch in (1, 8, 32, 64) + ((256, 1024) if device == "cuda" else ()):  # a GPU's best batch is larger
        x = rng.random((batch, 28, 28, 1), dtype=np.float32)
        for _ in range(5):
            sess.run(["probabilities"], {"image": x})
        lat = []
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            sess.run(["probabilities"], {"image": x})
            lat.append(time.perf_counter() - t0)
        a = np.array(lat) * 1000
        out[batch] = {"images_per_s": batch * len(lat) / seconds, "p50_ms": float(np.percentile(a, 50)),
                      "p99_ms": float(np.percentile(a, 99))}
    best = max(out, key=lambda b: out[b]["images_per_s"])
    return {"by_batch": out, "batch1_images_per_s": out[1]["images_per_s"], "best_batch": best,
            "best_images_per_s": out[best]["images_per_s"], "onnxruntime": ort.__version__}


def raw_decoder(seconds: float, streams: int, rounds: int) -> dict:
    """The text generator's ceiling here: the service's own scheduler, sampling and step graph in-process, with
    no HTTP, no SSE and no client. One stream alone, then ``streams`` split evenly over as many scheduler
    threads as the service has workers (sharing one session, as ONNX Runtime allows), in interleaved rounds.
    Its many-vs-one ratio bounds what the served ratio can reach on this machine."""
    import threading

    from modelcore.manifest import load_and_verify
    from modelcore.scheduler import Scheduler
    from services.runtime.config import web_workers
    from services.settings import SERVICE_DEFAULTS, ServiceSettings
    from services.textgen.model import Stream, TextgenServable
    saved = os.environ.get("ORT_INTRA_OP_THREADS")
    os.environ["ORT_INTRA_OP_THREADS"] = saved or SERVICE_DEFAULTS["textgen"]["ORT_INTRA_OP_THREADS"]  # the service's
    ServiceSettings.load.cache_clear()  # this process's settings, as the textgen service reads them
    try:
        version = latest("textgen")
        model = TextgenServable(load_and_verify(version), version).model
    finally:
        if saved is None:
            os.environ.pop("ORT_INTRA_OP_THREADS")
        ServiceSettings.load.cache_clear()
    workers = min(web_workers(), streams)

    def generate(n: int, deadline: float, counts: list) -> None:
        sched, made = Scheduler(max_rows=256), []
        while time.perf_counter() < deadline:  # generations back to back, as the clients send them
            for _ in range(n - len(sched.jobs)):
                made.append(Stream(model, [], False).job("ROMEO:\n", 200, 0.8, 0, 1.0, len(made)))
                sched.jobs.append(made[-1])
            sched.tick()
        counts.append(sum(len(j.tokens) for j in made))

    def run(n: int, threads: int) -> float:
        counts: list = []
        t0 = time.perf_counter()
        ts = [threading.Thread(target=generate, args=(n // threads, t0 + seconds, counts)) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return sum(counts) / (time.perf_counter() - t0)

    out = {"workers": workers, "streams": streams, "one": [], "many": []}
    for _ in range(rounds):
        out["one"].append(run(1, 1))
        out["many"].append(run(streams, workers))
    return out


# a real passage (Romeo and Juliet, II.2), repeated to the length measured
LONG_PROMPT = ("ROMEO:\nBut, soft! what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n"
               "Arise, fair sun, and kill the envious moon,\nWho is already sick and pale with grief,\n"
               "That thou her maid art far more fair than she:\n")


def long_prompts(url: str, busy_body: bytes, others: int, seconds: float, lengths=(100, 1000, 2000)) -> dict:
    """Time to first token for prompts of ``lengths`` characters (20 tokens each), alone and beside ``others``
    streams of short prompts running back to back; and those streams' tokens/s meanwhile."""
    import threading
    out = {}
    for n in lengths:
        body = json.dumps({"prompt": (LONG_PROMPT * (n // len(LONG_PROMPT) + 1))[:n], "max_tokens": 20, "seed": 1,
                           "stream": True}).encode()
        alone = loadgen.stream(url, body, 1, seconds)
        bg: dict = {}
        t = threading.Thread(target=lambda into=bg: into.update(loadgen.stream(url, busy_body, others, seconds + 1)))
        t.start()
        time.sleep(0.5)
        busy = loadgen.stream(url, body, 1, seconds)
        t.join()
        out[n] = {"alone_p50_ms": alone["ttft_p50_ms"], "alone_p99_ms": alone["ttft_p99_ms"],
                  "busy_p50_ms": busy["ttft_p50_ms"], "busy_p99_ms": busy["ttft_p99_ms"],
                  "others": others, "others_tokens_per_s": bg["tokens_per_s"],
                  "errors": alone["errors"] + busy["errors"] + bg["errors"]}
    return out


def gpu_name() -> str:
    """The GPU ONNX Runtime runs on (nvidia-smi's name, memory and driver), or "none"."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "none"
    lines = out.stdout.strip().splitlines()
    return lines[0].replace(", ", " / ") + " (driver)" if out.returncode == 0 and lines else "none"


def machine(device: str) -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(next(line.split()[1] for line in f if line.startswith("MemTotal"))) // 1024 // 1024
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem, "python": platform.python_version(),
            "platform": platform.platform(), "gpu": gpu_name() if device == "cuda" else "none (CPU run)",
            "device": device}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per point")
    p.add_argument("--concurrency", default="1,8,32,64")
    p.add_argument("--streams", default="1,8,32")
    p.add_argument("--rounds", type=int, default=5,
                   help="interleaved rounds behind the target ratios (this shared VM drifts by tens of percent)")
    p.add_argument("--peers", default=",".join(peer_envs.PEERS),
                   help="comma-separated peers to install (bench/.venvs) and measure; 'none' to skip")
    p.add_argument("--zoo-models", type=int, default=1000, help="imported models in the zoo benchmark (0: skip)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where every session runs (MODEL_DEVICE for the services, the naive app and in-process); "
                        "cuda needs onnxruntime-gpu and a GPU")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / socket.gethostname().split(".")[0])
    args = p.parse_args(argv)
    os.environ["MODEL_DEVICE"] = args.device  # the servers started below inherit it
    conc = [int(c) for c in args.concurrency.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / "logs"
    logs.mkdir(exist_ok=True)
    py = sys.executable
    results = {"machine": machine(args.device), "seconds_per_point": args.seconds, "client": loadgen.tool(),
               "mnist": {}, "textgen": {}}
    print("raw ONNX Runtime (in-process) ...", flush=True)
    results["raw_ort"] = raw_ort(min(args.seconds, 4), args.device)
    streams = [int(s) for s in args.streams.split(",")]
    print("raw text generation (in-process scheduler, no HTTP) ...", flush=True)
    results["raw_decoder"] = raw_decoder(min(args.seconds, 4), max(streams), args.rounds)
    print("raw text generation tokens/s: " + ", ".join(f"{k} {[round(x) for x in v]}"
                                                       for k, v in results["raw_decoder"].items()
                                                       if isinstance(v, list)), flush=True)

    from training.data import load_mnist_5k
    digit = load_mnist_5k()["test"][0][0].tolist()
    body = json.dumps({"image": digit}).encode()
    ports = {k: free_port() for k in ("naive", "naive_2w", "service", "models", "gateway", "gateway_grpc",
                                      "textgen", "textgen_seq")}
    # MNIST's graph imported as a generic model, for the models service (bench/imported.py)
    imported_work = Path(tempfile.mkdtemp(prefix="bench-imported-"))
    imported_repo = imported.import_mnist(imported_work, load_mnist_5k()["test"][0])
    base_env = {"MODEL_POLL_SECONDS": "0", "LOG_LEVEL": "WARNING"}
    procs = []
    try:
        # the naive app with one worker, and with one worker per CPU as our service has by default (fair comparison)
        for key, workers in (("naive", {"WEB_CONCURRENCY": "1"}), ("naive_2w", {})):
            procs.append(start([py, "-m", "gunicorn", "-c", "python:services.runtime.gunicorn_conf",
                                "bench.peers.naive_flask:app"],
                               {**base_env, "PORT": str(ports[key]), "MODEL_PATH": str(latest("mnist") / "model.onnx"),
                                **workers},
                               f"http://127.0.0.1:{ports[key]}/", logs / f"{key}.log"))
        procs.append(start([py, "-m", "services", "mnist"], {**base_env, "PORT": str(ports["service"])},
                           f"http://127.0.0.1:{ports['service']}/v2/health/ready", logs / "mnist.log"))
        procs.append(imported.start_models_service(imported_repo, ports["models"], base_env, logs / "models.log"))
        procs.append(start([py, "-m", "services", "gateway"],
                           {**base_env, "GATEWAY_PORT": str(ports["gateway"]),
                            "GRPC_V2_PORT": str(ports["gateway_grpc"]), "GRPC_TFS_PORT": "0",
                            "BACKEND_MNIST_URL": f"http://127.0.0.1:{ports['service']}",
                            "BACKEND_MODELS_URL": f"http://127.0.0.1:{ports['models']}"},
                           f"http://127.0.0.1:{ports['gateway']}/v2/health/live", logs / "gateway.log"))
        targets = {"naive_flask": f"http://127.0.0.1:{ports['naive']}/api/mnist/predict",
                   "naive_flask_workers": f"http://127.0.0.1:{ports['naive_2w']}/api/mnist/predict",
                   "service": f"http://127.0.0.1:{ports['service']}/api/mnist/predict",
                   "gateway": f"http://127.0.0.1:{ports['gateway']}/api/mnist/predict"}
        for name, url in targets.items():
            results["mnist"][name] = measure_mnist(name, url, body, conc, args.seconds)
        # the targets' ratios at c=32, measured again interleaved (naive, service, gateway, in rounds) so a
        # slow spell of this shared machine does not land on one target only; the ratios use the medians
        rounds = results["interleaved_c32"] = {k: [] for k in ("naive_flask", "service", "gateway")}
        for _ in range(args.rounds):
            for name in rounds:
                rounds[name].append(loadgen.run(targets[name], body, 32, args.seconds)["rps"])
        print("interleaved c=32 req/s: " + ", ".join(f"{k} {v}" for k, v in rounds.items()), flush=True)
        # MNIST over the v2 protocol through the gateway, gRPC against HTTP with binary tensors: the same
        # client (tritonclient's asyncio one) and the same single image, at c=32 in interleaved rounds
        image = [("image", "FP32", (np.asarray(digit, np.float32) / 255.0).reshape(1, 28, 28, 1))]
        v2 = results["v2_grpc_vs_http_c32"] = {"grpc": [], "http_binary": []}
        for _ in range(args.rounds):
            v2["grpc"].append(loadgen.triton("grpc", f"127.0.0.1:{ports['gateway_grpc']}", image, "mnist", 32,
                                             args.seconds)["rps"])
            v2["http_binary"].append(loadgen.triton("http", f"127.0.0.1:{ports['gateway']}", image, "mnist", 32,
                                                    args.seconds)["rps"])
        print("v2 through the gateway, c=32 req/s: " + ", ".join(f"{k} {[round(x) for x in v]}"
                                                                 for k, v in v2.items()), flush=True)
        results["imported_vs_family_c32"] = imported.rounds(f"127.0.0.1:{ports['gateway']}", image[0][2],
                                                            args.rounds, args.seconds)
        print(f"imported MNIST against the MNIST service, c=32 req/s: {results['imported_vs_family_c32']}",
              flush=True)
        stop(procs)
        for name in [p_ for p_ in args.peers.split(",") if p_ and p_ != "none"]:
            if name == "triton":  # on its own benchmark: v2 binary tensors, CPU and rows per batch (bench/triton.py)
                results["triton"] = triton.compare(args.seconds, args.rounds, conc, logs)
                write_results(args.out, "triton", results["triton"], triton.markdown(results["triton"]), show=False)
                continue
            peer = peer_envs.peer(name, latest("mnist") / "model.onnx", [free_port() for _ in range(3)], digit)
            procs.append(start(peer.cmd, {**base_env, **peer.env}, peer.ready_url, logs / f"{name}.log", peer.cwd,
                               ok=(200,)))
            results["mnist"][name] = measure_mnist(name, peer.url, peer.body, conc, args.seconds)
            stop(procs)

        gen = json.dumps({"prompt": "ROMEO:\n", "max_tokens": 200, "temperature": 0.8, "seed": 1,
                          "stream": True}).encode()
        gen_json = json.dumps({"prompt": "ROMEO:\n", "max_tokens": 200, "temperature": 0.8, "seed": 1}).encode()
        for mode, env in (("continuous", {}), ("one_at_a_time", {"DECODER_MAX_ROWS": "1"})):
            port = ports["textgen" if mode == "continuous" else "textgen_seq"]
            proc = start([py, "-m", "services", "textgen"], {**base_env, "PORT": str(port), **env},
                         f"http://127.0.0.1:{port}/v2/health/ready", logs / f"textgen-{mode}.log")
            results["textgen"][mode] = {}
            for s in streams:
                r = loadgen.stream(f"http://127.0.0.1:{port}/api/generate", gen, s, args.seconds)
                results["textgen"][mode][s] = r
                print(f"textgen {mode:14s} streams={s:3d}: {r['tokens_per_s']:8.1f} tokens/s  ttft p50 "
                      f"{r['ttft_p50_ms']:7.1f} p99 {r['ttft_p99_ms']:7.1f} ms", flush=True)
            # the same generations without SSE: what the scheduler sustains when per-token HTTP writes are gone
            results["textgen"][f"{mode}_no_sse"] = {}
            for s in streams:
                r = loadgen.run(f"http://127.0.0.1:{port}/api/generate", gen_json, s, args.seconds)
                r = {**r, "tokens_per_s": r["rps"] * 200, "ttft_p50_ms": float("nan"), "ttft_p99_ms": float("nan")}
                results["textgen"][f"{mode}_no_sse"][s] = r
                print(f"textgen {mode + ' no SSE':20s} requests={s:3d}: {r['tokens_per_s']:8.1f} tokens/s  "
                      f"p50 {r['p50_ms']:7.1f} ms  errors {r['errors']}", flush=True)
            if mode == "continuous":
                # the 32-vs-1 ratio again from interleaved rounds (one stream, then all, in turn), so the
                # machine's drift between two sweeps does not land on one side of the ratio
                top = max(streams)
                inter = results["textgen_interleaved"] = {f"{kind}_{n}": [] for kind in ("sse", "no_sse")
                                                          for n in (1, top)}
                for _ in range(args.rounds):
                    for n in (1, top):
                        inter[f"sse_{n}"].append(loadgen.stream(f"http://127.0.0.1:{port}/api/generate", gen, n,
                                                                args.seconds)["tokens_per_s"])
                        inter[f"no_sse_{n}"].append(loadgen.run(f"http://127.0.0.1:{port}/api/generate", gen_json,
                                                                n, args.seconds)["rps"] * 200)
                print("textgen interleaved tokens/s: " + ", ".join(f"{k} {[round(x) for x in v]}"
                                                                   for k, v in inter.items()), flush=True)
                # long prompts: read in one prefill call (the default) against one character per step
                lp = results["textgen_long_prompts"] = {}
                lp["prefill"] = long_prompts(f"http://127.0.0.1:{port}/api/generate", gen, top - 1, 3)
                off_port = free_port()
                off = start([py, "-m", "services", "textgen"], {**base_env, "PORT": str(off_port),
                                                                "PREFILL_MIN_TOKENS": "0"},
                            f"http://127.0.0.1:{off_port}/v2/health/ready", logs / "textgen-no-prefill.log")
                lp["stepped"] = long_prompts(f"http://127.0.0.1:{off_port}/api/generate", gen, top - 1, 3)
                stop([off])
                for how, by_n in lp.items():
                    for n, x in by_n.items():
                        print(f"textgen {how:8s} prompt {n:5d} chars: ttft alone p50 {x['alone_p50_ms']:.1f} ms, "
                              f"beside {top - 1} streams p50 {x['busy_p50_ms']:.1f} ms", flush=True)
            stop([proc])
    finally:
        stop(procs)
        shutil.rmtree(imported_work, ignore_errors=True)
    print("every service through the gateway ...", flush=True)
    results["services"] = every_service(args.seconds, logs)
    if args.zoo_models:
        print(f"a zoo of {args.zoo_models} imported models under a memory budget ...", flush=True)
        results["zoo"] = zoo.measure(args.zoo_models, max(args.seconds, 30.0), logs)
    results["ratios"] = ratios(results)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(results))
    plot(results, args.out / "mnist.png")
    print((args.out / "results.md").read_text())
    return 0


def every_service(seconds: float, logs: Path) -> dict:
    """Latency at concurrency 1 and throughput at 16 for one typical request of each service (whole stack)."""
    payloads = json.loads((ROOT / "loadtest" / "payloads.json").read_text())
    cases = {"mnist": ("/api/mnist/predict", {"image": payloads["digits"][0]["grid"]}),
             "sentiment": ("/api/sentiment/predict", {"text": payloads["reviews"][0]["text"]}),
             "translation greedy": ("/api/translate", {"text": payloads["sentences"][0]}),
             "translation beam 4": ("/api/translate", {"text": payloads["sentences"][0], "beam_size": 4}),
             "textgen 100 tokens": ("/api/generate", {"prompt": "ROMEO:\n", "max_tokens": 100, "seed": 1}),
             "gan 1 image": ("/api/gan/sample", {"n": 1, "seed": 1})}
    stack_ports = StackPorts.free()
    gw = stack_ports.gateway
    stack = subprocess.Popen([sys.executable, "-m", "services.stack", *stack_ports.args(grpc=False)], cwd=ROOT,
                             start_new_session=True,
                             env={**os.environ, "LOG_LEVEL": "WARNING", "MODEL_POLL_SECONDS": "0"},
                             stdout=open(logs / "stack.log", "wb"), stderr=subprocess.STDOUT)
    out = {}
    try:
        for _ in range(240):
            try:
                if requests.get(f"http://127.0.0.1:{gw}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        for name, (path, body) in cases.items():
            url = f"http://127.0.0.1:{gw}{path}"
            one = loadgen.run(url, json.dumps(body).encode(), 1, seconds)
            many = loadgen.run(url, json.dumps(body).encode(), 16, seconds)
            out[name] = {"c1": one, "c16": many}
            print(f"{name:20s} c=1 p50 {one['p50_ms']:7.2f} ms   c=16 {many['rps']:7.1f} req/s p99 "
                  f"{many['p99_ms']:7.1f} ms  errors {one['errors'] + many['errors']}", flush=True)
    finally:
        os.killpg(stack.pid, signal.SIGTERM)
        stack.wait(60)
    return out


def paired_median(a: list[float], b: list[float]) -> float:
    """The median over rounds of a[i] / b[i]."""
    return float(np.median([x / y for x, y in zip(a, b, strict=False)]))


def of_medians(a: list[float], b: list[float]) -> float:
    return float(np.median(a)) / float(np.median(b))


def rounds_table(first: str, rounds: dict[str, list[float]], unit: str, digits: int) -> list[str]:
    """Markdown rows: one line per run, one column per round, then the median."""
    n = len(next(iter(rounds.values())))
    lines = [f"| {first} | " + " | ".join(f"round {i + 1}{unit}" for i in range(n)) + " | median |",
             "|---|" + "---|" * (n + 1)]
    for name, v in rounds.items():
        cells = [f"{x:.{digits}f}" for x in v] + [f"{float(np.median(v)):.{digits}f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def ratios(r: dict) -> dict:
    m = r["mnist"]
    out = {}
    for c in m["service"]:
        out[f"service_vs_naive_c{c}"] = m["service"][c]["rps"] / m["naive_flask"][c]["rps"]
        out[f"gateway_vs_naive_c{c}"] = m["gateway"][c]["rps"] / m["naive_flask"][c]["rps"]
        out[f"gateway_overhead_c{c}"] = 1 - m["gateway"][c]["rps"] / m["service"][c]["rps"]
        for peer in peer_envs.PEERS:
            if peer in m and c in m[peer]:
                out[f"service_vs_{peer}_c{c}"] = m["service"][c]["rps"] / max(m[peer][c]["rps"], 1e-9)
        out[f"service_vs_raw_ort_best_c{c}"] = m["service"][c]["rps"] / r["raw_ort"]["best_images_per_s"]
    for c in m.get("naive_flask_workers", {}):
        out[f"service_vs_naive_workers_c{c}"] = m["service"][c]["rps"] / m["naive_flask_workers"][c]["rps"]
    # interleaved rounds: each round's ratio (its runs are back to back, so a slow spell of the machine hits
    # both sides), then the median over rounds; the ratio of the medians is given as well
    rounds = r.get("interleaved_c32")
    if rounds:
        out["interleaved_c32_service_vs_naive"] = paired_median(rounds["service"], rounds["naive_flask"])
        out["interleaved_c32_gateway_vs_naive"] = paired_median(rounds["gateway"], rounds["naive_flask"])
        out["interleaved_c32_gateway_overhead"] = 1 - paired_median(rounds["gateway"], rounds["service"])
        out["interleaved_c32_gateway_overhead_of_medians"] = 1 - of_medians(rounds["gateway"], rounds["service"])
    v2 = r.get("v2_grpc_vs_http_c32")
    if v2:
        out["v2_grpc_vs_http_binary_c32"] = paired_median(v2["grpc"], v2["http_binary"])
    if r.get("imported_vs_family_c32"):
        out.update(imported.ratios(r["imported_vs_family_c32"], r["raw_ort"]["by_batch"][64]["images_per_s"]))
    inter = r.get("textgen_interleaved")
    if inter:
        top = max(int(k.rsplit("_", 1)[1]) for k in inter)
        for kind in ("sse", "no_sse"):
            many, one = inter[f"{kind}_{top}"], inter[f"{kind}_1"]
            out[f"interleaved_textgen_{kind}_{top}_vs_1"] = paired_median(many, one)
            out[f"interleaved_textgen_{kind}_{top}_vs_1_of_medians"] = of_medians(many, one)
    raw = r.get("raw_decoder")
    if raw:
        out[f"raw_decoder_{raw['streams']}_vs_1"] = paired_median(raw["many"], raw["one"])
    t = r["textgen"]
    for mode in ("continuous_no_sse",):
        if t.get(mode) and 1 in t[mode]:
            top = max(t[mode])
            out[f"textgen_{mode}_{top}_vs_1"] = t[mode][top]["tokens_per_s"] / t[mode][1]["tokens_per_s"]
    if t.get("continuous") and 1 in t["continuous"]:
        top = max(t["continuous"])
        out[f"textgen_{top}_streams_vs_1"] = t["continuous"][top]["tokens_per_s"] / t["continuous"][1]["tokens_per_s"]
        if t.get("one_at_a_time"):
            out[f"textgen_continuous_vs_sequential_{top}_streams"] = (
                t["continuous"][top]["tokens_per_s"] / t["one_at_a_time"][top]["tokens_per_s"])
    return out


def markdown(r: dict) -> str:
    m, raw = r["machine"], r["raw_ort"]
    lines = ["# Benchmark results\n", f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
             f"Python {m['python']}, onnxruntime {raw['onnxruntime']}, GPU: {m['gpu']}; every session on "
             f"{m.get('device', 'cpu').upper()}. "
             f"{r['seconds_per_point']:.0f} s per point; load generator ({r.get('client', 'aiohttp')}) on the same "
             "machine (loopback), sharing its cores. Our services and the gateway run with their defaults (services: "
             "one gunicorn worker per CPU, at most 4, on a GPU too; gateway: one uvicorn worker); `naive_flask` is "
             "the plain app with one worker, `naive_flask_workers` the "
             "same app with one worker per CPU; KServe, MLServer and BentoML run with their own defaults.\n",
             "## MNIST, one digit per request\n",
             f"Raw ONNX Runtime in-process (the ceiling): batch 1 {raw['batch1_images_per_s']:.0f} images/s, "
             f"best batch {raw['best_batch']} {raw['best_images_per_s']:.0f} images/s.\n",
             "| target | concurrency | req/s | p50 ms | p95 ms | p99 ms | errors |", "|---|---|---|---|---|---|---|"]
    for name, by_c in r["mnist"].items():
        for c, x in by_c.items():
            lines.append(f"| {name} | {c} | {x['rps']:.1f} | {x['p50_ms']:.2f} | {x['p95_ms']:.2f} | "
                         f"{x['p99_ms']:.2f} | {x['errors']} |")
    if r.get("interleaved_c32"):
        lines += ["", "## MNIST at concurrency 32, interleaved\n",
                  f"{len(next(iter(r['interleaved_c32'].values())))} rounds of naive app, service, gateway in turn; "
                  "the target ratios below are the medians of the rounds' own ratios (`_of_medians`: the ratio of "
                  "the medians).\n"]
        lines += rounds_table("target", r["interleaved_c32"], " req/s", 1)
    if r.get("v2_grpc_vs_http_c32"):
        lines += ["", "## MNIST over the v2 protocol through the gateway: gRPC against HTTP (binary tensors), c=32\n",
                  "tritonclient's asyncio client for both, one image per request, in interleaved rounds.\n"]
        lines += rounds_table("protocol", r["v2_grpc_vs_http_c32"], " req/s", 1)
    if r.get("imported_vs_family_c32"):
        lines += imported.markdown(r["imported_vs_family_c32"], r["raw_ort"]["by_batch"][64]["images_per_s"])
    if r.get("zoo"):
        lines += ["", "## " + zoo.markdown(r["zoo"])[0][2:], ""] + zoo.markdown(r["zoo"])[2:]
    if r.get("triton"):
        lines += ["", "## " + triton.markdown(r["triton"])[0][2:], ""] + triton.markdown(r["triton"])[2:]
    lines += ["", "## Text generation (200 tokens per request; SSE streams, and the same requests without SSE)\n",
              f"Each client sends generations back to back for {r['seconds_per_point']:.0f} s. ",
              "`continuous`: one scheduler steps every active sequence together; `one_at_a_time`: "
              "`DECODER_MAX_ROWS=1`. Time to first token only exists for streams.\n",
              "| scheduling | concurrent | tokens/s | time to first token p50 ms | p99 ms | request p50 ms | errors |",
              "|---|---|---|---|---|---|---|"]
    for mode, by_s in r["textgen"].items():
        for s, x in by_s.items():
            lines.append(f"| {mode} | {s} | {x['tokens_per_s']:.0f} | {x['ttft_p50_ms']:.1f} | "
                         f"{x['ttft_p99_ms']:.1f} | "
                         f"{x.get('p50_ms', float('nan')):.1f} | {x.get('errors', 0)} |")
    if r.get("textgen_interleaved"):
        inter = r["textgen_interleaved"]
        lines += ["", "## Text generation, one against many, interleaved\n",
                  f"{len(next(iter(inter.values())))} rounds of one stream then all streams in turn (continuous "
                  "batching); the 32-vs-1 ratios are the medians of the rounds' own ratios. tokens/s:\n"]
        lines += rounds_table("run", inter, "", 0)
    if r.get("textgen_long_prompts"):
        lp = r["textgen_long_prompts"]
        others = next(iter(lp["prefill"].values()))["others"]
        lines += ["", "## Text generation, long prompts\n",
                  "Time to first token for a prompt of N characters (20 tokens per request, one client), alone and "
                  f"beside {others} streams of short prompts; `prefill`: the prompt read in one ONNX Runtime call "
                  "(default), `stepped`: one character per batched step (`PREFILL_MIN_TOKENS=0`).\n",
                  f"| prompt read | characters | alone p50 ms | alone p99 ms | beside {others} p50 ms | "
                  f"beside {others} "
                  f"p99 ms | the {others} streams' tokens/s | errors |", "|---|---|---|---|---|---|---|---|"]
        for how, by_n in lp.items():
            for n, x in by_n.items():
                lines.append(f"| {how} | {n} | {x['alone_p50_ms']:.1f} | {x['alone_p99_ms']:.1f} | "
                             f"{x['busy_p50_ms']:.1f} | {x['busy_p99_ms']:.1f} | {x['others_tokens_per_s']:.0f} | "
                             f"{x['errors']} |")
    raw = r.get("raw_decoder")
    if raw:
        lines += ["", "## Text generation in-process (the ceiling)\n",
                  "The service's own scheduler, sampling and step graph with no HTTP, no SSE and no client: one "
                  f"stream, then {raw['streams']} streams over {raw['workers']} scheduler threads (one per service "
                  f"worker), {len(raw['one'])} rounds in turn. tokens/s:\n"]
        lines += rounds_table("run", {"1 stream": raw["one"], f"{raw['streams']} streams": raw["many"]}, "", 0)
    lines += ["", "## Every service through the gateway (whole stack running)\n",
              "| request | c=1 p50 ms | c=1 p99 ms | c=16 req/s | c=16 p99 ms | errors |", "|---|---|---|---|---|---|"]
    for name, x in r.get("services", {}).items():
        lines.append(f"| {name} | {x['c1']['p50_ms']:.2f} | {x['c1']['p99_ms']:.2f} | {x['c16']['rps']:.1f} | "
                     f"{x['c16']['p99_ms']:.1f} | {x['c1']['errors'] + x['c16']['errors']} |")
    lines += ["", "## Ratios\n", "| ratio | value |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in r["ratios"].items()]
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for name, by_c in r["mnist"].items():
        cs = list(by_c)
        a.plot(cs, [by_c[c]["rps"] for c in cs], marker="o", label=name)
        b.plot(cs, [by_c[c]["p99_ms"] for c in cs], marker="o", label=name)
    a.axhline(r["raw_ort"]["best_images_per_s"], ls="--", c="gray", label="raw ORT best batch")
    a.axhline(r["raw_ort"]["batch1_images_per_s"], ls=":", c="gray", label="raw ORT batch 1")
    a.set(xscale="log", xlabel="concurrency", ylabel="requests/s", title="MNIST throughput")
    b.set(xscale="log", yscale="log", xlabel="concurrency", ylabel="p99 ms", title="MNIST p99 latency")
    a.legend(fontsize=8)
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def rerender(out: Path) -> None:
    """Ratios, Markdown and plot again from a saved results.json (after a change to how they are computed)."""
    r = json.loads((out / "results.json").read_text())
    for key in ("mnist", "textgen"):  # JSON made the concurrency keys strings
        r[key] = {name: {int(c): x for c, x in by_c.items()} for name, by_c in r[key].items()}
    r["ratios"] = ratios(r)
    (out / "results.json").write_text(json.dumps(r, indent=2) + "\n")
    (out / "results.md").write_text(markdown(r))
    plot(r, out / "mnist.png")


if __name__ == "__main__":
    raise SystemExit(main())

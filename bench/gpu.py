"""``python -m bench.gpu``: the GPU check, one command that fits a lent GPU machine's few minutes.

1. The suite's CUDA tests (``tests/unit/test_cuda.py``, ``tests/integration/test_cuda_stack.py``).
2. Side by side at concurrency 32, in interleaved rounds (each round runs every measurement once, so a slow
   spell of the machine lands on all of them):
   - MNIST, one image per JSON request: the service against the naive app with the same number of workers;
   - MNIST over v2 with binary tensors, 64 images per request, through the gateway: images/s against raw ONNX
     Runtime at batch 64 and at its best batch;
   - sentiment, translation greedy and beam 4 through the gateway (requests/s);
   - text generation, 32 SSE streams against 1 (tokens/s).
3. ``bench/results/<gpu, or host-cpu>/gpu-check.{json,md}``; ``ratios`` holds ``service_vs_naive_workers_c32``
   and ``v2_binary_batch64_vs_raw_ort_batch64`` (the same keys from a CPU run, ``--device cpu``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import requests

from bench import loadgen
from bench.run import free_port, gpu_name, latest, machine, paired_median, raw_ort, start, stop
from services import ports

ROOT = Path(__file__).resolve().parent.parent
PAYLOADS = json.loads((ROOT / "loadtest" / "payloads.json").read_text())


def cuda_tests(device: str) -> dict:
    """The suite's CUDA tests, as pytest reports them (they skip without a GPU)."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit/test_cuda.py",
                           "tests/integration/test_cuda_stack.py"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "MODEL_DEVICE": device}, timeout=600)
    return {"returncode": proc.returncode, "summary": (proc.stdout.strip().splitlines() or [""])[-1]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--seconds", type=float, default=4.0, help="measured seconds per point")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    name = re.sub(r"[^a-z0-9]+", "-", gpu_name().lower()).strip("-") if args.device == "cuda" else \
        f"{socket.gethostname().split('.')[0]}-cpu"
    out = args.out or ROOT / "bench" / "results" / name
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    os.environ["MODEL_DEVICE"] = args.device  # every server below inherits it
    results: dict = {"machine": machine(args.device), "seconds_per_point": args.seconds, "rounds": args.rounds}
    print("CUDA tests ...", flush=True)
    results["cuda_tests"] = cuda_tests(args.device)
    print(f"  {results['cuda_tests']['summary']}", flush=True)
    print("raw ONNX Runtime ...", flush=True)
    results["raw_ort"] = raw_ort(min(args.seconds, 3), args.device)

    env = {"MODEL_POLL_SECONDS": "0", "LOG_LEVEL": "WARNING"}
    stack_ports = ports.StackPorts.free()
    gateway = f"http://127.0.0.1:{stack_ports.gateway}"
    naive_port = free_port()
    procs = [start([sys.executable, "-m", "services.stack", *stack_ports.args(grpc=False)], env,
                   gateway + "/v2/health/ready", logs / "stack.log", ok=(200,)),
             # the naive app with as many workers as the service has (the default: one per usable CPU)
             start([sys.executable, "-m", "gunicorn", "-c", "python:services.runtime.gunicorn_conf",
                    "bench.peers.naive_flask:app"], {**env, "PORT": str(naive_port),
                                                     "MODEL_PATH": str(latest("mnist") / "model.onnx")},
                   f"http://127.0.0.1:{naive_port}/", logs / "naive.log")]
    digit = PAYLOADS["digits"][0]["grid"]
    image_json = json.dumps({"image": digit}).encode()
    batch64 = [("image", "FP32", np.repeat((np.asarray(digit, np.float32) / 255.0).reshape(1, 28, 28, 1), 64, 0))]
    sentence = PAYLOADS["sentences"][0]
    gen = json.dumps({"prompt": "ROMEO:\n", "max_tokens": 200, "temperature": 0.8, "seed": 1, "stream": True}).encode()
    cases = {
        "mnist_naive_workers": lambda: loadgen.run(f"http://127.0.0.1:{naive_port}/api/mnist/predict", image_json,
                                                   32, args.seconds)["rps"],
        "mnist_service": lambda: loadgen.run(f"http://127.0.0.1:{stack_ports.base}/api/mnist/predict", image_json, 32,
                                             args.seconds)["rps"],
        "mnist_v2_binary_64_images_per_s": lambda: 64 * loadgen.triton("http", gateway.replace("http://", ""),
                                                                        batch64, "mnist", 32, args.seconds)["rps"],
        "sentiment_gateway": lambda: loadgen.run(gateway + "/api/sentiment/predict", json.dumps(
            {"text": PAYLOADS["reviews"][0]["text"]}).encode(), 32, args.seconds)["rps"],
        "translation_greedy_gateway": lambda: loadgen.run(gateway + "/api/translate", json.dumps(
            {"text": sentence, "beam_size": 1}).encode(), 32, args.seconds)["rps"],
        "translation_beam4_gateway": lambda: loadgen.run(gateway + "/api/translate", json.dumps(
            {"text": sentence, "beam_size": 4}).encode(), 32, args.seconds)["rps"],
        "textgen_sse_1_tokens_per_s": lambda: loadgen.stream(gateway + "/api/generate", gen, 1,
                                                             args.seconds)["tokens_per_s"],
        "textgen_sse_32_tokens_per_s": lambda: loadgen.stream(gateway + "/api/generate", gen, 32,
                                                              args.seconds)["tokens_per_s"],
    }
    rounds: dict[str, list[float]] = {k: [] for k in cases}
    try:
        for r in range(args.rounds):
            for key, measure in cases.items():
                rounds[key].append(measure())
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rounds.items()), flush=True)
        results["device_seen"] = requests.get(gateway + "/api/models", timeout=10).json()["models"][0]["device"]
    finally:
        stop(procs)
    raw = results["raw_ort"]["by_batch"]
    results["rounds_c32"] = rounds
    results["ratios"] = {
        "service_vs_naive_workers_c32": paired_median(rounds["mnist_service"], rounds["mnist_naive_workers"]),
        "v2_binary_batch64_vs_raw_ort_batch64": float(np.median(rounds["mnist_v2_binary_64_images_per_s"]))
        / raw[64]["images_per_s"],
        "v2_binary_batch64_vs_raw_ort_best": float(np.median(rounds["mnist_v2_binary_64_images_per_s"]))
        / results["raw_ort"]["best_images_per_s"],
        "textgen_sse_32_vs_1": paired_median(rounds["textgen_sse_32_tokens_per_s"],
                                             rounds["textgen_sse_1_tokens_per_s"]),
    }
    (out / "gpu-check.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"# GPU check on {results['machine'].get('gpu') or 'no GPU'} (sessions on {args.device.upper()}, "
             f"seen by the services: {results.get('device_seen')})\n",
             f"CUDA tests: {results['cuda_tests']['summary']}\n",
             f"Raw ONNX Runtime, MNIST: batch 64 {raw[64]['images_per_s']:.0f} images/s, best batch "
             f"{results['raw_ort']['best_batch']} {results['raw_ort']['best_images_per_s']:.0f} images/s.\n",
             f"Concurrency 32, {args.rounds} interleaved rounds of {args.seconds:.0f} s:\n",
             "| measurement | " + " | ".join(f"round {i + 1}" for i in range(args.rounds)) + " | median |",
             "|---|" + "---|" * (args.rounds + 1)]
    for key, v in rounds.items():
        lines.append(f"| {key} | " + " | ".join(f"{x:.0f}" for x in v) + f" | {float(np.median(v)):.0f} |")
    lines += ["", "| ratio | value |", "|---|---|"] + [f"| {k} | {v:.3f} |" for k, v in results["ratios"].items()]
    (out / "gpu-check.md").write_text("\n".join(lines) + "\n")
    print((out / "gpu-check.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Being generic must cost almost nothing: MNIST's shipped graph imported as a generic model (``python -m training
import``, served by the models service) against the MNIST service itself, v2 binary tensors at c=32 through the
gateway, in interleaved rounds; beside raw ONNX Runtime at batch 64 in the same run.

``make bench`` runs it inside ``bench.run`` (its MNIST section); ``python -m bench.imported`` runs it alone and
writes ``bench/results/<machine>/imported.{json,md}``."""
from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench import loadgen

NAME = "mnist_generic"


def import_mnist(workdir: Path, digits: np.ndarray) -> Path:
    """The shipped MNIST graph through the import command, with real digits as its samples, into a repository
    in ``workdir`` -> that repository."""
    from bench.run import latest
    from training import importer
    samples, repo = workdir / "mnist-samples.npz", workdir / "repo"
    np.savez(samples, image=(digits[:4, ..., None] / 255.0).astype(np.float32))
    code = importer.main([NAME, str(latest("mnist") / "model.onnx"), "--samples", str(samples), "--out", str(repo)])
    if code != 0:
        raise RuntimeError("the import of MNIST's graph was refused")
    return repo


def start_models_service(repo: Path, port: int, env: dict, log: Path):
    """The models service on ``repo``, ready."""
    from bench.run import start
    return start([sys.executable, "-m", "services", "models"],
                 {**env, "PORT": str(port), "MODEL_REPOSITORY": str(repo)}, f"http://127.0.0.1:{port}/v2/health/ready",
                 log)


def rounds(gateway: str, image: np.ndarray, n: int, seconds: float) -> dict:
    """Requests/s of the family's MNIST and the imported one, through ``gateway`` (host:port), in turn (the first
    of each round alternates)."""
    tensors = [("image", "FP32", image)]
    out: dict = {"family": [], "imported": [], "errors": 0}
    pair = (("family", "mnist"), ("imported", NAME))
    for i in range(n):
        for key, model in pair if i % 2 == 0 else pair[::-1]:  # neither always runs first
            r = loadgen.triton("http", gateway, tensors, model, 32, seconds)
            out[key].append(r["rps"])
            out["errors"] += r["errors"]
    return out


def ratios(imported: dict, raw_batch64_images_per_s: float) -> dict:
    from bench.run import paired_median
    return {"imported_vs_family_v2_binary_gateway_c32": paired_median(imported["imported"], imported["family"]),
            "imported_vs_raw_ort_batch64": float(np.median(imported["imported"])) / raw_batch64_images_per_s}


def markdown(imported: dict, raw_batch64: float) -> list[str]:
    from bench.run import rounds_table
    r = ratios(imported, raw_batch64)
    lines = ["", "## MNIST imported as a generic model against the MNIST service (v2 binary, c=32, gateway)\n",
             f"MNIST's shipped graph imported with `python -m training import` and served by the models service, "
             f"against the MNIST service, through the same gateway with tritonclient's asyncio HTTP client (binary "
             f"tensors, one image per request), in interleaved rounds; errors: {imported['errors']}. Raw ONNX "
             f"Runtime at batch 64 in the same run: {raw_batch64:.0f} images/s.\n"]
    lines += rounds_table("model", {k: imported[k] for k in ("family", "imported")}, " req/s", 1)
    lines += ["", "imported / family (median of the rounds' ratios): "
              f"**{r['imported_vs_family_v2_binary_gateway_c32']:.3f}**; imported / raw ONNX Runtime batch 64: "
              f"{r['imported_vs_raw_ort_batch64']:.3f}"]
    return lines


def main(argv=None) -> int:
    from bench.run import ROOT, raw_ort, start, stop
    from services.ports import StackPorts
    from training.data import load_mnist_5k
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / socket.gethostname().split(".")[0])
    args = p.parse_args(argv)
    digits = load_mnist_5k()["test"][0]
    image = (digits[:1, ..., None] / 255.0).astype(np.float32)
    raw = raw_ort(3, "cpu")["by_batch"][64]["images_per_s"]
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench-imported-") as tmp:
        repo = import_mnist(Path(tmp), digits)
        ports = StackPorts.free()
        env = {"MODEL_POLL_SECONDS": "0", "LOG_LEVEL": "WARNING"}
        mnist, models, gateway = ports.base, ports.base + 1, ports.gateway
        procs = []
        try:
            procs.append(start([py, "-m", "services", "mnist"], {**env, "PORT": str(mnist)},
                               f"http://127.0.0.1:{mnist}/v2/health/ready", Path(tmp) / "mnist.log"))
            procs.append(start_models_service(repo, models, env, Path(tmp) / "models.log"))
            procs.append(start([py, "-m", "services", "gateway"],
                               {**env, "GATEWAY_PORT": str(gateway), "GRPC_V2_PORT": "0", "GRPC_TFS_PORT": "0",
                                "BACKEND_MNIST_URL": f"http://127.0.0.1:{mnist}",
                                "BACKEND_MODELS_URL": f"http://127.0.0.1:{models}"},
                               f"http://127.0.0.1:{gateway}/v2/health/live", Path(tmp) / "gateway.log"))
            result = rounds(f"127.0.0.1:{gateway}", image, args.rounds, args.seconds)
        finally:
            stop(procs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "imported.json").write_text(json.dumps({"imported_vs_family": result, "raw_ort_batch64": raw,
                                                        "ratios": ratios(result, raw)}, indent=2) + "\n")
    text = "\n".join(["# Imported MNIST against the MNIST service"] + markdown(result, raw)) + "\n"
    (args.out / "imported.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

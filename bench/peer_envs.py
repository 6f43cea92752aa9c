"""The peers a user would otherwise pick (KServe's Python server, MLServer, BentoML), each installed from its
pinned requirements file into its own virtual environment under ``bench/.venvs/`` (``BENCH_VENVS``; created on
first use), and
started on free ports serving the shipped MNIST model. Every peer answers one 28x28 digit per request."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = ROOT / "bench" / "peers"
VENVS = Path(os.environ.get("BENCH_VENVS", ROOT / "bench" / ".venvs"))


@dataclass
class Peer:
    name: str
    cmd: list[str]
    env: dict
    cwd: Path
    ready_url: str
    url: str
    body: bytes


def ensure_venv(name: str) -> Path:
    """``bench/.venvs/NAME`` with ``bench/peers/requirements-NAME.txt`` installed (skipped when up to date)."""
    req = PEERS_DIR / f"requirements-{name}.txt"
    venv = VENVS / name
    stamp = venv / ".installed"
    if stamp.exists() and stamp.read_text() == req.read_text():
        return venv
    print(f"installing {name} into {venv} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "-r", str(req)],
                   check=True)
    stamp.write_text(req.read_text())
    return venv


def peer(name: str, model_path: Path, ports: list[int], digit: list[list[int]]) -> Peer:
    venv = ensure_venv(name)
    env = {"MODEL_PATH": str(model_path), "ORT_INTRA_OP_THREADS": os.environ.get("ORT_INTRA_OP_THREADS", "2")}
    native = json.dumps({"image": digit}).encode()
    http = f"http://127.0.0.1:{ports[0]}"
    if name == "kserve":
        return Peer(name, [str(venv / "bin" / "python"), "kserve_server.py"],
                    {**env, "PORT": str(ports[0]), "GRPC_PORT": str(ports[1])}, PEERS_DIR,
                    f"{http}/v1/models/mnist", f"{http}/v1/models/mnist:predict", native)
    if name == "mlserver":
        d = Path(tempfile.mkdtemp(prefix="bench-mlserver-"))
        (d / "settings.json").write_text(json.dumps({
            "http_port": ports[0], "grpc_port": ports[1], "metrics_port": ports[2], "debug": False}))
        (d / "mnist").mkdir()
        (d / "mnist" / "model-settings.json").write_text(json.dumps({
            "name": "mnist", "implementation": "mlserver_runtime.MnistRuntime",
            "max_batch_size": 32, "max_batch_time": 0.002}))
        v2 = json.dumps({"inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "FP32",
                                     "data": [v for row in digit for v in row]}]}).encode()
        return Peer(name, [str(venv / "bin" / "mlserver"), "start", str(d)], {**env, "PYTHONPATH": str(PEERS_DIR)},
                    d, f"{http}/v2/models/mnist/ready", f"{http}/v2/models/mnist/infer", v2)
    if name == "bentoml":
        return Peer(name, [str(venv / "bin" / "bentoml"), "serve", "bentoml_service:Mnist", "--port", str(ports[0]),
                           "--host", "127.0.0.1"], {**env, "BENTOML_DO_NOT_TRACK": "True"}, PEERS_DIR,
                    f"{http}/readyz", f"{http}/api/mnist/predict", native)
    raise ValueError(f"unknown peer {name!r}")


PEERS = ("kserve", "mlserver", "bentoml")

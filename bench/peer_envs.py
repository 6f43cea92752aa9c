"""The peers a user would otherwise pick (KServe's Python server, MLServer, BentoML, Triton through PyTriton),
each installed from its pinned requirements file into its own virtual environment under ``bench/.venvs/``
(``BENCH_VENVS``; created on first use), and started on free ports serving the shipped MNIST model. Every peer
answers one 28x28 digit per request."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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
    headers: dict = field(default_factory=dict)
    metrics_url: str = ""


def v2_binary(digit: list[list[int]]) -> tuple[bytes, dict]:
    """One digit as a v2 request with binary tensors in and out (what tritonclient sends), and its header."""
    image = (np.asarray(digit, np.float32) / 255.0).reshape(1, 28, 28, 1)
    head = json.dumps({"inputs": [{"name": "image", "shape": [1, 28, 28, 1], "datatype": "FP32",
                                   "parameters": {"binary_data_size": image.nbytes}}],
                       "outputs": [{"name": n, "parameters": {"binary_data": True}}
                                   for n in ("probabilities", "logits")]}).encode()
    return head + image.tobytes(), {"Inference-Header-Content-Length": str(len(head)),
                                    "Content-Type": "application/octet-stream"}


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
    if name == "triton":
        body, headers = v2_binary(digit)
        # its Python backend stub must find this interpreter's libpython, not the system's (triton_server.py)
        lib = sysconfig.get_config_var("LIBDIR")
        return Peer(name, [str(venv / "bin" / "python"), "triton_server.py"],
                    {**env, "PORT": str(ports[0]), "GRPC_PORT": str(ports[1]), "METRICS_PORT": str(ports[2]),
                     "LD_LIBRARY_PATH": f"{lib}:{os.environ.get('LD_LIBRARY_PATH', '')}"}, PEERS_DIR,
                    f"{http}/v2/models/mnist/ready", f"{http}/v2/models/mnist/infer", body, headers,
                    f"http://127.0.0.1:{ports[2]}/metrics")
    raise ValueError(f"unknown peer {name!r}")


PEERS = ("kserve", "mlserver", "bentoml", "triton")

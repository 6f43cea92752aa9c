"""Your repository, not ours: the package built as a wheel (``pip wheel .``), installed into a fresh virtual
environment outside the checkout, imports a user's ONNX model with its console script and serves it with only
the services that repository needs."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy as np
import onnx
import requests
from onnx import TensorProto, helper, numpy_helper

from services.ports import StackPorts
from tests.conftest import ROOT


def tiny_onnx(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """y = x @ w + b on a dynamic batch: a user's model, made with onnx's own helpers."""
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(3,)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return w, b


def test_a_wheel_in_a_fresh_venv_imports_and_serves_a_repository_of_ones_own(tmp_path):
    # built from a copy of what the wheel holds: setuptools writes build/ beside the sources it builds
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("modelcore", "training", "services", "bench", "loadtest"):
        shutil.copytree(ROOT / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__", ".venvs", "results", "logs"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(source)], check=True, capture_output=True, timeout=300)
    wheel = next(wheels.glob("keras_onnx_serving-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    # its dependencies from this environment's site-packages (a path, read after the venv's own: the checkout's
    # editable install there is never processed), so that the test downloads nothing
    site = Path(subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "user"  # the user's folder: no checkout anywhere near
    work.mkdir()
    w, b = tiny_onnx(work / "tiny.onnx")
    x = np.random.default_rng(1).normal(size=(4, 4)).astype(np.float32)
    np.savez(work / "samples.npz", x=x)
    where = subprocess.check_output([str(py), "-c", "import services; print(services.__file__)"], cwd=work, text=True)
    assert where.startswith(str(site)), where  # the wheel's package, not the checkout's

    cli = venv / "bin" / "keras-onnx-serving"
    imported = subprocess.run([str(cli), "import", "tiny", "tiny.onnx", "--samples", "samples.npz",
                               "--repository", "repo"], cwd=work, capture_output=True, text=True, timeout=300)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert (work / "repo" / "tiny" / "1" / "manifest.json").exists()

    ports = StackPorts.free()
    short_tmp = Path(tempfile.mkdtemp(prefix="w-"))  # supervisord's socket path must fit AF_UNIX's 108 bytes
    proc = subprocess.Popen([str(cli), "serve", "--repository", "repo", *ports.args(grpc=False)], cwd=work,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "TMPDIR": str(short_tmp)})
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "stack ready" in line or "not ready" in line:
                break
        assert "stack ready" in lines[-1], "".join(lines[-30:])
        assert "starting 1 services (models;" in "".join(lines), "".join(lines[:5])  # no family has models here
        url = f"http://127.0.0.1:{ports.gateway}"
        r = requests.post(f"{url}/v2/models/tiny/infer", json={"inputs": [
            {"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.reshape(-1).tolist()}]}, timeout=30)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(np.array(r.json()["outputs"][0]["data"]).reshape(4, 3), x @ w + b, atol=1e-5)
        assert [m["name"] for m in requests.get(f"{url}/api/models", timeout=30).json()["models"]] == ["tiny"]
        assert requests.get(f"{url}/v2/models/mnist", timeout=30).status_code == 404  # not ours: not served
        assert requests.get(f"{url}/v2/health/ready", timeout=30).status_code == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(90)
        shutil.rmtree(short_tmp, ignore_errors=True)

"""Models for the import tests, made in the test: ONNX graphs written with onnx.helper (no Keras at all), and
the way a test waits for the running stack to pick an imported model up or let it go."""
from __future__ import annotations

import time

import numpy as np
import onnx
import requests
from onnx import TensorProto, helper

from modelcore.datatypes import TABLE, v2_of
from training import importer

# every datatype served, from the one table: (input name, ONNX type, v2 datatype, numpy dtype)
# ONNX's element type is ONNX Runtime's name upper-cased: tensor(float16) -> FLOAT16
DATATYPES = [(d.v2.lower(), TensorProto.DataType.Value(d.ort[7:-1].upper()), d.v2, d.numpy) for d in TABLE]


def every_datatype(batch: int | None = None) -> onnx.ModelProto:
    """One input per datatype, each answered as an output of the same type: ``NAME_out`` (Identity)."""
    inputs = [helper.make_tensor_value_info(n, t, [batch, 2]) for n, t, _, _ in DATATYPES]
    outputs = [helper.make_tensor_value_info(f"{n}_out", t, [batch, 2]) for n, t, _, _ in DATATYPES]
    nodes = [helper.make_node("Identity", [n], [f"{n}_out"]) for n, *_ in DATATYPES]
    return helper.make_model(helper.make_graph(nodes, "every_datatype", inputs, outputs),
                             opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def every_datatype_inputs(rows: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(rows)
    out = {}
    for name, _, _, dtype in DATATYPES:
        if dtype is np.object_:
            out[name] = np.array([[f"r{i}c{j} ü".encode() for j in range(2)] for i in range(rows)], dtype=object)
        elif dtype is np.bool_:
            out[name] = rng.random((rows, 2)) < 0.5
        elif np.dtype(dtype).kind == "f":
            out[name] = rng.standard_normal((rows, 2)).astype(dtype)
        else:
            out[name] = rng.integers(0, 100, (rows, 2)).astype(dtype)
    return out


def triton_inputs(client, arrays: dict[str, np.ndarray], binary: bool = True) -> list:
    """tritonclient's InferInput (``client``: ``tritonclient.http`` or ``.grpc``) for each named array, its datatype
    read from its dtype; binary tensors unless ``binary`` is False (JSON, over HTTP)."""
    out = []
    for name, arr in arrays.items():
        datatype = v2_of(arr.dtype)
        out.append(client.InferInput(name, list(arr.shape), datatype))
        if binary:
            out[-1].set_data_from_numpy(arr)
        else:
            out[-1].set_data_from_numpy(arr, binary_data=False)
    return out


def import_onnx(model: onnx.ModelProto, name: str, workdir, *extra: str):
    """``python -m training import`` in this process, into ``workdir/repo``: -> the model's folder."""
    src = workdir / f"{name}.onnx"
    onnx.save(model, src)
    code = importer.main([name, str(src), "--out", str(workdir / "repo"), *extra])
    assert code == 0, f"import of {name} refused"
    return workdir / "repo" / name


def wait_for(url: str, name: str, ready: bool = True, timeout: float = 30.0) -> float:
    """Seconds until ``/v2/models/NAME/ready`` says 200 (``ready``) or 404 (gone) on every worker of the service
    at ``url``: each worker polls the repository on its own, so 20 answers in a row on new connections (which
    the kernel spreads over the workers' sockets) must agree."""
    t0 = time.time()
    want, agreed = (200 if ready else 404), 0
    while agreed < 20:
        status = requests.get(f"{url}/v2/models/{name}/ready", headers={"Connection": "close"}, timeout=5).status_code
        agreed = agreed + 1 if status == want else 0
        assert time.time() - t0 < timeout, f"{name}: still {status} after {timeout:.0f} s (waiting for {want})"
        if not agreed:
            time.sleep(0.1)
    return time.time() - t0


def mlp(seed: int, hidden: int = 1024) -> onnx.ModelProto:
    """x [N, 784] -> Relu(x @ w1) @ w2 [N, 10]: 3.2 MB of float32 weights at 1024 hidden, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    w1 = onnx.numpy_helper.from_array((rng.standard_normal((784, hidden)) / 28).astype(np.float32), "w1")
    w2 = onnx.numpy_helper.from_array((rng.standard_normal((hidden, 10)) / 32).astype(np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 784])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 10])], [w1, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def mlp_answer(seed: int, x: np.ndarray, hidden: int = 1024) -> np.ndarray:
    """What ``mlp(seed)`` answers, computed with NumPy."""
    w1, w2 = (onnx.numpy_helper.to_array(t) for t in mlp(seed, hidden).graph.initializer)
    return np.maximum(x @ w1, 0) @ w2

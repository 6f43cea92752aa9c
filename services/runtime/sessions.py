"""ONNX Runtime sessions: CUDA when onnxruntime-gpu and a GPU are present (``MODEL_DEVICE=auto|cpu|cuda``),
else CPU, with thread settings from the environment. Reports the provider that actually runs: a missing
CUDA library makes onnxruntime-gpu fall back to CPU silently, so we read ``get_providers()`` back."""
from __future__ import annotations

import logging
import os

import onnxruntime as ort

from services.runtime.config import env_int, model_device, usable_cpus

log = logging.getLogger("runtime.sessions")


def providers_for(device: str) -> list[str]:
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise RuntimeError("MODEL_DEVICE=cuda but onnxruntime has no CUDAExecutionProvider "
                               f"(available: {available}); install the gpu extra")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def create_session(path, device: str | None = None) -> ort.InferenceSession:
    """``path``: an .onnx file, or a serialized model (a graph derived at load time, e.g. ``prefill``)."""
    device = device or model_device()
    opts = ort.SessionOptions()
    # two threads even when the workers share the CPUs: a batch-1 call takes 0.3 ms instead of 0.5 ms, and
    # with spinning off, idle pool threads sleep (measured on 2 cores, 2 workers: c=1 580 vs 470 req/s,
    # c=32 unchanged)
    opts.intra_op_num_threads = env_int("ORT_INTRA_OP_THREADS", min(2, usable_cpus()))
    opts.inter_op_num_threads = env_int("ORT_INTER_OP_THREADS", 1)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    # ORT's worker threads spin while idle; on a small CPU shared with the request threads that spinning
    # takes cores from JSON decoding and the batcher (ORT_ALLOW_SPINNING=1 restores ORT's default)
    opts.add_session_config_entry("session.intra_op.allow_spinning", os.environ.get("ORT_ALLOW_SPINNING", "0"))
    source = path if isinstance(path, bytes) else str(path)
    sess = ort.InferenceSession(source, opts, providers=providers_for(device))
    active = sess.get_providers()
    if device == "cuda" and active[0] != "CUDAExecutionProvider":
        raise RuntimeError(f"MODEL_DEVICE=cuda but the session runs on {active[0]} (CUDA libraries missing?)")
    return sess


def device_of(sess) -> str:
    return "cuda" if sess.get_providers()[0] == "CUDAExecutionProvider" else "cpu"

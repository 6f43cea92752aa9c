"""ONNX Runtime sessions: CUDA when onnxruntime-gpu and a GPU are present (``MODEL_DEVICE=auto|cpu|cuda``),
else CPU, with thread settings from the environment. Reports the provider that actually runs: a missing
CUDA library makes onnxruntime-gpu fall back to CPU silently, so we read ``get_providers()`` back.

onnxruntime-gpu links CUDA and cuDNN by name only; the ``gpu`` extra installs them as pip packages
(``nvidia-*``), which the loader does not search, so they are preloaded once before the first CUDA session."""
from __future__ import annotations

import functools
import logging

import onnxruntime as ort

from modelcore.custom_ops import register as register_custom_ops
from services.runtime.config import model_device, settings, usable_cpus

log = logging.getLogger("runtime.sessions")


@functools.cache
def preload_cuda() -> None:
    """Load CUDA and cuDNN from the ``nvidia-*`` pip packages (or the default library path), once, before the
    first CUDA session needs them (``preload_dlls`` exists in onnxruntime-gpu from 1.21)."""
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()


# ONNX Runtime's errors that a request's values or shapes cause, once its inputs passed the tensor checks: an
# index past a table, a size a Reshape or Conv cannot take. Others (allocation, an engine fault) are ours.
_REQUEST_FAULTS = tuple(getattr(ort.capi.onnxruntime_pybind11_state, n) for n in ("InvalidArgument", "Fail"))


def request_fault(exc: BaseException) -> str | None:
    """ONNX Runtime's own message when ``exc`` is an error the request caused, else None."""
    if not isinstance(exc, _REQUEST_FAULTS):
        return None
    text = str(exc)
    return text.split("Status Message: ", 1)[-1] if "Status Message: " in text else text


def providers_for(device: str) -> list:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        if device == "cuda":
            raise RuntimeError("MODEL_DEVICE=cuda but onnxruntime has no CUDAExecutionProvider "
                               f"(available: {available}); install the gpu extra")
        return ["CPUExecutionProvider"]
    preload_cuda()
    return [cuda_provider(), "CPUExecutionProvider"]


def cuda_provider() -> tuple[str, dict]:
    """CUDA with TF32 off unless ``CUDA_TF32=1`` (it moves the shipped graphs past the 1e-4 every export is
    checked to), and cuDNN's heuristic convolution choice: the exhaustive default benchmarks every algorithm
    for each new batch size, which dynamic batching keeps making (bench/results/h100/FINDINGS.md)."""
    return "CUDAExecutionProvider", {"use_tf32": "1" if settings().cuda_tf32 else "0",
                                     "cudnn_conv_algo_search": "HEURISTIC"}


def create_session(path, device: str | None = None, mapped_weights: bool = False,
                   custom_ops: str | None = None) -> ort.InferenceSession:
    """``path``: an .onnx file, or a serialized model (a graph derived at load time, e.g. ``prefill``).
    ``mapped_weights``: keep the weights in the file's mapping (an imported model's page-aligned
    ``model.onnx.data``): no prepacked copy, so one copy in the page cache serves every worker (FINDINGS).
    ``custom_ops``: the library of operators beyond ONNX's the graph needs (``modelcore/custom_ops.py``)."""
    device = device or model_device()
    opts = ort.SessionOptions()
    # two threads even when the workers share the CPUs: a batch-1 call is faster, and with spinning off, idle
    # pool threads sleep (bench/results/vm/FINDINGS.md)
    opts.intra_op_num_threads = settings().ort_threads or min(2, usable_cpus())
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    # ORT's worker threads spin while idle; on a small CPU shared with the request threads that spinning
    # takes cores from JSON decoding and the batcher
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if mapped_weights:
        opts.add_session_config_entry("session.disable_prepacking", "1")
    if custom_ops:
        register_custom_ops(opts, custom_ops)
    source = path if isinstance(path, bytes) else str(path)
    sess = ort.InferenceSession(source, opts, providers=providers_for(device))
    active = sess.get_providers()
    if device == "cuda" and active[0] != "CUDAExecutionProvider":
        raise RuntimeError(f"MODEL_DEVICE=cuda but the session runs on {active[0]} (CUDA libraries missing?)")
    return sess


def device_of(sess) -> str:
    return "cuda" if sess.get_providers()[0] == "CUDAExecutionProvider" else "cpu"

"""A loaded model version, as every protocol sees it: named input/output tensors, the request parameters it
takes, and ``infer``.

Each service subclasses ``Servable`` with its pre/post-processing; the data plane (``dataplane.py``) checks a
request against these declarations for every protocol, then calls ``infer``.
"""
from __future__ import annotations

import functools
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.runtime import metrics
from services.runtime.batcher import DynamicBatcher
from services.runtime.config import batches_in_flight, batching_override
from services.runtime.errors import ApiError
from services.runtime.sessions import create_session, device_of
from services.runtime.streaming import Generation
from services.runtime.validation import Checked

log = logging.getLogger("runtime.servable")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str           # v2 datatype (FP32, INT64, BYTES, ...)
    shape: tuple            # -1 for a dynamic dimension; first dimension is the batch
    description: str = ""
    optional: bool = False

    def as_v2(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


class Servable(ABC):
    """Base: owns the ONNX Runtime sessions of one version and their batchers."""

    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    mapped_weights = False  # sessions keep their weights in the file's mapping (``sessions.create_session``)
    labels: dict[str, list[str]] = {}  # output -> its class names (v2 classification)
    image_inputs: dict[str, dict] = {}  # input -> how an image file becomes it (runtime/images.to_tensor)

    def __init__(self, manifest: dict, version_dir: Path):
        self.manifest, self.dir = manifest, Path(version_dir)
        self.name, self.version = manifest["name"], int(manifest["version"])
        self.sessions = {g: create_session(self.dir / spec["file"], mapped_weights=self.mapped_weights,
                                           custom_ops=spec.get("custom_ops"))
                         for g, spec in manifest["graphs"].items()}
        self.device = device_of(next(iter(self.sessions.values())))
        self.batching = batching_override(manifest["batching"])
        self.batchers: list[DynamicBatcher] = []
        self.leases, self.retired = 0, False  # requests using it; out of service (repository.py)

    def batcher(self, graph: str, outputs: list[str], pad: dict | None = None) -> DynamicBatcher:
        sess = self.sessions[graph]
        b = DynamicBatcher(lambda feeds: dict(zip(outputs, sess.run(outputs, feeds), strict=False)),
                           max_batch_size=self.batching["max_batch_size"],
                           max_queue_delay_ms=self.batching["max_queue_delay_ms"],
                           max_queue_size=self.batching["max_queue_size"], pad=pad, model=self.name,
                           version=str(self.version), graph=graph, in_flight=batches_in_flight(self.device))
        self.batchers.append(b)
        return b

    def warm_up(self) -> None:  # noqa: B027 - a servable with nothing to warm up need not write one
        """Run a sample through the whole pipeline once, so the first client request is not the slow one."""

    @abstractmethod
    def infer(self, inputs: dict[str, np.ndarray], parameters: dict) -> dict[str, np.ndarray]:
        """Checked inputs (``dataplane.check_inputs``) and parameters (with their defaults) -> named outputs."""

    def stream(self, inputs: dict[str, np.ndarray], parameters: dict) -> Generation:
        """Like ``infer``, the answer as it is made (``runtime/streaming.py``); a model that answers whole says so."""
        raise ApiError(f"model '{self.name}' answers in one response, it does not stream: use "
                       f"POST /v2/models/{self.name}/infer (or .../generate for text)", field="model")

    def parameters(self) -> dict[str, dict]:
        """The v1/v2 request parameters this model takes: name -> JSON schema (none by default)."""
        return {}

    @functools.cached_property
    def parameter_check(self) -> Checked:
        return Checked({"type": "object", "properties": self.parameters()}, what="parameter")

    def metadata(self) -> dict:
        m = self.manifest
        return {"name": self.name, "version": str(self.version), "task": m["task"],
                "description": m.get("description", ""), "device": self.device, "metrics": m["metrics"],
                "parity": m["parity"], "batching": {k: v for k, v in self.batching.items()}}

    def close(self) -> None:
        for b in self.batchers:
            b.close()
        metrics.LOADED.labels(self.name, str(self.version), self.device).set(0)

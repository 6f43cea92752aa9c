"""A loaded model version, as every protocol sees it: named input/output tensors and ``infer``.

Each service subclasses ``Servable`` with its pre/post-processing; the v1 and v2 adapters and the native
API all go through the same object (one dataplane), so every protocol gets the same batching and checks.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.runtime import metrics
from services.runtime.batcher import DynamicBatcher
from services.runtime.config import batches_in_flight, batching_override
from services.runtime.sessions import create_session, device_of
from services.v2_tensors import NP_TO_V2, V2_TO_NP

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


class Servable:
    """Base: owns the ONNX Runtime sessions of one version and their batchers."""

    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    parameters: dict = {}   # request parameters accepted on v1/v2 (name -> description)

    def __init__(self, manifest: dict, version_dir: Path):
        self.manifest, self.dir = manifest, Path(version_dir)
        self.name, self.version = manifest["name"], int(manifest["version"])
        self.sessions = {g: create_session(self.dir / spec["file"]) for g, spec in manifest["graphs"].items()}
        self.device = device_of(next(iter(self.sessions.values())))
        self.batching = batching_override(manifest["batching"])
        self.batchers: list[DynamicBatcher] = []

    def batcher(self, graph: str, outputs: list[str], pad: dict | None = None) -> DynamicBatcher:
        sess = self.sessions[graph]
        b = DynamicBatcher(lambda feeds: dict(zip(outputs, sess.run(outputs, feeds))),
                           max_batch_size=self.batching["max_batch_size"],
                           max_queue_delay_ms=self.batching["max_queue_delay_ms"],
                           max_queue_size=self.batching["max_queue_size"], pad=pad, model=self.name,
                           version=str(self.version), graph=graph, in_flight=batches_in_flight(self.device))
        self.batchers.append(b)
        return b

    def warm_up(self) -> None:
        """Run a sample through the whole pipeline once, so the first client request is not the slow one."""

    def infer(self, inputs: dict[str, np.ndarray], parameters: dict) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def metadata(self) -> dict:
        m = self.manifest
        return {"name": self.name, "version": str(self.version), "task": m["task"],
                "description": m.get("description", ""), "device": self.device, "metrics": m["metrics"],
                "parity": m["parity"], "batching": {k: v for k, v in self.batching.items()}}

    def close(self) -> None:
        for b in self.batchers:
            b.close()
        metrics.LOADED.labels(self.name, str(self.version), self.device).set(0)


def check_inputs(servable: Servable, inputs: dict[str, np.ndarray], max_batch: int,
                 strict_datatype: bool = False) -> dict[str, np.ndarray]:
    """Validate named tensors against the servable's specs: names, datatypes, rank, fixed dimensions, one batch
    size, batch limit. JSON numbers (TF Serving REST) are cast to the declared numeric type; a v2 request names
    its datatype, which must then match exactly (``strict_datatype``), as Triton requires."""
    from services.runtime.errors import ApiError
    specs = {s.name: s for s in servable.inputs}
    unknown = sorted(set(inputs) - set(specs))
    if unknown:
        raise ApiError(f"unknown input(s) {unknown} for model '{servable.name}' (inputs: {sorted(specs)})",
                       field=unknown[0])
    out, batch = {}, None
    for name, spec in specs.items():
        if name not in inputs:
            if spec.optional:
                continue
            raise ApiError(f"model '{servable.name}' needs input '{name}' ({spec.datatype} {list(spec.shape)})",
                           field=name)
        arr = inputs[name]
        want = V2_TO_NP[spec.datatype]
        if spec.datatype == "BYTES":
            if arr.dtype != object:
                raise ApiError(f"input '{name}' must be BYTES (strings)", field=name)
        elif arr.dtype != want and strict_datatype:
            raise ApiError(f"input '{name}' has datatype {NP_TO_V2.get(arr.dtype.name, arr.dtype.name)}, but model "
                           f"'{servable.name}' expects {spec.datatype}", field=name)
        elif arr.dtype != want:
            kind_ok = (np.dtype(want).kind == "f" and arr.dtype.kind in "fiu") or \
                      (np.dtype(want).kind in "iu" and arr.dtype.kind in "iu")
            if not kind_ok:
                raise ApiError(f"input '{name}' has datatype {NP_TO_V2.get(arr.dtype.name, arr.dtype.name)}, "
                               f"expected {spec.datatype}", field=name)
            arr = arr.astype(want)
        # allow a missing trailing channel dimension of 1 (28x28 vs 28x28x1) for convenience
        if arr.ndim == len(spec.shape) - 1 and spec.shape[-1] == 1:
            arr = arr[..., None]
        if arr.ndim != len(spec.shape):
            raise ApiError(f"input '{name}' has shape {list(arr.shape)}, expected {list(spec.shape)} "
                           "(-1 = any size)", field=name)
        for got, exp in zip(arr.shape[1:], spec.shape[1:]):
            if exp != -1 and got != exp:
                raise ApiError(f"input '{name}' has shape {list(arr.shape)}, expected {list(spec.shape)}",
                               field=name)
        if batch is not None and arr.shape[0] != batch:
            raise ApiError(f"inputs disagree on the batch size ({batch} vs {arr.shape[0]} for '{name}')", field=name)
        batch = arr.shape[0]
        if batch == 0:
            raise ApiError(f"input '{name}' has an empty batch", field=name, limit=max_batch)
        if batch > max_batch:
            raise ApiError(f"input '{name}' has a batch of {batch}; the limit is {max_batch}", field=name,
                           limit=max_batch)
        out[name] = arr
    return out

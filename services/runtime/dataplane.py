"""The data plane: what a call does once its protocol has decoded it, the same for every protocol (native,
TF Serving REST, v2 over HTTP, Triton's generate, and gRPC through the gateway's v2 and v1 calls). Each protocol is
a codec: it looks the version up here (``model``: recorded for metrics, statistics and the access log, and leased
to the request), decodes the call into an ``InferRequest`` with the protocol's own parameters taken out (v2's
``timeout`` becomes the request's deadline, ``deadlines``), and encodes the ``InferResponse``. ``infer`` and
``stream`` check the inputs against the servable's tensors and the parameters against its schema, then run it.
The native routes of MNIST, GAN and sentiment hand ``infer`` tensors; translation's n-best lists and the
generator's token counts, which no tensor carries, come from their servables' own methods. It imports no web
framework: the HTTP layer passes ``on_lookup``, which records the model for its metrics and access log, and
returns the lease at the request's end."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from modelcore.datatypes import BY_NUMPY, BY_V2
from services.runtime import images
from services.runtime.config import LIMITS
from services.runtime.errors import ApiError
from services.runtime.repository import ModelRepository
from services.runtime.servable import Servable
from services.runtime.sessions import request_fault
from services.runtime.streaming import Generation


@dataclass(slots=True)
class InferRequest:
    """A call as every protocol decodes it: the leased version that answers it (``DataPlane.model``), its input
    tensors, the model's parameters (the protocol's own are its codec's business), the outputs it asks for (None:
    all), and the id to echo. The deadline travels beside it (``deadlines``), set by the codec before the lookup."""
    servable: Servable
    inputs: dict[str, np.ndarray]
    parameters: dict = field(default_factory=dict)
    outputs: tuple[str, ...] | None = None
    id: str | None = None
    strict_datatype: bool = False  # v2 names each input's datatype: a mismatch is refused, not cast


@dataclass(slots=True)
class InferResponse:
    """What the model answered, for the protocol's encoder: who answered, and the output tensors by name."""
    model: str
    version: str
    outputs: dict[str, np.ndarray]
    id: str | None = None
    labels: dict[str, list[str]] = field(default_factory=dict)  # output -> class names (classification)


class DataPlane:
    def __init__(self, repository: ModelRepository, on_lookup: Callable[[Servable], None] = lambda s: None):
        self.repository, self.on_lookup = repository, on_lookup

    def model(self, name: str, version: str | int | None = None) -> Servable:
        """The servable of ``name`` (``version``, else the newest), counted for this request and leased to it:
        ``on_lookup`` arranges the ``release`` at the request's end (a retired version closes after its last)."""
        s = self.repository.get(name, version, lease=True)
        self.on_lookup(s)
        return s

    def release(self, s: Servable) -> None:
        self.repository.release(s)

    def infer(self, request: InferRequest) -> InferResponse:
        """The request's checks (inputs against the servable's tensors, parameters against its schema), then the
        servable's ``infer``; a runtime error the request's values cause is the client's 400."""
        s = request.servable
        inputs, parameters = self._checked(request)
        try:
            outputs = s.infer(inputs, parameters)
        except Exception as exc:
            fault = _request_fault(exc, s, inputs)
            if fault is None:
                raise
            raise fault from exc
        if request.outputs is not None:
            outputs = {n: outputs[n] for n in request.outputs}
        return InferResponse(s.name, str(s.version), outputs, request.id, s.labels)

    def stream(self, request: InferRequest) -> Generation:
        """``infer``'s checks, then the answer as it is made (``Servable.stream``)."""
        return request.servable.stream(*self._checked(request))

    @staticmethod
    def _checked(request: InferRequest) -> tuple[dict[str, np.ndarray], dict]:
        s, inputs = request.servable, request.inputs
        checked = s.parameter_check(request.parameters, numbers_as_text=True)
        for name, spec in s.image_inputs.items():  # image files sent for an image input: decoded to its tensor
            if name in inputs and inputs[name].dtype == object:
                want = BY_V2[next(t for t in s.inputs if t.name == name).datatype].numpy
                inputs = {**inputs, name: images.to_tensor(inputs[name], spec, name).astype(want)}
        return check_inputs(s, inputs, LIMITS["max_batch_items"], request.strict_datatype), checked


def _request_fault(exc: Exception, s: Servable, inputs: dict[str, np.ndarray]) -> ApiError | None:
    """ONNX Runtime's refusal of the request's values, as the client's 400; None for any other error."""
    cause = request_fault(exc)
    if cause is None:
        return None
    names = sorted(inputs)
    return ApiError(f"model '{s.name}' cannot run on the values of input(s) {names}: ONNX Runtime says: {cause}",
                    field=names[0] if len(names) == 1 else None)


def _v2_name(dtype: np.dtype) -> str:
    """A request array's datatype for a message: its v2 name where it has one."""
    return BY_NUMPY[dtype.name].v2 if dtype.name in BY_NUMPY else dtype.name


def check_inputs(servable: Servable, inputs: dict[str, np.ndarray], max_batch: int,
                 strict_datatype: bool = False) -> dict[str, np.ndarray]:
    """Validate named tensors against the servable's specs: names, datatypes, rank, fixed dimensions, one batch
    size, batch limit. JSON numbers (TF Serving REST) are cast to the declared numeric type; a v2 request names
    its datatype, which must then match exactly (``strict_datatype``), as Triton requires."""
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
        want = BY_V2[spec.datatype].numpy
        if spec.datatype == "BYTES":
            if arr.dtype != object:
                raise ApiError(f"input '{name}' must be BYTES (strings)", field=name)
        elif arr.dtype != want and strict_datatype:
            raise ApiError(f"input '{name}' has datatype {_v2_name(arr.dtype)}, but model "
                           f"'{servable.name}' expects {spec.datatype}", field=name)
        elif arr.dtype != want:
            kind_ok = (np.dtype(want).kind == "f" and arr.dtype.kind in "fiu") or \
                      (np.dtype(want).kind in "iu" and arr.dtype.kind in "iu")
            if not kind_ok:
                raise ApiError(f"input '{name}' has datatype {_v2_name(arr.dtype)}, "
                               f"expected {spec.datatype}", field=name)
            arr = arr.astype(want)
        # allow a missing trailing channel dimension of 1 (28x28 vs 28x28x1) for convenience
        if arr.ndim == len(spec.shape) - 1 and spec.shape[-1] == 1:
            arr = arr[..., None]
        if arr.ndim != len(spec.shape):
            raise ApiError(f"input '{name}' has shape {list(arr.shape)}, expected {list(spec.shape)} "
                           "(-1 = any size)", field=name)
        if spec.shape[0] != -1 and arr.shape[0] != spec.shape[0]:
            raise ApiError(f"input '{name}' has a batch of {arr.shape[0]}; model '{servable.name}' takes exactly "
                           f"{spec.shape[0]} (its first dimension is fixed)", field=name, limit=spec.shape[0])
        for got, exp in zip(arr.shape[1:], spec.shape[1:], strict=False):
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

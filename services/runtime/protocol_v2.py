"""Open Inference Protocol v2 (KServe / Triton HTTP), including the binary tensor data extension.

JSON bodies are accepted with any or no Content-Type (tritonclient sends none); BYTES tensors carry text.
"""
from __future__ import annotations

import numpy as np
from flask import Blueprint, Response, current_app, request

from modelcore.datatypes import BY_V2
from services import V2_EXTENSIONS, __version__
from services.runtime import codec, deadlines, statistics
from services.runtime.config import LIMITS
from services.runtime.dataplane import InferRequest
from services.runtime.errors import ApiError, NotFound, UnsupportedMediaType
from services.runtime.http import json_body, json_response
from services.runtime.validation import Checked, unknown_in
from services.v2_tensors import bytes_tensor

# Open Inference Protocol request parameters that are the protocol's, not a model's (tritonclient sends some)
V2_PROTOCOL_PARAMETERS = {"binary_data_output", "sequence_id", "sequence_start", "sequence_end", "priority",
                          "timeout", "headers"}
_TIMEOUT = Checked({"type": "object", "properties": {"timeout": {
    "type": "integer", "minimum": 1, "maximum": 10**12, "description": "microseconds, as Triton's"}}},
    what="parameter")
bp = Blueprint("v2", __name__)
SERVER = {"name": "keras-onnx-serving", "version": __version__, "extensions": V2_EXTENSIONS}


def apply_timeout(parameters: object) -> None:
    """v2's ``timeout`` parameter (microseconds) shortens the request's deadline; applied before the lookup, so
    that a request that waits for a cold load waits within it."""
    if isinstance(parameters, dict) and "timeout" in parameters:
        deadlines.shorten(_TIMEOUT({"timeout": parameters["timeout"]}, numbers_as_text=True)["timeout"] / 1e6)


def model_parameters(parameters: dict, own: frozenset | set = frozenset()) -> dict:
    """A request's parameters less the protocol's (v2's, and ``own``): the rest are the model's."""
    return {k: v for k, v in parameters.items() if k not in V2_PROTOCOL_PARAMETERS and k not in own}


def repo():
    return current_app.extensions["repository"]


@bp.get("/v2")
def server_metadata():
    return json_response(SERVER)


@bp.get("/v2/health/live")
def live():
    return json_response({"live": True})


@bp.get("/v2/health/ready")
def ready():
    ok = repo().is_ready()
    return json_response({"ready": ok, "models": {n: repo().status(n) for n in repo().names()}},
                         200 if ok else 503)


def _servable(name, version):
    return repo().get(name, version)


@bp.get("/v2/models/<name>")
@bp.get("/v2/models/<name>/versions/<version>")
def model_metadata(name, version=None):
    s = _servable(name, version)
    loaded = [st["version"] for st in repo().status(name) if st["state"] == "AVAILABLE"]
    return json_response({"name": s.name, "versions": loaded, "platform": "onnxruntime_onnx",
                          "inputs": [t.as_v2() for t in s.inputs], "outputs": [t.as_v2() for t in s.outputs],
                          "parameters": {"version": str(s.version), "device": s.device, "task": s.manifest["task"],
                                         "request_parameters": s.parameters()}})


@bp.get("/v2/models/<name>/ready")
@bp.get("/v2/models/<name>/versions/<version>/ready")
def model_ready(name, version=None):
    try:
        s = _servable(name, version)
    except NotFound:
        raise
    except Exception:  # noqa: BLE001 - Unavailable: not ready
        return json_response({"name": name, "ready": False}, 503)
    return json_response({"name": s.name, "version": str(s.version), "ready": True})


@bp.get("/v2/models/<name>/config")
@bp.get("/v2/models/<name>/versions/<version>/config")
def model_config(name, version=None):
    s = _servable(name, version)
    # Triton's convention: with max_batch_size 0 (a model not batched) the dims include the first dimension
    first = 1 if s.batching["max_batch_size"] > 0 else 0
    batching = {"dynamic_batching": {"max_queue_delay_microseconds": int(s.batching["max_queue_delay_ms"] * 1000),
                                     "preferred_batch_size": [s.batching["max_batch_size"]]}} if first else {}
    return json_response({"name": s.name, "platform": "onnxruntime_onnx", "backend": "onnxruntime",
                          "max_batch_size": _max_rows(s) if first else 0, **batching,
                          "input": [_config_tensor(t, first) for t in s.inputs],
                          "output": [_config_tensor(t, first, s.manifest.get("labels", {}).get(t.name))
                                     for t in s.outputs]})


def _max_rows(s) -> int:
    """The most rows one request may carry: the row limit, or fewer where a binary request of that many rows of
    fixed-size tensors would pass the body limit (16 MiB holds 27 images of 224x224x3 FP32), so that a client
    sending the advertised batch is never refused for its size."""
    row = 0
    for t in s.inputs:
        dims = t.shape[1:]
        if t.datatype == "BYTES" or any(d < 0 for d in dims):
            return LIMITS["max_batch_items"]  # a row's size is the client's: only the body limit tells
        row += int(np.prod(dims, dtype=np.int64)) * np.dtype(BY_V2[t.datatype].numpy).itemsize
    room = current_app.config["MAX_CONTENT_LENGTH"] - 64 * 1024  # the JSON header of a binary request
    return max(1, min(LIMITS["max_batch_items"], room // row)) if row else LIMITS["max_batch_items"]


def _config_tensor(t, first: int, label_file: str | None = None) -> dict:
    out = {"name": t.name, "data_type": BY_V2[t.datatype].triton, "dims": list(t.shape[first:])}
    return {**out, "label_filename": label_file} if label_file else out  # Triton's name for it


# the repository's version states as Triton's index names them; UNLOADED: it loads on its next request
INDEX_STATES = {"AVAILABLE": "READY", "LOADING": "LOADING", "ON_DEMAND": "UNLOADED", "UNLOADED": "UNAVAILABLE",
                "FAILED": "UNAVAILABLE"}


@bp.post("/v2/repository/index")
def repository_index():
    body = json_body(optional=True)
    unknown_in(body, {"properties": {"ready": {}}}, {}, "field")
    out = []
    for n in repo().names():
        for st in repo().status(n):
            state = INDEX_STATES[st["state"]]
            if body.get("ready") and state != "READY":
                continue
            out.append({"name": n, "version": st["version"], "state": state, "reason": st.get("error", "")})
    return json_response(out)


@bp.post("/v2/repository/models/<name>/<any(load, unload):action>")
def repository_control(name, action):
    """Triton's load and unload take optional parameters; a model's config or files cannot be sent here: the
    repository on disk is what loads."""
    body = json_body(optional=True)
    unknown_in(body, {"properties": {"parameters": {}}}, {}, "field")
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise ApiError("'parameters' must be a JSON object", field="parameters")
    unknown_in(params, {"properties": {"unload_dependents": {}}}, {}, "parameter")
    (repo().load if action == "load" else repo().unload)(name)
    return json_response({})


@bp.get("/v2/models/stats")
@bp.get("/v2/models/<name>/stats")
@bp.get("/v2/models/<name>/versions/<version>/stats")
def model_statistics(name=None, version=None):
    names = [name] if name else repo().names()
    if name:
        repo().check_name(name)
    pairs = []
    for n in names:
        versions = [st["version"] for st in repo().status(n) if st["state"] == "AVAILABLE"]
        if version is not None:
            if str(version) not in versions:
                raise NotFound(f"version {version} of model '{n}' is not loaded (loaded: {versions or 'none'})",
                               field="version")
            versions = [str(version)]
        pairs += [(n, v) for v in versions]
    return json_response(statistics.model_stats(pairs))


@bp.post("/v2/models/<name>/infer")
@bp.post("/v2/models/<name>/versions/<version>/infer")
def infer(name, version=None):
    dataplane = current_app.extensions["dataplane"]
    if request.mimetype.startswith("image/") or request.mimetype == "multipart/form-data":
        return _infer_image_files(dataplane, name, version)
    body = codec.decompress(request.get_data(cache=False), request.headers.get("Content-Encoding"))
    req, tail = codec.split_binary(body, request.headers.get("Inference-Header-Content-Length"))
    apply_timeout(req.get("parameters"))
    s = dataplane.model(name, version)
    params = codec.v2_check_request(req, [o.name for o in s.outputs])
    wanted = req.get("outputs")
    r = dataplane.infer(InferRequest(s, codec.v2_decode_inputs(req, tail), model_parameters(params),
                                     outputs=tuple(o["name"] for o in wanted) if wanted else None,
                                     id=req.get("id") if isinstance(req.get("id"), str) else None,
                                     strict_datatype=True))
    payload, headers = codec.v2_encode_outputs(r.model, r.version, r.outputs, req, r.id, r.labels)
    return Response(payload, 200, headers=headers)


IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")


def _infer_image_files(dataplane, name, version):
    """An image model (imported with ``--image-input``) called with the files themselves, as BentoML and KServe
    users send them: the body as one image (``curl --data-binary @cat.jpg -H 'Content-Type: image/jpeg'``), or a
    form upload with a field per image input (``curl -F image=@cat.jpg -F image=@dog.png``: a batch). The answer
    is v2's JSON; ``?classification=K`` asks for the top K labels of each labelled output (``--labels``)."""
    apply_timeout({"timeout": request.args["timeout"]} if "timeout" in request.args else None)
    s = dataplane.model(name, version)
    if not s.image_inputs:
        raise UnsupportedMediaType(f"model '{s.name}' takes no image files (it was not imported with "
                                   "--image-input): send v2 JSON or binary tensors", field="Content-Type")
    others = [t.name for t in s.inputs if not t.optional and t.name not in s.image_inputs]
    if others:
        raise ApiError(f"model '{s.name}' also needs the inputs {others}, which a file cannot carry: send v2 JSON "
                       "or binary tensors", field=others[0])
    unknown_in(dict(request.args), {"properties": {"classification": {}, "timeout": {}}}, {}, "query parameter")
    if request.mimetype == "multipart/form-data":
        unknown_in({**request.form, **request.files}, {"properties": {n: {} for n in s.image_inputs}}, {},
                   "form field")
        inputs = {n: bytes_tensor([f.read(LIMITS["max_image_bytes"] + 1) for f in request.files.getlist(n)])
                  for n in s.image_inputs}
        missing = [n for n, files in inputs.items() if not len(files)]
        if missing:
            raise ApiError(f"the upload has no file for input '{missing[0]}' (curl -F {missing[0]}=@picture.jpg)",
                           field=missing[0])
    elif request.mimetype not in IMAGE_TYPES:
        raise UnsupportedMediaType(f"Content-Type {request.mimetype} is not an image this server reads; send "
                                   f"{', '.join(IMAGE_TYPES)}, or multipart/form-data", field="Content-Type")
    elif len(s.image_inputs) > 1:
        raise ApiError(f"model '{s.name}' takes several images {sorted(s.image_inputs)}: send them as form fields "
                       "of those names (multipart/form-data)", field="Content-Type")
    else:
        inputs = {next(iter(s.image_inputs)): bytes_tensor([request.get_data(cache=False)])}
    req: dict = {}
    if "classification" in request.args:
        k = request.args["classification"]
        req = {"outputs": [{"name": o.name, "parameters": {"classification": int(k) if k.isdigit() else k}
                            if o.name in s.labels else {}} for o in s.outputs]}
        codec.v2_check_request(req, [o.name for o in s.outputs])
    r = dataplane.infer(InferRequest(s, inputs))
    payload, headers = codec.v2_encode_outputs(r.model, r.version, r.outputs, req, None, r.labels)
    return Response(payload, 200, headers=headers)

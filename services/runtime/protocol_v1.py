"""TensorFlow Serving REST API: ``/v1/models/NAME[/versions/N][:predict|/metadata]`` with the row
(``instances``) and columnar (``inputs``) formats, ``{"b64": ...}`` strings, and TF Serving's response shapes."""
from __future__ import annotations

import numpy as np
from flask import Blueprint, current_app, request

from modelcore.datatypes import BY_V2
from services.runtime import codec
from services.runtime.config import LIMITS
from services.runtime.dataplane import InferRequest
from services.runtime.errors import ApiError, NotFound
from services.runtime.http import json_response
from services.runtime.native import check_count

bp = Blueprint("v1", __name__)


def _split(path: str) -> tuple[str, str | None, str]:
    """``NAME[/versions/N][:verb|/metadata]`` -> (name, version, action)."""
    action = "status"
    if ":" in path:
        path, verb = path.rsplit(":", 1)
        action = verb
    elif path.endswith("/metadata"):
        path, action = path[: -len("/metadata")], "metadata"
    parts = path.split("/")
    if len(parts) == 1:
        return parts[0], None, action
    if len(parts) == 3 and parts[1] in ("versions", "labels"):  # a label: serving.json's (repository.py)
        return parts[0], parts[2], action
    raise NotFound(f"no such route: /v1/models/{path}")


@bp.get("/v1/models/<path:path>")
def get_model(path):
    name, version, action = _split(path)
    repo = current_app.extensions["repository"]
    if action == "metadata":
        s = repo.get(name, version)
        sig = {"inputs": {t.name: _tensor_info(t) for t in s.inputs},
               "outputs": {t.name: _tensor_info(t) for t in s.outputs},
               "method_name": "tensorflow/serving/predict"}
        return json_response({"model_spec": {"name": s.name, "signature_name": "", "version": str(s.version)},
                              "metadata": {"signature_def": {"signature_def": {"serving_default": sig}}}})
    if action != "status":
        raise NotFound(f"unknown action '{action}' for GET")
    if name not in repo.names():
        raise NotFound(f"model '{name}' is not served here", field="model")
    states = repo.status(name)
    if version is not None:
        version = repo.version_number(name, version)
        states = [st for st in states if st["version"] == str(version)]
        if not states:
            raise NotFound(f"version {version} of model '{name}' is not loaded", field="version")
    return json_response({"model_version_status": [
        {"version": st["version"], "state": st["state"] if st["state"] in ("AVAILABLE", "LOADING") else "END",
         "status": {"error_code": "OK" if st["state"] == "AVAILABLE" else "UNKNOWN",
                    "error_message": st.get("error", "")}} for st in states]})


def _tensor_info(t):
    return {"dtype": BY_V2[t.datatype].tf_enum, "name": t.name,
            "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in t.shape], "unknown_rank": False}}


@bp.post("/v1/models/<path:path>")
def predict(path):
    name, version, action = _split(path)
    if action not in ("predict", "classify"):
        raise NotFound(f"unknown action '{action}' (served: ':predict', and ':classify' for a model imported with "
                       "--labels)")
    dataplane = current_app.extensions["dataplane"]
    s = dataplane.model(name, version)
    body = codec.parse_json(codec.decompress(request.get_data(cache=False), request.headers.get("Content-Encoding")))
    if not isinstance(body, dict):
        raise ApiError("the body must be a JSON object", field="body")
    if body.get("signature_name", "serving_default") not in ("serving_default", ""):
        raise ApiError(f"serving signature name {body.get('signature_name')!r} not found (signatures: "
                       "['serving_default'])", field="signature_name")
    if action == "classify":
        return _classify(dataplane, s, body)
    specs = {t.name: t for t in s.inputs}
    required = [t.name for t in s.inputs if not t.optional]
    if ("instances" in body) == ("inputs" in body):
        raise ApiError("the body needs exactly one of 'instances' (row format) or 'inputs' (columnar format)",
                       field="instances")
    row = "instances" in body
    if row:
        inst = body["instances"]
        if not isinstance(inst, list) or not inst:
            raise ApiError("'instances' must be a non-empty list", field="instances",
                           limit=LIMITS["max_batch_items"])
        check_count(len(inst), "instances", LIMITS["max_batch_items"])
        if all(isinstance(x, dict) and "b64" not in x for x in inst):
            names = set().union(*(x.keys() for x in inst))
            cols = {n: [x.get(n) for x in inst] for n in names}
            if any(v is None for c in cols.values() for v in c):
                raise ApiError("every instance must name the same inputs", field="instances")
        else:
            if len(required) != 1:
                raise ApiError(f"model '{s.name}' has several inputs {required}; send each instance as an object",
                               field="instances")
            cols = {required[0]: inst}
    else:
        col = body["inputs"]
        cols = col if isinstance(col, dict) and "b64" not in col else {required[0]: col}
    arrays = {}
    for n, v in cols.items():
        if n not in specs:
            raise ApiError(f"unknown input '{n}' (inputs: {sorted(specs)})", field=n)
        # an image input (import --image-input) also takes {"b64": ...} image files
        encoded = n in s.image_inputs and _first_is_b64(v)
        arrays[n] = codec.tfs_value(v, n, "BYTES" if encoded else specs[n].datatype)
        if arrays[n].ndim == 0:
            arrays[n] = arrays[n].reshape(1)
    params = body.get("parameters", {})
    if not isinstance(params, dict):
        raise ApiError("'parameters' must be a JSON object", field="parameters")
    outputs = dataplane.infer(InferRequest(s, arrays, params)).outputs
    if row:
        n = next(iter(outputs.values())).shape[0]
        if len(outputs) == 1:
            preds = codec.tfs_jsonable(next(iter(outputs.values())))
        else:
            cols_out = {k: codec.tfs_jsonable(v) for k, v in outputs.items()}
            preds = [{k: cols_out[k][i] for k in outputs} for i in range(n)]
        return json_response({"predictions": preds})
    if len(outputs) == 1:
        return json_response({"outputs": codec.tfs_jsonable(next(iter(outputs.values())))})
    return json_response({"outputs": {k: codec.tfs_jsonable(v) for k, v in outputs.items()}})


def _first_is_b64(v) -> bool:
    while isinstance(v, list) and v:
        v = v[0]
    return isinstance(v, dict) and "b64" in v


def _classify(dataplane, s, body: dict):
    """TF Serving's Classify: ``examples`` (each an object of features named by the model's inputs, with the
    ``context`` features shared by all) -> each example's [label, score] for every class of the labelled output,
    in the output's order, under ``result``."""
    if not s.labels:
        raise ApiError(f"model '{s.name}' has no labels to classify with: import it with --labels FILE, or call "
                       "':predict'", field="model")
    unknown = sorted(set(body) - {"signature_name", "examples", "context"})
    if unknown:
        raise ApiError(f"unknown field(s) {unknown} (a classify request takes signature_name, examples, context)",
                       field=unknown[0])
    examples, context = body.get("examples"), body.get("context", {})
    if not isinstance(examples, list) or not examples or not all(isinstance(e, dict) for e in examples):
        raise ApiError("'examples' must be a non-empty list of objects of features", field="examples",
                       limit=LIMITS["max_batch_items"])
    check_count(len(examples), "examples", LIMITS["max_batch_items"])
    if not isinstance(context, dict):
        raise ApiError("'context' must be an object of features", field="context")
    specs = {t.name: t for t in s.inputs}
    merged = [{**context, **e} for e in examples]
    names = set().union(*(e.keys() for e in merged))
    if names - set(specs):
        raise ApiError(f"unknown feature(s) {sorted(names - set(specs))} (inputs: {sorted(specs)})",
                       field=sorted(names - set(specs))[0])
    arrays = {}
    for name, spec in specs.items():
        missing = [i for i, e in enumerate(merged) if name not in e]
        if missing and not spec.optional:
            raise ApiError(f"example {missing[0]} has no feature '{name}'", field=name)
        if missing:
            continue
        arr = codec.tfs_value([e[name] for e in merged], name, spec.datatype)
        fixed = spec.shape[1:]
        if arr.ndim == 2 and len(fixed) > 1 and -1 not in fixed and arr.shape[1] == np.prod(fixed):
            arr = arr.reshape(len(merged), *fixed)  # an Example's feature is a flat list
        arrays[name] = arr
    output, labels = next(iter(s.labels.items()))
    scores = dataplane.infer(InferRequest(s, arrays)).outputs[output]
    return json_response({"result": [[[labels[i], float(row[i])] for i in range(len(row))]
                                     for row in scores.reshape(len(merged), -1)]})

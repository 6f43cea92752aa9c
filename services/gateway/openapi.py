"""OpenAPI 3 description of every route the gateway serves: each service's own routes (native API, OpenAI's)
from their declarations (``services/NAME/routes.py``), then TF Serving REST and the OIP v2, which every service
speaks, and an infer path per imported model with an example request made from its stored samples."""
from __future__ import annotations

from collections.abc import Sequence

from services import __version__, catalog
from services.routes import Route
from services.runtime.config import LIMITS

ERR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
MODEL_NAMES = list(catalog.MODELS)


GENERATE = {"type": "object", "required": ["text_input"], "additionalProperties": True,
            "description": "other properties are parameters, as in Triton",
            "properties": {"text_input": {"type": "string"}, "parameters": {"type": "object"}}}


def _json(schema: dict, example=None) -> dict:
    c = {"schema": schema}
    if example is not None:
        c["example"] = example
    return {"content": {"application/json": c}}


def _op(summary, body=None, ok=None, tags=None, params=None, ok_content=None, codes=(400, 404, 413, 429, 503)):
    op = {"summary": summary, "tags": tags or [], "responses": {"200": ok_content or {
        "description": "ok", **_json(ok or {"type": "object"})}}}
    for c in codes:
        op["responses"][str(c)] = ERR
    if body is not None:
        op["requestBody"] = {"required": True, **body}
    if params:
        op["parameters"] = params
    return op


def declared(route: Route) -> dict:
    """One service route's operation: its summary, body schema (with this process's limits) and example."""
    body = _json(route.schema(LIMITS), route.example) if route.method == "POST" else None
    ok = None
    if route.answers:
        ok = {"description": "the answer", "content": {"application/json": {"schema": {"type": "object"}},
                                                      **{t: {"schema": sch} for t, sch in route.answers.items()}}}
    codes = (400, 404, 413, 429, 503) if route.method == "POST" else ()
    return {route.method.lower(): _op(route.summary, body, None, [route.tag], ok_content=ok, codes=codes)}


def imported_path(model: dict, v2_req: dict) -> dict:
    """``POST /v2/models/NAME/infer`` of one imported model (an entry of the models service's /api/models)."""
    def listed(tensors):
        return ", ".join(f"{t['name']} {t['datatype']} {t['shape']}" for t in tensors)
    summary = f"{model['name']}: inputs {listed(model['inputs'])} -> outputs {listed(model['outputs'])}"
    op = _op(summary, _json(v2_req, model.get("example")), None, ["imported"])
    op["description"] = (f"Imported from {model.get('source') or 'a file'} (version {model['version']}); the "
                         "example is its stored sample. Every protocol serves it: /v1/models/NAME:predict too.")
    return {"post": op}


def spec(imported: Sequence[dict] = ()) -> dict:
    """``imported``: the imported models loaded now (their /api/models entries), each with its own path."""
    n = LIMITS["max_batch_items"]
    names = MODEL_NAMES + sorted({m["name"] for m in imported})
    name_p = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": names}}
    ver_p = {"name": "version", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9]{1,9}$"}}
    tensor = {"type": "object", "required": ["name", "datatype", "shape"],
              "properties": {"name": {"type": "string"}, "datatype": {"type": "string"},
                             "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                             "data": {"type": "array"}, "parameters": {"type": "object"}}}
    v2_req = {"type": "object", "required": ["inputs"],
              "properties": {"id": {"type": "string"}, "inputs": {"type": "array", "items": tensor, "minItems": 1},
                             "outputs": {"type": "array", "items": {"type": "object"}},
                             "parameters": {"type": "object"}}}
    v1_req = {"type": "object", "properties": {"instances": {"type": "array", "minItems": 1, "maxItems": n},
                                               "inputs": {}, "signature_name": {"type": "string"},
                                               "parameters": {"type": "object"}}}
    paths = {
        **{path: declared(route) for path, route in catalog.ROUTES.items()},
        "/api/models": {"get": _op("Every model, version, state, device and quality metrics", tags=["native"],
                                   codes=(503,))},
        "/v1/models/{name}": {"get": _op("TF Serving model status", tags=["tfserving"], params=[name_p], codes=(404,))},
        "/v1/models/{name}/versions/{version}": {"get": _op("TF Serving model status (one version)",
                                                            tags=["tfserving"], params=[name_p, ver_p], codes=(404,))},
        "/v1/models/{name}/metadata": {"get": _op("TF Serving model metadata (signature)", tags=["tfserving"],
                                                  params=[name_p], codes=(404, 503))},
        "/v1/models/{name}:predict": {"post": _op("TF Serving predict (row 'instances' or columnar 'inputs')",
                                                  _json(v1_req), None, ["tfserving"], [name_p])},
        "/v1/models/{name}/versions/{version}:predict": {"post": _op("TF Serving predict (one version)",
                                                                     _json(v1_req), None, ["tfserving"],
                                                                     [name_p, ver_p])},
        "/v2": {"get": _op("Server metadata", tags=["v2"], codes=())},
        "/v2/health/live": {"get": _op("Liveness", tags=["v2"], codes=())},
        "/v2/health/ready": {"get": _op("Readiness: 200 only when every backend is ready", tags=["v2"], codes=(503,))},
        "/v2/models/{name}": {"get": _op("Model metadata", tags=["v2"], params=[name_p], codes=(404, 503))},
        "/v2/models/{name}/ready": {"get": _op("Model readiness", tags=["v2"], params=[name_p], codes=(404, 503))},
        "/v2/models/{name}/config": {"get": _op("Model configuration", tags=["v2"], params=[name_p],
                                                codes=(404, 503))},
        "/v2/models/{name}/versions/{version}": {"get": _op("Model metadata (one version)", tags=["v2"],
                                                            params=[name_p, ver_p], codes=(404, 503))},
        "/v2/models/{name}/versions/{version}/ready": {"get": _op("Model version readiness", tags=["v2"],
                                                                  params=[name_p, ver_p], codes=(404, 503))},
        "/v2/models/{name}/infer": {"post": _op(
            "Inference (JSON, or the binary tensor extension with Inference-Header-Content-Length)",
            {"content": {"application/json": {"schema": v2_req},
                         "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
            None, ["v2"], [name_p])},
        "/v2/models/{name}/versions/{version}/infer": {"post": _op("Inference (one version)", _json(v2_req), None,
                                                                   ["v2"], [name_p, ver_p])},
        "/v2/models/{name}/generate": {"post": _op(
            "Triton's generate extension: text_input in, text_output out (the text models)",
            _json(GENERATE, {"text_input": "ROMEO:\n", "parameters": {"max_tokens": 60, "seed": 1}}),
            {"type": "object", "properties": {"model_name": {"type": "string"}, "model_version": {"type": "string"},
                                              "text_output": {"type": "string"}}}, ["v2"], [name_p])},
        "/v2/models/{name}/generate_stream": {"post": _op(
            "Triton's generate extension: the text as server-sent events while it is made (textgen)",
            _json(GENERATE, {"text_input": "ROMEO:\n", "max_tokens": 60}), None, ["v2"], [name_p],
            ok_content={"description": "one data: event per write, each a generate response",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}}})},
        "/v2/repository/index": {"post": _op("Repository index (body {\"ready\": true}: loaded versions only)",
                                             tags=["v2"], codes=(400, 503))},
        "/v2/repository/models/{name}/load": {"post": _op("Load a model (again): it serves until unloaded",
                                                          tags=["v2"], params=[name_p], codes=(400, 404, 503))},
        "/v2/repository/models/{name}/unload": {"post": _op("Unload every version of a model until it is loaded",
                                                            tags=["v2"], params=[name_p], codes=(400, 404))},
        "/v2/models/stats": {"get": _op("Statistics of every model (Triton's shape)", tags=["v2"], codes=(503,))},
        "/v2/models/{name}/stats": {"get": _op("Statistics of a model's loaded versions", tags=["v2"],
                                               params=[name_p], codes=(404,))},
        "/metrics": {"get": {"summary": "Prometheus metrics", "tags": ["ops"],
                             "responses": {"200": {"description": "text exposition",
                                                   "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        **{f"/v2/models/{m['name']}/infer": imported_path(m, v2_req) for m in imported},
    }
    return {"openapi": "3.0.3",
            "info": {"title": "Keras ONNX model serving gateway", "version": __version__,
                     "description": "Five Keras model families exported to ONNX, and the models you imported, behind "
                                    "one address: a native JSON API, TensorFlow Serving's REST API and the Open "
                                    "Inference Protocol v2."},
            "servers": [{"url": "/"}],
            "components": {"schemas": {"Error": {"type": "object", "required": ["error"], "properties": {
                "error": {"type": "string"}, "field": {"type": "string"}, "limit": {}}}},
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "security": [{}, {"bearer": []}],
            "paths": paths}

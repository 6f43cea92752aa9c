"""OpenAPI 3 description of every route the gateway serves (native API, TF Serving REST, OIP v2)."""
from __future__ import annotations

from services import __version__
from services import catalog
from services.runtime import schemas
from services.runtime.config import LIMITS

ERR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
MODEL_NAMES = list(catalog.MODELS)


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


OPENAI_COMPLETION = {"type": "object", "required": ["model"], "properties": {
    "model": {"type": "string"}, "prompt": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    "max_tokens": {"type": "integer"}, "temperature": {"type": "number"}, "top_p": {"type": "number"},
    "n": {"type": "integer"}, "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    "seed": {"type": "integer"}, "stream": {"type": "boolean"}, "echo": {"type": "boolean"}}}


def spec() -> dict:
    n = LIMITS["max_batch_items"]
    name_p = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": MODEL_NAMES}}
    ver_p = {"name": "version", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9]{1,9}$"}}
    native = schemas.native()  # the services validate against the same schemas
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
        "/api/mnist/predict": {"post": _op("Classify handwritten digits", _json(
            native["/api/mnist/predict"], {"images": [[[0] * 28] * 28]}),
            {"type": "object", "properties": {"predictions": {"type": "array"}}}, ["native"])},
        "/api/sentiment/predict": {"post": _op("Sentiment of review text", _json(
            native["/api/sentiment/predict"], {"text": "A wonderful, moving film."}), None, ["native"])},
        "/api/translate": {"post": _op("Translate English to German", _json(
            native["/api/translate"], {"text": "How are you?", "beam_size": 4}), None, ["native"])},
        "/api/generate": {"post": _op("Generate Shakespeare-like text (stream: true for server-sent events)", _json(
            native["/api/generate"], {"prompt": "ROMEO:\n", "max_tokens": 200, "temperature": 0.7, "seed": 1}),
            None, ["native"],
            ok_content={"description": "generated text (JSON) or text/event-stream",
                        "content": {"application/json": {"schema": {"type": "object"}},
                                    "text/event-stream": {"schema": {"type": "string"}}}})},
        "/api/gan/sample": {"post": _op("Sample digits from the GAN", _json(
            native["/api/gan/sample"], {"n": 16, "seed": 7, "format": "json"}), None, ["native"],
            ok_content={"description": "images", "content": {"application/json": {"schema": {"type": "object"}},
                                                             "image/png": {"schema": {"type": "string",
                                                                                      "format": "binary"}}}})},
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
        "/v1/completions": {"post": _op("OpenAI completions for the text generator (stream: true for data: chunks "
                                        "ending in data: [DONE])", _json(OPENAI_COMPLETION,
                                        {"model": "textgen", "prompt": "ROMEO:\n", "max_tokens": 40, "seed": 1}),
                                        None, ["openai"], codes=(400, 404, 429, 503))},
        "/v1/models": {"get": _op("OpenAI model list", tags=["openai"], codes=())},
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
    }
    return {"openapi": "3.0.3",
            "info": {"title": "Keras ONNX model serving gateway", "version": __version__,
                     "description": "Five Keras model families exported to ONNX, behind one address: a native JSON "
                                    "API, TensorFlow Serving's REST API and the Open Inference Protocol v2."},
            "servers": [{"url": "/"}],
            "components": {"schemas": {"Error": {"type": "object", "required": ["error"], "properties": {
                "error": {"type": "string"}, "field": {"type": "string"}, "limit": {}}}},
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "security": [{}, {"bearer": []}],
            "paths": paths}

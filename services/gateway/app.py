"""The gateway (port 8080): one address for every model and protocol.

Routes the native API by path prefix and ``/v1/models/NAME`` / ``/v2/models/NAME`` by model name to the
owning service (backend map in ``backends.py``); aggregates readiness, ``/api/models`` and the repository
index; checks body size before reading, API keys and rate limits; streams server-sent events through as
they come; passes binary OIP bodies through untouched; measures everything.
"""
from __future__ import annotations

import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import orjson
from flask import Flask, Response, g, request, send_from_directory
from werkzeug.exceptions import HTTPException

from services.gateway import auth, backends, metrics, openapi
from services.gateway.upstream import Upstream, response_headers
from services.runtime import logs
from services.runtime.config import LIMITS
from services.runtime.errors import ApiError
from services.runtime.http import assign_request_id, json_response, log_access
from services.runtime.metrics import exposition

log = logging.getLogger("gateway")
PUBLIC = ("/v2/health/", "/metrics", "/docs", "/openapi.json", "/static/", "/favicon.ico")
_V1 = re.compile(r"^/v1/models/([^/:]+)")
_V2 = re.compile(r"^/v2/models/([^/]+)")
FORWARD_HEADERS = ("content-type", "content-encoding", "accept", "accept-encoding", "inference-header-content-length",
                   "x-request-id")


def upstream_target() -> str:
    """The request target as the client sent it (gunicorn's RAW_URI), percent-encoded where it is not plain
    ASCII, so odd bytes in a path reach the backend (which answers 404) instead of breaking the request line."""
    raw = request.environ.get("RAW_URI")
    if raw:
        try:
            data = raw.encode("latin-1")
        except UnicodeEncodeError:
            data = raw.encode("utf-8")
    else:
        data = (request.full_path if request.query_string else request.path).encode("utf-8")
    return quote(data, safe="/%:@!$&'()*+,;=?-._~")


def create_app() -> Flask:
    logs.setup("gateway")
    app = Flask("gateway", static_folder=os.path.join(os.path.dirname(__file__), "static"))
    app.config["MAX_CONTENT_LENGTH"] = LIMITS["max_body_bytes"]
    router = backends.Router(backends.load())
    upstream = Upstream()
    keys = auth.load_keys()
    pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="gateway-fanout")
    _setup_cors(app)
    limiter = _setup_rate_limit(app)

    # ----------------------------------------------------------------------------------- hooks
    @app.before_request
    def _before():
        g.t0 = time.perf_counter()
        assign_request_id()
        g.route, g.model = "other", ""
        length = request.content_length
        if length is not None and length > LIMITS["max_body_bytes"]:  # before reading a byte of it
            raise ApiError(f"request body of {length} bytes is larger than {LIMITS['max_body_bytes']}", status=413,
                           field="body", limit=LIMITS["max_body_bytes"])
        if keys and not request.path.startswith(PUBLIC) and request.path != "/" and request.method != "OPTIONS":
            if not auth.valid(auth.presented_key(request.headers.get("Authorization")), keys):
                raise ApiError("missing or invalid API key: send 'Authorization: Bearer <key>'", status=401,
                               field="Authorization")

    @app.after_request
    def _after(resp: Response):
        dt = time.perf_counter() - g.get("t0", time.perf_counter())
        route, model = g.get("route", "other"), g.get("model", "")
        metrics.REQUESTS.labels(route, model, str(resp.status_code)).inc()
        metrics.LATENCY.labels(route, model).observe(dt)
        log_access(resp, dt, route=route, model=model)
        return resp

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        resp = json_response(exc.body(), exc.status)
        if exc.status == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="models"'
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if exc.code == 413:
            return json_response({"error": f"request body is larger than {LIMITS['max_body_bytes']} bytes",
                                  "field": "body", "limit": LIMITS["max_body_bytes"]}, 413)
        if exc.code == 429:
            return json_response({"error": f"rate limit exceeded ({exc.description}); retry later",
                                  "limit": str(exc.description)}, 429)
        msg = f"no such route: {request.method} {request.path}" if exc.code == 404 else exc.description
        return json_response({"error": msg}, exc.code or 500)

    @app.errorhandler(Exception)
    def _unexpected(exc):
        log.exception("unhandled gateway error")
        return json_response({"error": f"internal gateway error; request id {g.get('request_id')}"}, 500)

    # ----------------------------------------------------------------------------------- proxying
    def forward(backend, route: str, model: str):
        g.route, g.model = route, model
        body = request.get_data(cache=False) if request.method in ("POST", "PUT", "PATCH") else None
        headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARD_HEADERS}
        headers["X-Request-ID"] = g.request_id
        headers["X-Forwarded-For"] = request.remote_addr or ""
        path = upstream_target()
        wants_stream = route == "native" and request.path == "/api/generate"
        resp = upstream.request(backend, request.method, path, headers, body, stream=wants_stream)
        hdrs = response_headers(resp)
        if wants_stream and resp.headers.get("Content-Type", "").startswith("text/event-stream"):
            def relay():
                try:
                    yield from resp.stream(1024)
                finally:
                    resp.release_conn()
            return Response(relay(), resp.status, headers=hdrs, direct_passthrough=True)
        data = resp.data
        if wants_stream:  # asked to stream, but the backend answered with a plain (error) body
            resp.release_conn()
        return Response(data, resp.status, headers=hdrs)

    @app.route("/api/<path:rest>", methods=["GET", "POST"])
    def native(rest):
        b = router.native(request.path)
        if b is None:
            raise ApiError(f"no such route: {request.method} {request.path}", status=404)
        return forward(b, "native", b.name)

    def by_model(protocol: str, pattern: re.Pattern):
        m = pattern.match(request.path)
        name = m.group(1) if m else ""
        b = router.model(name)
        if b is None:
            raise ApiError(f"model '{name}' is not served here (models: {sorted(router.by_model)})", status=404,
                           field="model")
        return forward(b, protocol, name)

    @app.route("/v1/models/<path:rest>", methods=["GET", "POST"])
    def v1(rest):
        return by_model("v1", _V1)

    @app.route("/v2/models/<path:rest>", methods=["GET", "POST"])
    def v2(rest):
        return by_model("v2", _V2)

    # ----------------------------------------------------------------------------------- aggregates
    def fan_out(method: str, path: str, timeout: float = 1.0):
        rid = g.request_id  # fan-out threads have no request context

        def one(b):
            try:
                r = upstream.request(b, method, path, {"X-Request-ID": rid}, b"" if method == "POST" else None,
                                     timeout=timeout)
                return b.name, r.status, (orjson.loads(r.data) if r.data else None)
            except ApiError as exc:
                return b.name, exc.status, {"error": exc.message}
            except orjson.JSONDecodeError:
                return b.name, 502, {"error": "backend answered with invalid JSON"}
        return list(pool.map(one, router.backends.values()))

    @app.get("/v2/health/live")
    def live():
        return json_response({"live": True})

    @app.get("/v2/health/ready")
    def ready():
        g.route = "health"
        results = fan_out("GET", "/v2/health/ready")
        ok = all(status == 200 for _, status, _ in results)
        return json_response({"ready": ok, "backends": {n: {"ready": s == 200, "status": s} for n, s, _ in results}},
                             200 if ok else 503)

    @app.get("/v2")
    def server_meta():
        return json_response({"name": "keras-onnx-serving-gateway", "version": "1.0.0",
                              "extensions": ["binary_tensor_data", "model_repository"]})

    @app.get("/api/models")
    def models():
        g.route = "native"
        out, down = [], {}
        for name, status, body in fan_out("GET", "/api/models", timeout=5.0):
            if status == 200 and body:
                out.extend(body.get("models", []))
            else:
                down[name] = (body or {}).get("error", f"status {status}")
                for m in router.backends[name].models:
                    out.append({"name": m, "service": name, "state": "UNAVAILABLE", "error": down[name]})
        return json_response({"models": out, "unavailable_backends": down})

    @app.post("/v2/repository/index")
    def repo_index():
        out = []
        for name, status, body in fan_out("POST", "/v2/repository/index", timeout=5.0):
            if status == 200 and isinstance(body, list):
                out.extend(body)
            else:
                out.extend({"name": m, "state": "UNAVAILABLE", "reason": f"backend {name}: status {status}"}
                           for m in router.backends[name].models)
        return json_response(out)

    @app.get("/metrics")
    def prom():
        body, ctype = exposition()
        return Response(body, 200, mimetype=ctype.split(";")[0])

    @app.get("/openapi.json")
    def openapi_json():
        return json_response(openapi.spec())

    @app.get("/docs")
    def docs():
        return Response(_SWAGGER_HTML, 200, mimetype="text/html")

    @app.get("/docs/<path:asset>")
    def docs_asset(asset):
        import swagger_ui_bundle
        return send_from_directory(swagger_ui_bundle.swagger_ui_path, asset)

    @app.get("/")
    def index():
        page = os.path.join(app.static_folder, "index.html")
        if os.path.exists(page):
            return send_from_directory(app.static_folder, "index.html")
        return json_response({"service": "gateway", "docs": "/docs", "openapi": "/openapi.json"})

    if limiter is not None:
        for view in (live, ready, prom, docs, docs_asset, openapi_json):
            limiter.exempt(view)
    return app


def _setup_cors(app: Flask) -> None:
    origins = os.environ.get("GATEWAY_CORS_ORIGINS", "")
    if origins:
        from flask_cors import CORS
        CORS(app, origins=[o.strip() for o in origins.split(",")], expose_headers=["X-Request-ID",
                                                                                  "Inference-Header-Content-Length"])


def _setup_rate_limit(app: Flask):
    rate = os.environ.get("GATEWAY_RATE_LIMIT", "")
    if not rate:
        return None
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address

    def key():
        k = auth.presented_key(request.headers.get("Authorization"))
        return auth.key_id(k) if k else get_remote_address()
    return Limiter(key, app=app, default_limits=[rate], storage_uri=os.environ.get("GATEWAY_RATE_LIMIT_STORAGE",
                                                                                   "memory://"),
                   headers_enabled=True)


_SWAGGER_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>Model gateway API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css"></head><body><div id="ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script></body></html>"""

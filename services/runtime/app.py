"""The Flask app factory every model service uses: repository, protocols, metrics, errors, request ids.

A service provides its Servable classes (one per model name) and a blueprint for its native API; this
module adds TF Serving REST (``/v1``), the Open Inference Protocol (``/v2``), ``/api/models``, ``/metrics``,
JSON errors for everything (never an HTML page, never a 500 for client input) and JSON access logs.
"""
from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request
from opentelemetry.trace import SpanKind
from werkzeug.exceptions import HTTPException

from services import tracing
from services.routes import Route
from services.runtime import config, deadlines, logs, metrics
from services.runtime.budget import MemoryBudget, default_budget
from services.runtime.config import LIMITS, web_workers
from services.runtime.dataplane import DataPlane
from services.runtime.errors import ApiError
from services.runtime.http import assign_request_id, json_response, log_access
from services.runtime.protocol_generate import bp as generate_bp
from services.runtime.protocol_v1 import bp as v1_bp
from services.runtime.protocol_v2 import bp as v2_bp
from services.runtime.repository import ModelRepository
from services.runtime.validation import Checked
from services.settings import ProcessSettings, ServiceSettings

log = logging.getLogger("runtime.app")


def protocol_of(path: str) -> str:
    if path in ("/v1/completions", "/v1/models"):
        return "openai"
    if path.startswith("/v1/"):
        return "v1"
    if path.startswith("/v2"):
        return "v2"
    if path.startswith("/api/"):
        return "native"
    return "other"


def create_app(service: str, factories: dict, native=None, routes: tuple[Route, ...] = (),
               repository: ModelRepository | None = None, poll: bool = True,
               settings: ServiceSettings | None = None, discover=None) -> Flask:
    """``native``: the service's blueprint of its own ``routes`` (their bodies are checked against the routes'
    schemas, with this process's limits); ``settings``: the process's (read from the environment once) unless
    given, and then for everything the process serves (``config.use``); ``discover``: the repository's models are
    found at every poll (``ModelRepository``), not fixed."""
    if settings is not None:
        config.use(settings)
    settings = settings or ServiceSettings.load()
    logs.setup(ProcessSettings.from_env().log_level)
    tracing.setup(service)
    app = Flask(service)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    budget = None
    if discover is not None and not repository:  # models found at every poll load on demand, under a budget
        budget = MemoryBudget((settings.model_memory_budget or default_budget()) // web_workers())  # a worker's part
    repo = repository or ModelRepository(settings.model_repository, factories, settings.model_control_file,
                                         discover=discover, budget=budget)
    if not repository:
        repo.refresh()
        if poll:
            repo.start_polling()
    app.extensions["repository"] = repo
    app.extensions["dataplane"] = DataPlane(repo, on_lookup=_record_model)
    app.extensions["bodies"] = {r.path: Checked(r.schema(settings.limits), r.hints) for r in routes
                                if r.method == "POST"}
    app.extensions["service"] = service
    app.register_blueprint(v1_bp)
    app.register_blueprint(v2_bp)
    app.register_blueprint(generate_bp)
    if native is not None:
        app.register_blueprint(native)

    @app.before_request
    def _start():
        g.t0 = time.perf_counter()
        assign_request_id()
        g.model, g.model_version = None, ""
        deadlines.begin(settings.decode_timeout_seconds, request.environ)  # this thread's, until its next request
        if tracing.enabled:  # the request's span, current until teardown (in this thread)
            g.span = tracing.span(f"{service} {request.method} {request.path}", SpanKind.SERVER, request.headers)
            g.span.__enter__()

    @app.teardown_request
    def _end_span(exc):
        for s in g.pop("leased", ()):
            repo.release(s)
        span = g.pop("span", None)
        if span is not None:
            span.__exit__(None, None, None)

    @app.errorhandler(ConnectionAbortedError)
    def _client_gone(_exc):
        return json_response({"error": "the client closed its connection"}, 499)

    @app.after_request
    def _finish(resp: Response):
        proto = protocol_of(request.path)
        dt = time.perf_counter() - g.get("t0", time.perf_counter())
        model = g.get("model")
        if model:
            version, status = g.get("model_version", ""), resp.status_code
            resp.headers["X-Model-Version"] = version  # which version answered (a label or canary may choose it)
            metrics.child(metrics.REQUESTS, model, version, proto, str(status)).inc()
            metrics.child(metrics.REQUEST_LATENCY, model, version, proto,
                          "success" if status < 400 else "fail").observe(dt)
            metrics.child(metrics.LAST_REQUEST, model, version).set(time.time())
        log_access(resp, dt, model=model, protocol=proto)
        return resp

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return json_response(exc.body(), exc.status)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        body: dict = {"error": exc.description}
        headers = {}
        if exc.code == 404:
            routes = sorted({r.rule.split("<")[0] for r in app.url_map.iter_rules() if r.endpoint != "static"})
            body = {"error": f"no such route: {request.method} {request.path}; routes: {', '.join(routes)}"}
        elif exc.code == 405:
            allowed = sorted(set(getattr(exc, "valid_methods", None) or []) - {"HEAD", "OPTIONS"})
            body = {"error": f"method {request.method} not allowed on {request.path}; use {' or '.join(allowed)}",
                    "limit": allowed}
            headers["Allow"] = ", ".join(allowed)
        elif exc.code == 413:
            body = {"error": f"request body is larger than {LIMITS['max_body_bytes']} bytes",
                    "field": "body", "limit": LIMITS["max_body_bytes"]}
        return json_response(body, exc.code or 500, headers=headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return json_response({"error": f"internal error ({type(exc).__name__}); request id {g.get('request_id')}"},
                             500)

    @app.get("/metrics")
    def _metrics():
        body, ctype = metrics.exposition()
        return Response(body, 200, mimetype=ctype.split(";")[0])

    @app.get("/api/models")
    def _models():
        out = []
        for name in repo.names():
            for st in repo.status(name):
                entry = {"name": name, "service": service, **st}
                if st["state"] == "AVAILABLE":
                    entry.update(repo.get(name, st["version"]).metadata())
                out.append(entry)
        return json_response({"models": out})

    return app


def _record_model(s) -> None:
    """This request's model and version, for its metrics and access log (``_finish``); its lease, returned at
    teardown."""
    g.model, g.model_version = s.name, str(s.version)
    g.setdefault("leased", []).append(s)

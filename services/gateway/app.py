"""The gateway (port 8080): one address for every model and protocol, an ASGI app on uvicorn (uvloop,
httptools) under gunicorn.

Routes the native API by path prefix and ``/v1/models/NAME`` / ``/v2/models/NAME`` by model name to the
owning service (backend map in ``backends.py``); aggregates readiness, ``/api/models`` and the repository
index; checks body size before reading, API keys and rate limits; streams server-sent events through as
they come; passes binary OIP bodies through untouched; measures everything.

Why an event loop and not Flask: the gateway does no model work, only I/O, and a thread per request cost as
much CPU per proxied call as the model service itself on a small machine (FINDINGS). Every request takes one
path: this ASGI app, on uvicorn's public worker. The few routes the gateway answers itself are in ``control``.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from urllib.parse import quote

import orjson
from opentelemetry.trace import SpanKind

from services import tracing
from services.gateway import auth, backends, control, metrics, ratelimit
from services.gateway.headers import FORWARD
from services.gateway.placement import Placement
from services.gateway.upstream import Upstream, response_headers
from services.runtime import logs
from services.runtime.errors import ApiError
from services.runtime.request_ids import request_id
from services.settings import GatewaySettings, ProcessSettings

log = logging.getLogger("gateway")
PUBLIC = ("/healthz", "/v2/health/", "/metrics", "/docs", "/openapi.json", "/static/", "/favicon.ico")
_V1 = re.compile(r"^/v1/models/([^/:]+)")
_V2 = re.compile(r"^/v2/(?:repository/)?models/([^/]+)")
JSON = [(b"content-type", b"application/json")]


def upstream_target(scope) -> bytes:
    """The request target as the client sent it, percent-encoded where it is not plain ASCII, so odd bytes in
    a path reach the backend (which answers 404) instead of breaking the request line."""
    raw = scope.get("raw_path") or scope["path"].encode()
    if not raw.isascii() or b" " in raw:
        raw = quote(raw, safe="/%:@!$&'()*+,;=-._~").encode()
    qs = scope.get("query_string")
    return raw + b"?" + qs if qs else raw


class Request:
    """What one call needs across its checks, its handler, metrics and the access log."""

    __slots__ = ("scope", "receive", "send", "method", "path", "headers", "request_id", "route", "model",
                 "status", "extra_headers", "started")

    def __init__(self, scope, receive, send):
        self.scope, self.receive, self.send = scope, receive, send
        self.method, self.path = scope["method"], scope["path"]
        self.headers: dict[bytes, bytes] = dict(scope["headers"])  # a repeated header: the last one counts
        rid = request_id(self.headers.get(b"x-request-id"))
        self.request_id = rid.decode("latin-1")
        self.route, self.model, self.status, self.started = "other", "", 0, False
        self.extra_headers: list[tuple[bytes, bytes]] = [(b"x-request-id", rid)]

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status, self.started = status, True
        await self.send({"type": "http.response.start", "status": status, "headers": headers + self.extra_headers})

    async def respond(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = JSON) -> None:
        """A whole answer: framed by its length, not chunked."""
        if not any(k == b"content-length" for k, _ in headers):
            headers = headers + [(b"content-length", b"%d" % len(body))]
        await self.start(status, headers)
        await self.send({"type": "http.response.body", "body": b"" if self.method == "HEAD" else body})

    async def json(self, obj, status: int = 200) -> None:
        await self.respond(status, orjson.dumps(obj))

    async def body(self, limit: int) -> bytes:
        """The whole request body, refused (413) past ``limit`` even when no Content-Length announced it."""
        parts, size = [], 0
        while True:
            msg = await self.receive()
            if msg["type"] == "http.disconnect":
                raise ConnectionAbortedError("client disconnected")
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise ApiError(f"request body is larger than {limit} bytes", status=413, field="body", limit=limit)
            parts.append(chunk)
            if not msg.get("more_body"):
                return parts[0] if len(parts) == 1 else b"".join(parts)


class Gateway:
    def __init__(self, settings: GatewaySettings, process: ProcessSettings | None = None):
        self.process = process or ProcessSettings()
        logs.setup(self.process.log_level)
        tracing.setup("gateway")
        self.settings = settings
        self.grpc_servers: list = []
        self.router = backends.Router(backends.load(settings))
        self.upstream = Upstream(settings)
        imported = self.router.imported
        self.placement = Placement(imported, settings.models_replicas, settings.replicas_refresh_seconds,
                                   settings.hot_model_rps) if imported is not None else None
        self._refresh: asyncio.Task | None = None
        self.keys = auth.load_keys(settings)
        self.rate = ratelimit.from_settings(settings)
        self.control = control.Control(self)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.lifespan(receive, send)
        if scope["type"] != "http":
            return
        t0 = time.perf_counter()
        req = Request(scope, receive, send)
        with tracing.span("gateway request", SpanKind.SERVER,
                          _trace_headers(req.headers) if tracing.enabled else None) as span:
            await self._serve(req, t0)
            if span is not None:
                span.set_attributes({"http.request.method": req.method, "url.path": req.path, "route": req.route,
                                     "model": req.model, "http.response.status_code": req.status})

    async def _serve(self, req: Request, t0: float) -> None:
        try:
            await self.handle(req)
        except ApiError as exc:
            if not req.started:
                if exc.status == 401:
                    req.extra_headers.append((b"www-authenticate", b'Bearer realm="models"'))
                await req.json(exc.body(), exc.status)
        except ConnectionAbortedError:
            req.status = req.status or 499  # the client went away; nothing to answer
        except (ConnectionError, TimeoutError):
            # the backend broke off a stream already under way: end the response unfinished, so the client
            # sees a truncated body rather than a clean end
            log.warning("backend stream broke off", extra={"request_id": req.request_id, "path": req.path})
            raise
        except Exception:  # noqa: BLE001 - one bad request must never take the process down
            log.exception("unhandled gateway error", extra={"request_id": req.request_id})
            if not req.started:
                await req.json({"error": f"internal gateway error; request id {req.request_id}"}, 500)
        finally:
            metrics.record(req.method, req.path, req.status, time.perf_counter() - t0, req.route, req.model,
                           req.request_id)

    async def lifespan(self, receive, send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    if self.settings.grpc_tfs_port or self.settings.grpc_v2_port:
                        # imported only when served: its messages share full names with tensorflow-serving-api's,
                        # which a process cannot load twice (a test process may hold the real client's)
                        from services.gateway import grpc_api
                        self.grpc_servers = await grpc_api.start(
                            self, self.process.bind_host, self.settings.grpc_tfs_port, self.settings.grpc_v2_port,
                            self.settings.max_body_bytes)
                except Exception as exc:  # noqa: BLE001 - e.g. a port that cannot be bound: refuse to start
                    await send({"type": "lifespan.startup.failed", "message": f"gRPC: {exc}"})
                    return
                if self.placement is not None:
                    self._refresh = asyncio.ensure_future(self.placement.refresh_forever())
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                if self._refresh is not None:
                    self._refresh.cancel()
                # gRPC calls in flight get the same grace as HTTP's (gunicorn's graceful timeout)
                await asyncio.gather(*(s.stop(grace=self.process.graceful_timeout) for s in self.grpc_servers))
                self.upstream.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def check(self, req: Request) -> None:
        """Size, API key and rate limit: before a byte of the body is read."""
        length = req.headers.get(b"content-length")
        limit = self.settings.max_body_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            raise ApiError(f"request body of {int(length)} bytes is larger than {limit}", status=413, field="body",
                           limit=limit)
        public = req.path == "/" or req.path.startswith(PUBLIC) or req.method == "OPTIONS"
        key = auth.presented_key(req.headers.get(b"authorization", b"").decode("latin-1"))
        if self.keys and not public and not auth.valid(key, self.keys):
            raise ApiError("missing or invalid API key: send 'Authorization: Bearer <key>'", status=401,
                           field="Authorization")
        if self.rate is not None and not public:
            ok, headers = await self.rate.hit(self.rate.bucket(key, req.scope.get("client"),
                                                               req.headers.get(b"x-forwarded-for")))
            req.extra_headers += headers
            if not ok:
                raise self.rate.exceeded()

    def resolve(self, method: str, path: str) -> tuple[str, str, object, ApiError | None]:
        """-> (route, model, backend or None, the 404 to answer or None): the route names metrics, logs and
        errors; no backend and no error means the gateway answers itself (``control``)."""
        if path.startswith("/api/") and path != "/api/models":
            backend = self.router.native(path)
            if backend is None:
                return "native", "", None, ApiError(f"no such route: {method} {path}; routes: "
                                                    f"{control.ROUTE_FAMILIES}", status=404)
            return "native", backend.name, backend, None
        if path in ("/v1/completions", "/v1/models"):  # OpenAI's API, on the service whose routes name it
            backend = self.router.native(path)
            if backend is None:
                return "openai", "", None, ApiError(f"no backend serves {path}", status=404)
            return "openai", "", backend, None
        if path == "/v2/models/stats":  # every model's, gathered from every backend (``control``)
            return "v2", "", None, None
        if path.startswith(("/v1/models/", "/v2/models/", "/v2/repository/models/")):
            route = "v1" if path[2] == "1" else "v2"
            m = (_V1 if route == "v1" else _V2).match(path)
            model = m.group(1) if m else ""
            backend = self.router.model(model)
            if backend is None:
                return route, model, None, ApiError(
                    f"model '{model}' is not served here (models: {sorted(self.router.by_model)})",
                    status=404, field="model")
            return route, model, backend, None
        return "other", "", None, None

    async def handle(self, req: Request) -> None:
        """Name the route (for metrics, logs and errors), check the request once, then proxy or answer here."""
        req.route, req.model, backend, missing = self.resolve(req.method, req.path)
        await self.check(req)
        if missing is not None:
            raise missing
        if backend is None:
            return await self.answer_here(req)
        await self.forward(req, backend)

    async def answer_here(self, req: Request) -> None:
        """The gateway's own routes (``control``, on Starlette's routing), with this request's status and headers
        recorded as for a proxied call."""
        async def send(message) -> None:
            if message["type"] == "http.response.start":
                req.status, req.started = message["status"], True
                message = {**message, "headers": list(message.get("headers", [])) + req.extra_headers}
            await req.send(message)
        await self.control.app({**req.scope, "gateway.request": req}, req.receive, send)

    async def forward(self, req: Request, backend) -> None:
        body = await req.body(self.settings.max_body_bytes) if req.method not in ("GET", "HEAD") else b""
        headers = [(k, v) for k, v in req.scope["headers"] if k in FORWARD]
        headers.append((b"X-Request-ID", req.request_id.encode()))
        client = req.scope.get("client")
        if client:
            headers.append((b"X-Forwarded-For", client[0].encode()))
        method = "GET" if req.method == "HEAD" else req.method  # a HEAD answer has no body to frame
        # a client that leaves cancels this call, which closes the backend connection: the service then stops
        # decoding for nobody, streaming or not
        left = asyncio.Event()
        watcher = asyncio.ensure_future(self._cancel_on_disconnect(req, asyncio.current_task(), left))
        with tracing.span(f"upstream {backend.name}", SpanKind.CLIENT):
            if tracing.enabled:
                headers += tracing.inject()  # the service's request span continues this trace
            try:
                whole = await self._forward(req, backend, method, headers, body)
            except asyncio.CancelledError:
                if not left.is_set():
                    raise
                raise ConnectionAbortedError("client disconnected") from None
            finally:
                watcher.cancel()  # before the answer ends: uvicorn reports a finished response as a disconnect
        if whole is None:
            await req.send({"type": "http.response.body", "body": b""})  # the end of a stream
        else:
            await req.respond(*whole)

    async def _forward(self, req: Request, backend, method: str, headers, body: bytes):
        """-> (status, body, headers) of a whole answer; None after passing on a stream but its end. An imported
        model's call goes to the replicas that serve it (``placement``), and on to the next when one is down."""
        replicas = [backend]
        if self.placement is not None and backend is self.router.imported and req.model:
            replicas = self.placement.pick(req.model)
        for i, replica in enumerate(replicas):
            try:
                resp = await self.upstream.request(replica, method, upstream_target(req.scope), headers, body)
                break
            except ApiError as exc:
                if exc.status == 503 and i + 1 < len(replicas):  # refused or circuit open: nothing was served
                    continue
                if exc.status == 503 and req.model and req.model != backend.name:  # name what the caller asked
                    exc.message = f"model '{req.model}' is unavailable: {exc.message}"
                raise
        out = response_headers(resp)
        if not resp.streaming or req.method == "HEAD":
            return resp.status, await resp.read(), out  # read whole by the upstream's own tries
        # server-sent events (or any chunked answer): pass each piece on as it comes
        await req.start(resp.status, out)
        async for chunk in resp.chunks_as_they_come():
            await req.send({"type": "http.response.body", "body": chunk, "more_body": True})
        return None

    @staticmethod
    async def _cancel_on_disconnect(req: Request, task: asyncio.Task | None, left: asyncio.Event) -> None:
        while True:
            msg = await req.receive()
            if msg["type"] == "http.disconnect":
                left.set()
                if task is not None:
                    task.cancel()
                return


def _trace_headers(headers: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode("latin-1") for k, v in headers.items() if k in (b"traceparent", b"tracestate")}


def create_app(settings: GatewaySettings | None = None):
    """The ASGI app, its settings read from the environment now unless given; wrapped in Starlette's CORS
    middleware when ``GATEWAY_CORS_ORIGINS`` lists origins."""
    settings = settings or GatewaySettings.from_env()
    app = Gateway(settings, ProcessSettings.from_env())
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        from starlette.middleware.cors import CORSMiddleware
        return CORSMiddleware(app, allow_origins=origins, allow_methods=["GET", "POST", "OPTIONS"],
                              allow_headers=["*"], expose_headers=["X-Request-ID", "Inference-Header-Content-Length"])
    return app

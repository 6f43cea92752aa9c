"""The gateway's hot path, run in the HTTP parsers' callbacks: a proxied ``POST`` with a ``Content-Length`` to a
backend that answers whole bodies (every model call but text generation).

Why: through uvicorn's ASGI cycle and the async handler in ``app.py``, such a call cost the gateway about 400 us
of CPU on the 2-core benchmark box: a scope, an event, a task, five awaits and two futures per call. A minimal
callback-only proxy measured 150 us for the same calls, and the gateway's overhead against the service hit
directly fell from 20% to 10% (bench/results/vm/FINDINGS.md). Here the client connection's parser hands the
request to a pooled backend connection, whose parser hands the answer straight back: no task, no future.

Everything else takes the full path unchanged: other methods, chunked or 100-continue uploads, a streaming
backend, unknown routes and models, a missing or wrong API key (the full path explains the 401), CORS. A rate
limit is counted in a task before the call (its storage is async), then the call goes on here. A backend call
that needs a new connection, or whose pooled one turns out dead, goes through ``Upstream.send`` (connect,
retries, circuit breaker) in a task, as the full path does.
"""
from __future__ import annotations

import logging
import time

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from services.gateway import auth, metrics
from services.gateway.headers import DROPPED, FORWARD
from services.gateway.upstream import BackendDown, Receiver, as_api_error
from services.runtime.config import LIMITS
from services.runtime.errors import ApiError
from services.runtime.request_ids import request_id

log = logging.getLogger("gateway")
PREFIXES = (b"/api/", b"/v1/models/", b"/v2/models/")
SKIP = DROPPED | {b"content-length"}  # the fast path frames the body itself


class _NoEvent:
    """uvicorn's protocol sets its current cycle's ``message_event`` when the connection drops."""

    @staticmethod
    def set() -> None:
        pass


NO_EVENT = _NoEvent()


class FastPath:
    """Decides which requests take the hot path, and holds what they share."""

    def __init__(self, gateway):
        self.gateway = gateway
        self.upstream = gateway.upstream
        self.max_body = LIMITS["max_body_bytes"]

    def accept(self, proto) -> "Exchange | None":
        """Called when a request's headers are in: an Exchange for the hot path, or None for the full path."""
        parser = proto.parser
        url = proto.url
        if parser.get_method() != b"POST" or not url.startswith(PREFIXES) or not url.isascii() \
                or parser.get_http_version() != "1.1" or parser.should_upgrade():
            return None
        path = httptools.parse_url(url).path
        if b"%" in path:
            return None
        path = path.decode("ascii")
        route, model, backend, _ = self.gateway.resolve("POST", path)
        if backend is None or backend.streams:
            return None
        length = rid = authz = None
        fwd = []
        for name, value in proto.headers:
            if name in FORWARD:
                fwd.append(b"%s: %s\r\n" % (name, value))
            elif name == b"content-length":
                length = value
            elif name == b"x-request-id":
                rid = value
            elif name == b"authorization":
                authz = value
            elif name == b"transfer-encoding":
                return None
        if length is None or not length.isdigit() or int(length) > self.max_body:
            return None
        keys = self.gateway.keys
        key = auth.presented_key(authz.decode("latin-1")) if authz else None
        if keys and not auth.valid(key, keys):
            return None
        rid = request_id(rid)
        client = proto.client
        if client:
            fwd.append(b"X-Forwarded-For: %s\r\n" % client[0].encode())
        head = b"POST %s HTTP/1.1\r\nHost: %s\r\n%sX-Request-ID: %s\r\n" % (
            url, self.upstream.host(backend), b"".join(fwd), rid)
        ex = Exchange(self, proto, backend, path, route, model, rid, head)
        if self.gateway.rate is not None:
            ex.rate_key = self.gateway.rate.bucket(key, client)
        return ex

    @staticmethod
    def proto_task(proto, coro) -> None:
        """A task the server waits for at shutdown, as uvicorn's own request tasks."""
        task = proto.loop.create_task(coro)
        task.add_done_callback(proto.tasks.discard)
        proto.tasks.add(task)


class Exchange(Receiver):
    """One hot-path call, from the client's headers to the answer's last byte.

    To uvicorn's protocol it stands in for the request cycle (``response_complete``, ``disconnected``,
    ``keep_alive``, ``message_event``): pipelining, shutdown and a dropped client work as they do for ASGI
    calls. To the backend connection it is the receiver of the answer (``headers``, ``status``, ``_headers``,
    ``_body``, ``_end``, and the idle timeout), as ``upstream.Response`` is on the full path."""

    __slots__ = ("fast", "proto", "backend", "path", "route", "model", "rid", "head", "body", "data", "t0", "sent_at",
                 "response_complete", "disconnected", "keep_alive", "message_event", "status", "headers", "chunks",
                 "timer", "timeout", "conn", "last", "retried", "rate_key", "extra")

    def __init__(self, fast: FastPath, proto, backend, path: str, route: str, model: str, rid: bytes, head: bytes):
        self.fast, self.proto, self.backend, self.path = fast, proto, backend, path
        self.route, self.model = route, model
        self.rid, self.head, self.body, self.data = rid, head, [], b""
        self.t0 = time.perf_counter()
        self.sent_at = self.last = 0.0
        self.response_complete = self.disconnected = self.retried = False
        self.keep_alive = proto.parser.should_keep_alive()
        self.message_event = NO_EVENT
        self.status, self.headers, self.chunks = 0, [], []
        self.timer = self.conn = self.rate_key = None
        self.timeout = fast.upstream.read_timeout
        self.extra = b""

    # -- from the client connection's parser
    def on_body(self, data: bytes) -> None:
        self.body.append(data)

    def on_message_complete(self) -> None:
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body = []
        self.data = self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        if self.rate_key is not None:
            self.fast.proto_task(self.proto, self._rate_limited())
            return
        self._send()

    async def _rate_limited(self) -> None:
        """The rate limit is counted in async storage (memory, or Redis across replicas): checked in a task."""
        rate = self.fast.gateway.rate
        ok, headers = await rate.hit(self.rate_key)
        self.extra = b"".join(b"%s: %s\r\n" % kv for kv in headers)
        if not ok:
            return self.fail(rate.exceeded())
        self._send()

    def _send(self) -> None:
        upstream = self.fast.upstream
        conn = upstream.idle(self.backend)
        if conn is None:  # no idle connection, or the breaker is not closed: the full path's call
            self.fast.proto_task(self.proto, self._via_send())
            return
        self.conn = conn
        self.sent_at, self.last = time.perf_counter(), time.monotonic()
        conn.start(self.data, self)
        self.timer = self.proto.loop.call_later(self.timeout, self._check_idle)

    # -- from the backend connection's parser (as upstream.Response)
    def _headers(self, status: int) -> None:
        self.status = status

    def _body(self, data: bytes) -> None:
        self.chunks.append(data)
        self.last = time.monotonic()

    def _end(self, error: BaseException | None = None) -> None:
        if self.conn is None:
            return
        conn, self.conn = self.conn, None
        if self.timer is not None:
            self.timer.cancel()
        metrics.observe_upstream(self.backend.name, time.perf_counter() - self.sent_at)
        if error is None:
            self.fast.upstream.breaker(self.backend.name).succeeded(False)
            body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
            try:
                return self.answer(self.status, self.headers, body)
            except Exception:  # noqa: BLE001 - a bug here must not leave the client waiting
                log.exception("fast path failed", extra={"request_id": self.rid.decode("ascii")})
                self.proto.transport.close()
                return
        if isinstance(error, BackendDown) and not self.retried:
            # the pooled connection died before answering (a restarted backend worker): the full path's call
            # retries on fresh connections and counts the failure against the breaker
            self.retried, self.status, self.headers, self.chunks = True, 0, [], []
            self.fast.proto_task(self.proto, self._via_send())
            return
        conn.abort()
        self.fail(as_api_error(self.backend, error, self.timeout))

    async def _via_send(self) -> None:
        try:
            resp = await self.fast.upstream.send(self.backend, self.data)
            body = await resp.read()
        except ApiError as exc:
            return self.fail(exc)
        except (TimeoutError, ConnectionError) as exc:
            return self.fail(as_api_error(self.backend, exc, self.timeout))
        self.answer(resp.status, resp.headers, body)

    # -- to the client
    def fail(self, exc: ApiError) -> None:
        self.answer(exc.status, [(b"content-type", b"application/json")], orjson.dumps(exc.body()))

    def answer(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        proto = self.proto
        if not self.disconnected:
            out = [STATUS_LINE.get(status) or b"HTTP/1.1 %d \r\n" % status]
            out += [b"%s: %s\r\n" % kv for kv in headers if kv[0] not in SKIP]
            out += [b"%s: %s\r\n" % kv for kv in proto.server_state.default_headers]
            out.append(self.extra)
            out.append(b"x-request-id: %s\r\ncontent-length: %d\r\n%s\r\n" % (
                self.rid, len(body), b"" if self.keep_alive else b"connection: close\r\n"))
            out.append(body)
            proto.transport.write_now(b"".join(out))
        self.response_complete = True
        metrics.record("POST", self.path, status if not self.disconnected else 499, time.perf_counter() - self.t0,
                       self.route, self.model, self.rid.decode("latin-1"))
        if self.disconnected:
            return
        if not self.keep_alive:
            proto.transport.close()
        else:
            proto.on_response_complete()

"""Calls from the gateway's event loop to the model services: pooled keep-alive connections whose responses
httptools parses as they arrive, a per-backend circuit breaker, up to three tries when a connection dies before
the whole answer of a call that does not stream (model calls have no side effects; a stream is never retried once
its head arrived), and an idle timeout (504).

Written on asyncio and httptools' public response parser rather than aiohttp's client because this is the
gateway's hot path (bench/results/vm/FINDINGS.md has the costs).
"""
from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from urllib.parse import urlsplit

import httptools

from services.gateway import metrics
from services.gateway.headers import DROPPED
from services.runtime.errors import ApiError
from services.settings import GatewaySettings

PAUSE_BYTES = 1 << 20  # a slow stream reader: stop reading the backend past 1 MiB buffered


class BackendDown(Exception):
    """The backend refused the connection or dropped it before answering (counts against its breaker)."""


class CircuitOpen(Exception):
    pass


class CircuitBreaker:
    """closed -> (fail_max consecutive connection failures) -> open -> (reset seconds) -> half-open: one trial
    call; success closes, failure opens again. Used from one event loop, so it needs no lock."""

    def __init__(self, fail_max: int, reset_seconds: float, name: str = ""):
        self.fail_max, self.reset, self.name = fail_max, reset_seconds, name
        self.failures = 0
        self.opened_at: float | None = None
        self.trial_running = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "open" if time.monotonic() - self.opened_at < self.reset else "half-open"

    def before(self) -> bool:
        """-> whether this call is the half-open trial; raises CircuitOpen when calls must fail fast."""
        if self.opened_at is None:
            return False
        state = self.state
        if state == "open" or self.trial_running:
            raise CircuitOpen()
        self.trial_running = True
        return True

    def succeeded(self, trial: bool) -> None:
        if self.failures or trial:
            if self.opened_at is not None:
                metrics.CIRCUIT_OPEN.labels(self.name).set(0)
            self.failures, self.opened_at = 0, None
            self.trial_running = False

    def failed(self, trial: bool, down: bool) -> None:
        if trial:
            self.trial_running = False
        if not down:
            return
        self.failures += 1
        if trial or self.failures >= self.fail_max:
            self.opened_at = time.monotonic()
            metrics.CIRCUIT_OPEN.labels(self.name).set(1)

    async def call(self, fn):
        trial = self.before()
        try:
            result = await fn()
        except BackendDown:
            self.failed(trial, True)
            raise
        except BaseException:
            self.failed(trial, False)
            raise
        self.succeeded(trial)
        return result


class Response:
    """A backend's answer as it arrives: status and headers first, then the body (whole or chunk by chunk). A
    call that stays silent for ``timeout`` seconds ends in TimeoutError (504)."""

    def __init__(self, conn: "Connection", timeout: float):
        loop = asyncio.get_running_loop()
        self.conn: Connection | None = conn
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head = loop.create_future()
        self.chunks: deque[bytes] = deque()
        self.body: bytes | None = None
        self.buffered = 0
        self.done = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future | None = None
        self.timeout, self.last = timeout, time.monotonic()
        self.timer = loop.call_later(timeout, self._check_idle)

    def _check_idle(self) -> None:
        idle = time.monotonic() - self.last
        if idle < self.timeout:
            self.timer = asyncio.get_running_loop().call_later(self.timeout - idle, self._check_idle)
            return
        conn = self.conn
        self._end(TimeoutError())
        if conn is not None:
            conn.abort()

    # -- from the connection (parser callbacks)
    def _headers(self, status: int) -> None:
        self.status, self.last = status, time.monotonic()
        if not self.head.done():
            self.head.set_result(None)

    def _body(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        self.last = time.monotonic()
        if self.buffered > PAUSE_BYTES and self.conn is not None and self.conn.transport is not None:
            self.conn.transport.pause_reading()
        self._wake()

    def _end(self, error: BaseException | None = None) -> None:
        if self.done:
            return
        self.done, self.error, self.conn = True, error, None
        self.timer.cancel()
        if not self.head.done():
            self.head.set_exception(error or BackendDown("connection closed before an answer"))
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    # -- for the gateway
    @property
    def streaming(self) -> bool:
        """No Content-Length: the body comes chunked, as server-sent events do."""
        return not any(k == b"content-length" for k, _ in self.headers)

    async def _chunks(self):
        while True:
            if self.chunks:
                data = b"".join(self.chunks)
                self.chunks.clear()
                if self.buffered > PAUSE_BYTES and self.conn is not None:
                    self.conn.transport.resume_reading()
                self.buffered = 0
                yield data
            elif self.done:
                if self.error is not None:
                    raise self.error
                return
            else:
                self.waiter = asyncio.get_running_loop().create_future()
                await self.waiter
                self.waiter = None

    async def read(self) -> bytes:
        """The whole body (read once, kept)."""
        if self.body is None:
            if self.done and self.error is None:  # the usual case: the whole answer came with its headers
                self.body = b"".join(self.chunks)
            else:
                self.body = b"".join([c async for c in self.chunks_as_they_come()])
        return self.body

    async def chunks_as_they_come(self):
        try:
            async for chunk in self._chunks():
                yield chunk
        except asyncio.CancelledError:  # the caller gave up (its client left): so does the backend
            self.abort()
            raise

    def abort(self) -> None:
        """The client went away: drop the backend connection (the service then frees the stream's row)."""
        conn = self.conn
        self._end(ConnectionAbortedError("client disconnected"))
        if conn is not None:
            conn.abort()


class Connection(asyncio.Protocol):
    """One keep-alive connection to a backend; at most one request on it at a time."""

    def __init__(self, pool: deque):
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.response is not None:
            r, self.response = self.response, None
            r._end(BackendDown(f"connection lost: {exc}") if r.status == 0 else ConnectionResetError(str(exc)))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.abort()
            if self.response is not None:
                r, self.response = self.response, None
                r._end(ConnectionError(f"bad response from backend: {exc}"))

    def send(self, data: bytes, timeout: float) -> Response:
        return self.start(data, Response(self, timeout))

    def start(self, data: bytes, response: Response) -> Response:
        """Send one request; the parser's callbacks go to ``response``."""
        assert self.transport is not None, "sent before the connection was made"
        self.response = response
        self.transport.write(data)
        return response

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if self.response is not None:
            self.response.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        if self.response is not None:
            self.response._headers(self.parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response._body(body)

    def on_message_complete(self) -> None:
        r, self.response = self.response, None
        if r is not None:
            r._end()
        if self.parser.should_keep_alive() and not self.closed and len(self.pool) < (self.pool.maxlen or 0):
            self.pool.append(self)  # ready for the next request while the caller still reads this body
        else:
            self.abort()  # a full pool would drop its oldest connection without closing it


class Upstream:
    """Idle connections per backend (LIFO), opened on demand; a breaker per backend."""

    def __init__(self, settings: GatewaySettings):
        self.connect_timeout = settings.connect_timeout
        self.read_timeout = settings.upstream_timeout
        self.max_idle = 64  # idle connections kept per backend
        self.fail_max = settings.breaker_failures
        self.reset = settings.breaker_reset_seconds
        self.pools: dict[str, deque] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self.addresses: dict[str, tuple[str, int, bytes]] = {}

    def breaker(self, name: str) -> CircuitBreaker:
        b = self.breakers.get(name)
        if b is None:
            b = self.breakers[name] = CircuitBreaker(self.fail_max, self.reset, name)
        return b

    def _address(self, backend) -> tuple[str, int, bytes]:
        a = self.addresses.get(backend.url)
        if a is None:
            u = urlsplit(backend.url)
            a = self.addresses[backend.url] = (u.hostname, u.port or 80, u.netloc.encode())
        return a

    async def _connect(self, backend, pool: deque) -> Connection:
        host, port, _ = self._address(backend)
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(lambda: Connection(pool), host, port),
                                             self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise BackendDown(str(exc) or type(exc).__name__) from None
        return conn

    def _pool(self, backend) -> deque:
        pool = self.pools.get(backend.name)
        if pool is None:
            pool = self.pools[backend.name] = deque(maxlen=self.max_idle)
        return pool

    def host(self, backend) -> bytes:
        return self._address(backend)[2]

    async def request(self, backend, method: str, target: bytes, headers: list[tuple[bytes, bytes]],
                      body: bytes, timeout: float | None = None) -> Response:
        """-> the backend's response once its headers are in. Raises ApiError 502/503/504 on backend trouble."""
        head = [b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (method.encode(), target, self.host(backend))]
        head += [b"%s: %s\r\n" % kv for kv in headers]
        if body or method not in ("GET", "HEAD"):
            head.append(b"Content-Length: %d\r\n" % len(body))
        head.append(b"\r\n")
        return await self.send(backend, b"".join(head) + body, timeout)

    async def send(self, backend, data: bytes, timeout: float | None = None) -> Response:
        """``request`` for a request already encoded."""
        timeout = timeout or self.read_timeout
        pool = self._pool(backend)

        async def send() -> Response:
            for attempt in range(3):
                # an idle pooled connection first; after a dead one, new ones (the other idle ones may be
                # stale as well: a restarted worker resets them all). Three tries, not two: each service worker
                # listens on its own socket, so a new connection queued on a killed worker can die too
                conn = None
                while attempt == 0 and pool and conn is None:
                    c = pool.pop()
                    conn = None if c.closed else c
                reused = conn is not None
                if conn is None:
                    conn = await self._connect(backend, pool)
                resp = conn.send(data, timeout)
                try:
                    await resp.head
                    if not resp.streaming:
                        # the whole answer, within these tries: a worker that dies mid-answer has sent the
                        # client nothing yet, and model calls have no side effects, so it is asked again
                        await resp.read()
                    return resp
                except asyncio.CancelledError:  # the caller gave up before the answer: drop the connection
                    conn.abort()
                    raise
                except (BackendDown, ConnectionResetError):
                    if reused:
                        while pool:
                            pool.popleft().abort()
                    if attempt == 2:
                        raise
            raise AssertionError("unreachable")

        t0 = time.perf_counter()
        try:
            return await self.breaker(backend.name).call(send)
        except (CircuitOpen, BackendDown, OSError) as exc:  # TimeoutError and ConnectionError are OSErrors
            raise as_api_error(backend, exc, timeout) from None
        finally:
            metrics.observe_upstream(backend.name, time.perf_counter() - t0)

    def close(self) -> None:
        for pool in self.pools.values():
            while pool:
                pool.pop().abort()


def as_api_error(backend, exc: BaseException, timeout: float) -> ApiError:
    """What the client is told when a backend call fails: 503 down or circuit open, 504 too slow, 502 broken."""
    if isinstance(exc, CircuitOpen):
        return ApiError(f"backend '{backend.name}' is unavailable (circuit open, retry in a few seconds)", status=503)
    if isinstance(exc, BackendDown):
        return ApiError(f"backend '{backend.name}' is unavailable", status=503)
    if isinstance(exc, TimeoutError):
        return ApiError(f"backend '{backend.name}' did not answer within {timeout:g}s", status=504)
    return ApiError(f"backend '{backend.name}' failed: {exc}", status=502)


def response_headers(resp: Response) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in resp.headers if k not in DROPPED]

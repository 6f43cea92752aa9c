"""The gateway's gunicorn worker: uvicorn's, pinned to uvloop and httptools (the fast event loop and HTTP
parser), without the proxy-header rewriting and Server header the gateway does not want, and with a
response's head and body leaving in one write."""
from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

from services.gateway.fastpath import Exchange


class CoalescingTransport:
    """A transport whose writes made in one turn of the event loop leave as one ``send``.

    uvicorn writes a response's status line and headers, then its body: two system calls, two TCP segments,
    and a reader that may wake twice per answer. Held writes are sent at the end of the loop's current turn
    (``call_soon``), so a streamed chunk is not delayed past the turn that wrote it. Everything else is the
    wrapped transport's."""

    __slots__ = ("_transport", "_held", "_loop")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport, self._held, self._loop = transport, None, loop

    def write(self, data: bytes) -> None:
        if self._held is None:
            self._held = [data]
            self._loop.call_soon(self._flush)
        else:
            self._held.append(data)

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def write_now(self, data: bytes) -> None:
        """Write at once, after anything held (the fast path's whole answers: nothing to wait for)."""
        if self._held is not None:
            self._flush()
        if not self._transport.is_closing():
            self._transport.write(data)

    def writelines(self, chunks) -> None:
        self.write(b"".join(chunks))

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name):
        return getattr(self._transport, name)


class GatewayProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol with coalesced writes, and the gateway's hot path (``fastpath.py``) taking the
    requests it can before uvicorn builds an ASGI cycle for them. uvicorn is pinned (pyproject.toml): this
    relies on its parser callbacks and on ``cycle`` / ``on_response_complete``, which tests cover."""

    fast = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))
        self.fast = getattr(self.app, "fast", None)  # None when CORS wraps the app, or the fast path is off

    def on_headers_complete(self) -> None:
        fast = self.fast
        if fast is not None and not self.expect_100_continue and (self.cycle is None or self.cycle.response_complete):
            exchange = fast.accept(self)
            if exchange is not None:
                self.cycle = exchange
                return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if type(self.cycle) is Exchange:
            self.cycle.on_body(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if type(self.cycle) is Exchange:
            self.cycle.on_message_complete()
        else:
            super().on_message_complete()

class GatewayWorker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "uvloop", "http": GatewayProtocol, "lifespan": "on",
                     "proxy_headers": False, "server_header": False}

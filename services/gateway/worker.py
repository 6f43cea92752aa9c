"""The gateway's gunicorn worker: uvicorn's, pinned to uvloop and httptools (the fast event loop and HTTP
parser), without the proxy-header rewriting and Server header the gateway does not want, and with a
response's head and body leaving in one write."""
from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker


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


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))


class GatewayWorker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "uvloop", "http": CoalescingHttpToolsProtocol, "lifespan": "on",
                     "proxy_headers": False, "server_header": False}

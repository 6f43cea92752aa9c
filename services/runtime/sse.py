"""Server-sent event streams written by one flusher thread per worker process, straight to gunicorn's socket.

Why: a stream whose request thread wakes on its own timer to write costs a thread wake-up, a context switch
and a turn at the GIL per write; at 16 streams per worker those wake-ups take CPU from the scheduler thread
that makes the tokens on a 2-core box (bench/results/vm/FINDINGS.md). Here a request thread sends its
response's head and first event through gunicorn as usual (time to first token is unchanged), then lends
the socket to the worker's flusher, which wakes once per interval and writes every lent stream's new events
with one non-blocking ``send`` each, framed as gunicorn frames chunks. The request thread sleeps until its
stream ends, takes the socket back, and ends the response through gunicorn (the last events and the
terminating chunk). A write the socket cannot take whole (a slow reader), or a failed one (a reader gone),
hands the socket back at once: the request thread sends the rest blocking, or ends the stream.

Only for plain HTTP/1.x under gunicorn (``gunicorn.socket`` in the WSGI environ); elsewhere (TLS, another
server, Flask's test client) ``socket_of`` says None and the request thread writes as before.
"""
from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from typing import Callable

from services.runtime import scheduling

log = logging.getLogger(__name__)


def socket_of(environ: dict) -> tuple[socket.socket, bool] | None:
    """-> (the client socket, whether gunicorn frames this response in chunks), or None where this response
    cannot be written to directly."""
    sock = environ.get("gunicorn.socket")
    protocol = environ.get("SERVER_PROTOCOL")
    if not isinstance(sock, socket.socket) or isinstance(sock, ssl.SSLSocket) \
            or protocol not in ("HTTP/1.1", "HTTP/1.0") or environ.get("REQUEST_METHOD") == "HEAD":
        return None
    return sock, protocol == "HTTP/1.1"  # gunicorn.http.wsgi.Response.is_chunked for a body with no length


class Lent:
    """One stream's socket while the flusher holds it. ``take()`` gives the bytes made since the last call
    (b"" for none); ``wake()`` tells the request thread the socket came back early (``backlog``/``error``)."""

    __slots__ = ("sock", "chunked", "take", "wake", "backlog", "error", "returned")

    def __init__(self, sock: socket.socket, chunked: bool, take: Callable[[], bytes], wake: Callable[[], None]):
        self.sock, self.chunked, self.take, self.wake = sock, chunked, take, wake
        self.backlog = b""  # framed bytes the socket did not take; the request thread sends them
        self.error: OSError | None = None  # the reader is gone
        self.returned = False

    def flush(self) -> None:
        data = self.take()
        if not data:
            return
        if self.chunked:
            data = b"%X\r\n%s\r\n" % (len(data), data)
        try:
            sent = self.sock.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.error, self.returned = exc, True
            self.wake()
            return
        if sent < len(data):  # the reader is behind: its request thread waits on the socket, not this thread
            self.backlog, self.returned = data[sent:], True
            self.wake()


class Flusher:
    """Writes every lent stream once per ``interval(streams)`` seconds, from one daemon thread."""

    def __init__(self, interval: Callable[[int], float], name: str = "sse-flusher"):
        self.interval = interval
        self.name = name
        self.cond = threading.Condition()
        self.lent: list[Lent] = []
        self.thread: threading.Thread | None = None

    def lend(self, lent: Lent) -> Lent:
        with self.cond:
            self.lent.append(lent)
            if self.thread is None or not self.thread.is_alive():  # first use in this (forked) process
                self.thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self.thread.start()
            self.cond.notify()
        return lent

    def give_back(self, lent: Lent) -> None:
        """After this the flusher no longer touches the socket (it waits for a round in progress)."""
        with self.cond:
            if lent in self.lent:
                self.lent.remove(lent)
            lent.returned = True

    def flush_all(self) -> int:
        """One round: every lent stream's new bytes; -> how many streams stay lent."""
        with self.cond:
            for lent in self.lent:
                try:
                    lent.flush()
                except Exception:  # noqa: BLE001 - one stream's bug must not stop the others' writes
                    log.exception("SSE flush failed")
                    lent.error, lent.returned = OSError("flush failed"), True
                    lent.wake()
            if any(lent.returned for lent in self.lent):
                self.lent = [lent for lent in self.lent if not lent.returned]
            return len(self.lent)

    def _loop(self) -> None:
        scheduling.compute_thread(self.name)
        due = time.monotonic()
        while True:
            with self.cond:
                while not self.lent:
                    self.cond.wait()
                    due = time.monotonic()
            n = self.flush_all()
            interval = self.interval(max(n, 1))
            due, now = due + interval, time.monotonic()
            if due <= now:  # a late round: the next one a whole interval on, not at once
                due = now + interval
            time.sleep(due - now)

"""gunicorn writes a response's status line and headers with one ``sendall`` and its body with another: two
system calls and two TCP segments per answer, and the reader (a client, or the gateway's event loop) wakes
twice. This holds the headers back and sends them with the first body bytes (or at the end of a response
without a body). Patched into gunicorn 27's ``Response`` (pinned in pyproject.toml); ``tests`` check that a
response arrives whole in one segment."""
from __future__ import annotations

from gunicorn import util
from gunicorn.http import wsgi

_sendfile = wsgi.Response.sendfile
_close = wsgi.Response.close


def send_headers(self) -> None:
    if self.headers_sent:
        return
    tosend = self.default_headers()
    tosend.extend(["%s: %s\r\n" % (k, v) for k, v in self.headers])
    self._held_head = util.to_bytestring("%s\r\n" % "".join(tosend), "latin-1")
    self.headers_sent = True


def flush_head(self) -> None:
    head = getattr(self, "_held_head", None)
    if head:
        self._held_head = None
        self.sock.sendall(head)


def emit_body(self, data: bytes) -> None:
    head = getattr(self, "_held_head", None)
    if head:
        self._held_head = None
        if self.chunked:
            data = b"%s%X\r\n%s\r\n" % (head, len(data), data)
        else:
            data = head + data
        self.sock.sendall(data)
        return
    util.write(self.sock, data, self.chunked)


def sendfile(self, respiter):
    if self.cfg.is_ssl or not self.can_sendfile() or not util.has_fileno(respiter.filelike):
        return False
    self.send_headers()
    flush_head(self)
    return _sendfile(self, respiter)


def close(self) -> None:
    if not self.headers_sent:
        self.send_headers()
    head = getattr(self, "_held_head", None)
    if head and self.chunked:  # no body at all: headers and the last chunk together
        self._held_head = None
        self.sock.sendall(head + b"0\r\n\r\n")
        return
    flush_head(self)
    _close(self)


def install() -> None:
    wsgi.Response.send_headers = send_headers
    wsgi.Response._emit_body = emit_body
    wsgi.Response.sendfile = sendfile
    wsgi.Response.close = close

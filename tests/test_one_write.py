"""gunicorn responses go out in one write: headers with the first body bytes (services.runtime.one_write),
checked on gunicorn's own Response class with a socket that records each sendall."""
from __future__ import annotations

import pytest
from gunicorn.http import wsgi

from services.runtime import one_write


class Sock:
    def __init__(self):
        self.writes: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))


class Req:
    version = (1, 1)

    def __init__(self, method="GET"):
        self.method = method

    def should_close(self):
        return False


class Cfg:
    is_ssl = False
    sendfile = False


@pytest.fixture(autouse=True)
def installed():
    one_write.install()


def respond(status, headers, body_parts, method="GET"):
    sock = Sock()
    r = wsgi.Response(Req(method), sock, Cfg())
    r.start_response(status, headers)
    for part in body_parts:
        r.write(part)
    r.close()
    return sock.writes


def test_fixed_length_response_is_one_write():
    writes = respond("200 OK", [("Content-Type", "application/json"), ("Content-Length", "11")], [b'{"ok":true}'])
    assert len(writes) == 1
    head, body = writes[0].split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 11" in head and body == b'{"ok":true}'


def test_chunked_stream_sends_head_with_first_chunk_then_one_write_per_chunk():
    writes = respond("200 OK", [("Content-Type", "text/event-stream")], [b"data: a\n\n", b"data: b\n\n"])
    assert len(writes) == 3  # head + chunk 1, chunk 2, last chunk
    assert b"Transfer-Encoding: chunked" in writes[0] and writes[0].endswith(b"\r\n\r\n9\r\ndata: a\n\n\r\n")
    assert writes[1] == b"9\r\ndata: b\n\n\r\n" and writes[2] == b"0\r\n\r\n"


def test_responses_without_body_still_send_their_head():
    writes = respond("204 No Content", [], [])
    assert len(writes) == 1 and writes[0].startswith(b"HTTP/1.1 204 No Content\r\n")
    head_only = respond("200 OK", [("Content-Length", "5")], [b"hello"], method="HEAD")
    assert len(head_only) == 1 and head_only[0].endswith(b"\r\n\r\n")
    empty_stream = respond("200 OK", [("Content-Type", "text/event-stream")], [])
    assert len(empty_stream) == 1 and empty_stream[0].endswith(b"\r\n\r\n0\r\n\r\n")

"""Server-sent events from the textgen service: every token once and in order through Flask's streaming response,
a row freed when its reader leaves, and HTTP framing on the real gunicorn service with HTTP/1.1 (chunks, then a
second request on the same connection) and HTTP/1.0."""
from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlsplit

import h11



def read_all(sock: socket.socket, timeout: float = 2.0) -> bytes:
    sock.settimeout(timeout)
    out = b""
    while True:
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            return out
        if not data:
            return out
        out += data
        sock.settimeout(0.05)


def sse_events(body: bytes) -> list[dict]:
    return [json.loads(line[6:]) for line in body.split(b"\n") if line.startswith(b"data: ")]


def test_textgen_stream_sends_every_token_in_order_and_frees_its_row_when_the_reader_leaves(clients):
    from services.runtime.generation import scheduler
    r = clients["textgen"].post("/api/generate", json={"prompt": "ROMEO:", "max_tokens": 600, "seed": 4, "stream": True},
                                buffered=False)
    writes = list(r.response)
    events = sse_events(b"".join(writes))
    tokens = [e for e in events if "token" in e]
    assert [e["index"] for e in tokens] == list(range(600)) and events[-1]["tokens"] == 600
    assert "".join(e["token"] for e in tokens) == events[-1]["text"]
    assert len(writes) < 600  # tokens made between two writes leave together

    # a reader that leaves: the response is closed, the request ends and the scheduler drops the row
    r = clients["textgen"].post("/api/generate", json={"prompt": "ROMEO:", "max_tokens": 4000, "seed": 4,
                                                       "stream": True}, buffered=False)
    it = iter(r.response)
    next(it)
    r.close()
    t0 = time.monotonic()
    while scheduler().active() and time.monotonic() - t0 < 5:
        time.sleep(0.01)
    assert scheduler().active() == 0


def h11_exchange(conn: h11.Connection, sock: socket.socket, host: str, body: bytes) -> tuple[h11.Response, bytes]:
    sock.sendall(conn.send(h11.Request(method="POST", target="/api/generate",
                                       headers=[("Host", host), ("Content-Type", "application/json"),
                                                ("Content-Length", str(len(body)))])))
    sock.sendall(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
    head, data = None, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(sock.recv(65536))
        elif isinstance(event, h11.Response):
            head = event
        elif isinstance(event, h11.Data):
            data += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            return head, data


def test_gunicorn_streams_keep_http_framing_for_http11_and_http10(stack):
    seed = 11
    u = urlsplit(stack.service_url["textgen"])
    body = json.dumps({"prompt": "ROMEO:\n", "max_tokens": 300, "seed": seed, "stream": True}).encode()
    with socket.create_connection((u.hostname, u.port), timeout=30) as sock:
        conn = h11.Connection(h11.CLIENT)  # a strict parser: a wrong chunk size fails here
        texts = []
        for _ in range(2):  # the same connection serves a second stream after the first one's last chunk
            head, data = h11_exchange(conn, sock, u.netloc, body)
            assert head.status_code == 200 and (b"transfer-encoding", b"chunked") in head.headers
            events = sse_events(data)
            tokens = [e["token"] for e in events if "token" in e]
            assert len(tokens) == 300 and "".join(tokens) == events[-1]["text"]
            texts.append(events[-1]["text"])
            conn.start_next_cycle()
        assert texts[0] == texts[1]  # same seed, same text
    with socket.create_connection((u.hostname, u.port), timeout=30) as sock:  # HTTP/1.0: raw body to the close
        sock.sendall(b"POST /api/generate HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))
        raw = read_all(sock, 30)
    head, data = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.0 200") and b"chunked" not in head.lower()
    events = sse_events(data)
    assert "".join(e["token"] for e in events if "token" in e) == events[-1]["text"] == texts[0]

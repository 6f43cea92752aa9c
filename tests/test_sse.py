"""The SSE flusher (services/runtime/sse.py): one thread per worker writes every stream's new events straight to
its socket. Checked on socket pairs, through the textgen app with a socket lent as gunicorn lends it, and on the
real gunicorn service with HTTP/1.1 (chunks, then a second request on the same connection) and HTTP/1.0."""
from __future__ import annotations

import json
import socket
import threading
import time
from urllib.parse import urlsplit

import h11

from services.runtime import sse


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


def test_lent_socket_gets_chunk_framed_events_and_comes_back_when_full_or_gone():
    a, b = socket.socketpair()
    woken = []
    pending = [b"data: x\n\n"]
    lent = sse.Lent(a, True, lambda: pending.pop() if pending else b"", lambda: woken.append(1))
    lent.flush()
    lent.flush()  # nothing new: no write
    assert read_all(b, 0.2) == b"9\r\ndata: x\n\n\r\n" and not lent.returned and not woken

    raw = sse.Lent(a, False, lambda: b"data: y\n\n", lambda: None)  # HTTP/1.0: no framing
    raw.flush()
    assert read_all(b, 0.2) == b"data: y\n\n"

    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    big = b"data: " + b"z" * 1_000_000 + b"\n\n"
    full = sse.Lent(a, True, lambda: big, lambda: woken.append(2))
    full.flush()  # the reader is not reading: the socket takes part, the rest comes back to the request thread
    assert full.returned and full.error is None and woken == [2] and 0 < len(full.backlog) < len(big)
    got = []
    reader = threading.Thread(target=lambda: got.append(read_all(b)))
    reader.start()
    a.sendall(full.backlog)  # what the request thread does with it
    reader.join()
    assert got[0] == b"%X\r\n%s\r\n" % (len(big), big)

    b.close()
    gone = sse.Lent(a, True, lambda: b"data: w\n\n", lambda: woken.append(3))
    gone.flush()
    assert gone.returned and isinstance(gone.error, OSError) and woken == [2, 3]
    a.close()


def test_flusher_writes_every_lent_stream_in_one_round_and_none_after_give_back():
    flusher = sse.Flusher(lambda n: 3600.0)
    pairs = [socket.socketpair() for _ in range(3)]
    with flusher.cond:  # the flusher's own thread waits for this lock: only the rounds below run
        lents = [flusher.lend(sse.Lent(a, True, lambda i=i: b"e%d" % i, lambda: None)) for i, (a, _) in enumerate(pairs)]
        assert flusher.flush_all() == 3
        assert [read_all(b, 0.2) for _, b in pairs] == [b"2\r\ne0\r\n", b"2\r\ne1\r\n", b"2\r\ne2\r\n"]
        flusher.give_back(lents[1])
        assert lents[1].returned and flusher.flush_all() == 2
        assert [read_all(b, 0.2) for _, b in pairs] == [b"2\r\ne0\r\n", b"", b"2\r\ne2\r\n"]
        for lent in lents:
            flusher.give_back(lent)
    for a, b in pairs:
        a.close()
        b.close()


def test_only_plain_http1_gunicorn_sockets_are_written_to_directly():
    import ssl
    a, b = socket.socketpair()
    env = {"gunicorn.socket": a, "SERVER_PROTOCOL": "HTTP/1.1", "REQUEST_METHOD": "POST"}
    assert sse.socket_of(env) == (a, True)
    assert sse.socket_of({**env, "SERVER_PROTOCOL": "HTTP/1.0"}) == (a, False)
    assert sse.socket_of({**env, "SERVER_PROTOCOL": "HTTP/2"}) is None
    assert sse.socket_of({**env, "REQUEST_METHOD": "HEAD"}) is None
    assert sse.socket_of({k: v for k, v in env.items() if k != "gunicorn.socket"}) is None  # another server
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).wrap_socket(socket.socket(), server_side=True,
                                                            do_handshake_on_connect=False)
    assert sse.socket_of({**env, "gunicorn.socket": tls}) is None
    for s in (a, b, tls):
        s.close()


def sse_events(body: bytes) -> list[dict]:
    return [json.loads(line[6:]) for line in body.split(b"\n") if line.startswith(b"data: ")]


def test_textgen_stream_goes_on_through_the_flusher_and_frees_its_row_when_the_reader_leaves(clients):
    from services.runtime.generation import scheduler
    a, b = socket.socketpair()
    # 600 tokens: the flusher gets rounds to write however busy the machine is
    r = clients["textgen"].post("/api/generate", json={"prompt": "ROMEO:", "max_tokens": 600, "seed": 4, "stream": True},
                                environ_overrides={"gunicorn.socket": a, "SERVER_PROTOCOL": "HTTP/1.1"},
                                buffered=False)
    it = iter(r.response)
    first_write = next(it)  # the first token(s): one event, or more when the scheduler ran ahead of this thread
    last_writes = b"".join(it)  # after the flusher's writes: the last events and done
    direct = read_all(b, 0.3)
    chunks, rest = [], direct
    while rest:  # the flusher's writes are whole chunks
        size, rest = rest.split(b"\r\n", 1)
        chunks.append(rest[: int(size, 16)])
        assert rest[int(size, 16): int(size, 16) + 2] == b"\r\n"
        rest = rest[int(size, 16) + 2:]
    first, last = sse_events(first_write), sse_events(last_writes)
    events = first + sse_events(b"".join(chunks)) + last
    tokens = [e for e in events if "token" in e]
    assert first and all("token" in e for e in first) and chunks, "the flusher wrote the middle of the stream"
    assert [e["index"] for e in tokens] == list(range(600)) and events[-1]["tokens"] == 600
    assert "".join(e["token"] for e in tokens) == events[-1]["text"]

    # a reader that leaves: the flusher's write fails, the request ends and the scheduler drops the row
    r = clients["textgen"].post("/api/generate", json={"prompt": "ROMEO:", "max_tokens": 4000, "seed": 4,
                                                       "stream": True},
                                environ_overrides={"gunicorn.socket": a, "SERVER_PROTOCOL": "HTTP/1.1"},
                                buffered=False)
    it = iter(r.response)
    next(it)
    b.close()
    list(it)  # returns once the flusher finds the reader gone, long before 4000 tokens
    r.close()
    t0 = time.monotonic()
    while scheduler().active() and time.monotonic() - t0 < 5:
        time.sleep(0.01)
    assert scheduler().active() == 0
    a.close()


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

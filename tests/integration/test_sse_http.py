"""Server-sent events on the real gunicorn service: HTTP/1.1 chunks (then a second request on the same
connection) and HTTP/1.0, read by a strict HTTP parser."""
from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import h11

from tests.conftest import read_all, sse_events


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


def test_triton_generate_stream_through_the_gateway_streams_as_it_goes(stack):
    """Triton's generate extension over the real gateway and gunicorn: events arrive while the text is made
    (several writes, read apart), and joined they are what /generate answers for the same seed."""
    import time

    import requests
    body = {"text_input": "ROMEO:\n", "parameters": {"max_tokens": 1000, "seed": 4}}
    whole = requests.post(f"{stack.url}/v2/models/textgen/generate", json=body, timeout=30)
    assert whole.status_code == 200 and whole.json()["model_name"] == "textgen"
    t0 = time.monotonic()
    with requests.post(f"{stack.url}/v2/models/textgen/generate_stream", json=body, stream=True,
                       timeout=30) as r:
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        arrivals, pieces = [], []
        for line in r.iter_lines(chunk_size=None):  # as the bytes arrive (the default waits for 512 of them)
            if line.startswith(b"data: "):
                arrivals.append(time.monotonic() - t0)
                pieces.append(json.loads(line[len(b"data: "):])["text_output"])
    assert "".join(pieces) == whole.json()["text_output"] and len(pieces) >= 3
    # separate writes, read as they came: a gateway that buffered the answer would deliver them at one instant
    assert arrivals[-1] - arrivals[0] > 0.005, arrivals

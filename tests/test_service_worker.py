"""The services' gunicorn worker (services.runtime.worker): a thread that lingers on a keep-alive connection
still answers every request in order, whether the next one comes at once, after the linger, or pipelined,
and a lingering thread does not keep a second connection waiting. Run under real gunicorn."""
from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
import requests

APP = '''
def app(environ, start_response):
    body = environ["PATH_INFO"].encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


@pytest.fixture()
def server(tmp_path):
    (tmp_path / "echo_app.py").write_text(APP)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-k", "services.runtime.worker.ThreadWorker",
                             "--threads", "1", "-w", "1", "-b", f"127.0.0.1:{port}", "--chdir", str(tmp_path),
                             "echo_app:app"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            requests.get(url + "/up", timeout=1)
            break
        except requests.ConnectionError:
            assert time.time() < deadline and proc.poll() is None, "gunicorn did not start"
            time.sleep(0.1)
    yield port
    proc.terminate()
    proc.wait(10)


def ask(sock, path: str) -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return read_answer(sock)


def read_answer(sock) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(4096)
    return body


def test_keep_alive_requests_at_once_after_the_linger_and_pipelined(server):
    with socket.create_connection(("127.0.0.1", server), timeout=5) as s:
        assert ask(s, "/one") == b"/one"
        assert ask(s, "/two") == b"/two"  # at once: the same thread, still lingering
        time.sleep(0.1)  # past the linger: back through the poller
        assert ask(s, "/three") == b"/three"
        s.sendall(b"GET /p1 HTTP/1.1\r\nHost: x\r\n\r\nGET /p2 HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = b""
        while answers.count(b"HTTP/1.1 200") < 2 or not answers.endswith(b"/p2"):
            answers += s.recv(4096)
        assert answers.index(b"/p1") < answers.index(b"/p2")


def test_a_lingering_thread_does_not_hold_up_another_connection(server):
    """One request thread: while it lingers on connection A, connection B's request is still answered at once
    (within the linger, not the keep-alive timeout)."""
    with socket.create_connection(("127.0.0.1", server), timeout=5) as a, \
            socket.create_connection(("127.0.0.1", server), timeout=5) as b:
        for i in range(20):
            assert ask(a, f"/a{i}") == f"/a{i}".encode()
            t0 = time.perf_counter()
            assert ask(b, f"/b{i}") == f"/b{i}".encode()
            assert time.perf_counter() - t0 < 1.0

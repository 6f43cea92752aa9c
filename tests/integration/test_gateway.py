"""Gateway protections on the real backends of the running stack: API keys, rate limits, upstream timeout,
unknown routes and models, CORS off by default; and the proxy against a scripted backend for what real services
rarely do (die, stall, pipelining). Each test runs its own gateway (the ASGI app on uvicorn with the worker's
settings, as gunicorn runs it) with the settings under test, called over HTTP."""
from __future__ import annotations

import socket
import threading
import time

import pytest


def test_api_keys(gateway, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# one per line\nfile-key-2\n")
    c = gateway(GATEWAY_API_KEYS="secret-1", GATEWAY_API_KEYS_FILE=str(keys))
    body = {"text": "A fine film."}
    r = c.post("/api/sentiment/predict", json=body)
    assert r.status_code == 401 and r.json()["field"] == "Authorization" and "Bearer" in r.headers["WWW-Authenticate"]
    assert c.post("/api/sentiment/predict", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    for key in ("secret-1", "file-key-2"):
        bearer = {"Authorization": f"Bearer {key}"}
        assert c.post("/api/sentiment/predict", json=body, headers=bearer).status_code == 200
    assert c.get("/v2/health/live").status_code == 200  # probes need no key
    assert c.get("/metrics").status_code == 200


def test_rate_limit_per_key(gateway):
    c = gateway(GATEWAY_RATE_LIMIT="3/minute")
    codes = [c.get("/v2/models/mnist", headers={"Authorization": "Bearer a"}).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    other = c.get("/v2/models/mnist", headers={"Authorization": "Bearer b"})
    assert other.status_code == 200
    r = c.get("/v2/models/mnist", headers={"Authorization": "Bearer a"})
    assert r.status_code == 429 and r.json()["error"]
    assert c.get("/v2/health/live").status_code == 200


def test_rate_limit_on_model_calls(gateway):
    c = gateway(GATEWAY_RATE_LIMIT="3/minute")
    body = {"text": "A fine film."}
    rs = [c.post("/api/sentiment/predict", json=body, headers={"Authorization": "Bearer a"}) for _ in range(4)]
    assert [r.status_code for r in rs] == [200, 200, 200, 429]
    assert [r.headers["X-RateLimit-Remaining"] for r in rs] == ["2", "1", "0", "0"]
    assert rs[3].json()["limit"] == "3/minute" and int(rs[3].headers["Retry-After"]) >= 1
    assert c.post("/api/sentiment/predict", json=body, headers={"Authorization": "Bearer b"}).status_code == 200


def test_upstream_timeout_is_504(gateway):
    c = gateway(GATEWAY_UPSTREAM_TIMEOUT="0.01")  # 1000 characters take the generator longer on any machine
    r = c.post("/api/generate", json={"prompt": "ROMEO:", "max_tokens": 1000, "seed": 1})
    assert r.status_code == 504 and "did not answer" in r.json()["error"]


def test_unknown_routes_and_models(gateway):
    c = gateway()
    assert c.post("/api/unknown/predict", json={}).status_code == 404
    r = c.post("/v2/models/resnet/infer", json={})
    assert r.status_code == 404 and r.json()["field"] == "model"
    # the gateway's own answers are framed by their length, like the backends' (not chunked)
    assert int(r.headers["Content-Length"]) == len(r.content) and "Transfer-Encoding" not in r.headers
    r = c.http.head(c.url + "/v2/models/mnist", timeout=30)
    assert r.status_code == 200 and r.content == b"" and int(r.headers["Content-Length"]) > 0
    assert c.get("/v1/models/..%2Fetc").status_code == 404
    r = c.get("/v2/models/mnist", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers


def test_cors_when_configured(gateway):
    c = gateway(GATEWAY_CORS_ORIGINS="http://localhost:3000")
    r = c.get("/v2/models/mnist", headers={"Origin": "http://localhost:3000"})
    assert r.headers.get("Access-Control-Allow-Origin") == "http://localhost:3000"


def test_binary_body_passes_through_untouched(gateway):
    import numpy as np
    import orjson
    c = gateway()
    x = np.zeros((1, 28, 28, 1), np.float32)
    head = orjson.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 28, 28, 1],
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "parameters": {"binary_data_output": True}})
    r = c.post("/v2/models/mnist/infer", data=head + x.tobytes(),
               headers={"Inference-Header-Content-Length": str(len(head))})
    assert r.status_code == 200
    n = int(r.headers["Inference-Header-Content-Length"])
    meta = orjson.loads(r.content[:n])
    assert sum(o["parameters"]["binary_data_size"] for o in meta["outputs"]) == len(r.content) - n


# ------------------------------------------------------------------------------------------------ proxy
class ScriptedBackend:
    """An HTTP/1.1 keep-alive backend whose answer depends on the path: ``ok`` echoes what it was sent,
    ``slow`` answers after 0.5 s, ``die`` drops a connection that already served a request without answering
    (a restarted worker's stale keep-alive connection) and answers on a fresh one, and ``cut`` does the same
    after sending the answer's headers and half its body (a worker killed mid-answer)."""

    def __init__(self):
        import http.server
        import json as _json

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                self.served = getattr(self, "served", 0) + 1
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path.endswith("/die") and self.served > 1:
                    self.close_connection = True
                    return
                if self.path.endswith("/slow"):
                    time.sleep(0.5)
                out = _json.dumps({"path": self.path, "body": body.decode(), "served": self.served,
                                   "request_id": self.headers.get("X-Request-ID"),
                                   "forwarded_for": self.headers.get("X-Forwarded-For")}).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Backend", "scripted")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                if self.path.endswith("/cut") and self.served > 1:
                    self.wfile.write(out[:len(out) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(out)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture()
def scripted(tmp_path):
    """The scripted backend, and a backend map (``GATEWAY_BACKENDS_FILE``) that sends it every path under
    ``/api/mnist/``."""
    b = ScriptedBackend()
    b.backends_file = tmp_path / "backends.yaml"
    b.backends_file.write_text(f"backends:\n  mnist:\n    url: {b.url}\n    models: [mnist]\n"
                               f"    routes: [/api/mnist/]\n")
    yield b
    b.close()


def test_proxy_headers_pipelining_and_close(gateway, scripted):
    c = gateway(GATEWAY_BACKENDS_FILE=str(scripted.backends_file), BACKEND_MNIST_URL=scripted.url)
    r = c.post("/api/mnist/ok", data=b"hello", headers={"X-Request-ID": "rid-1", "Content-Type": "text/plain"})
    got = r.json()
    assert r.status_code == 201 and r.headers["X-Backend"] == "scripted" and r.headers["X-Request-ID"] == "rid-1"
    assert got["body"] == "hello" and got["request_id"] == "rid-1" and got["forwarded_for"] == "127.0.0.1"
    assert "Server" not in r.headers
    # three requests in one write, the last asking to close: three answers in order, then the close
    reqs = b"".join(b"POST /api/mnist/ok HTTP/1.1\r\nHost: x\r\nX-Request-ID: p%d\r\nContent-Length: 2\r\n%s\r\nB%d"
                    % (i, b"Connection: close\r\n" if i == 2 else b"", i) for i in range(3))
    with socket.create_connection(("127.0.0.1", c.port), timeout=10) as s:
        s.sendall(reqs)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    answers = data.split(b"HTTP/1.1 ")[1:]
    assert len(answers) == 3 and all(a.startswith(b"201") for a in answers), data
    assert [b'"body": "B%d"' % i in a for i, a in enumerate(answers)] == [True] * 3
    assert b"connection: close" in answers[2].lower()


def test_proxy_retries_a_dead_connection_and_maps_failures(gateway, scripted):
    c = gateway(GATEWAY_BACKENDS_FILE=str(scripted.backends_file), BACKEND_MNIST_URL=scripted.url,
                GATEWAY_UPSTREAM_TIMEOUT="0.2")
    assert c.post("/api/mnist/ok", data=b"1").status_code == 201  # leaves a pooled connection
    r = c.post("/api/mnist/die", data=b"2")  # the pooled one dies unanswered: retried on a fresh one
    assert r.status_code == 201 and r.json()["served"] == 1
    assert c.post("/api/mnist/ok", data=b"2").status_code == 201
    r = c.post("/api/mnist/cut", data=b"2")  # dies mid-answer: asked once more, on a fresh connection
    assert r.status_code == 201 and r.json()["served"] == 1 and r.json()["body"] == "2"
    r = c.post("/api/mnist/slow", data=b"3")
    assert r.status_code == 504 and "did not answer" in r.json()["error"]
    assert c.post("/api/mnist/ok", data=b"4").status_code == 201  # still serving
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    down = gateway(BACKEND_MNIST_URL=closed)
    r = down.post("/api/mnist/ok", data=b"x")
    assert r.status_code == 503 and r.json()["error"] == "backend 'mnist' is unavailable"


def test_one_backend_down_leaves_the_gateway_and_the_other_models_up(gateway):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    c = gateway(BACKEND_TRANSLATION_URL=closed)
    assert c.get("/healthz").status_code == 200  # the gateway's own probe path (Kubernetes)
    assert c.post("/api/mnist/predict", json={"image": [[0] * 28] * 28}).status_code == 200
    r = c.post("/v2/models/translation_transformer/infer",
               json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["Hi."]}]})
    assert r.status_code == 503 and "model 'translation_transformer' is unavailable" in r.json()["error"]
    ready = c.get("/v2/health/ready")
    assert ready.status_code == 503 and ready.json()["backends"]["translation"]["ready"] is False
    assert ready.json()["backends"]["mnist"]["ready"] is True


def test_rate_limit_keys_on_forwarded_for_only_behind_a_trusted_proxy(gateway):
    body = {"text": "A fine film."}
    trusted = gateway(GATEWAY_RATE_LIMIT="2/minute", GATEWAY_TRUSTED_PROXIES="127.0.0.0/8")
    for client in ("203.0.113.1", "203.0.113.2"):  # two users behind the proxy: a bucket each
        codes = [trusted.post("/api/sentiment/predict", json=body,
                              headers={"X-Forwarded-For": f"{client}, 127.0.0.5"}).status_code for _ in range(3)]
        assert codes == [200, 200, 429], (client, codes)
    untrusted = gateway(GATEWAY_RATE_LIMIT="2/minute", GATEWAY_TRUSTED_PROXIES="")  # anyone can send the header
    codes = [untrusted.post("/api/sentiment/predict", json=body,
                            headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code for i in range(3)]
    assert codes == [200, 200, 429]


def test_gateway_routes_answer_json_errors_and_serve_their_files(gateway):
    c = gateway()
    r = c.get("/v2/repository/index")
    assert r.status_code == 405 and "use POST" in r.json()["error"] and r.headers["Allow"] == "POST"
    r = c.get("/nowhere")
    assert r.status_code == 404 and "/api/models" in r.json()["error"] and "X-Request-ID" in r.headers
    assert c.get("/favicon.ico").headers["Content-Type"] in ("image/vnd.microsoft.icon", "image/x-icon")
    assert c.get("/docs/swagger-ui.css").status_code == 200 and "<html>" in c.get("/docs").text
    assert c.get("/static/demo.js").status_code == 200 and c.get("/").text.startswith("<!doctype html>")
    assert c.get("/static/../app.py").status_code == 404  # nothing outside the static folder
    assert c.post("/v2/repository/index", json={}).status_code == 200

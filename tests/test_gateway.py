"""Gateway protections on the real backends of the running stack: API keys, rate limits, upstream timeout,
unknown routes and models, CORS off by default. Each test runs its own gateway (the ASGI app on uvicorn, as
gunicorn runs it) with the settings under test, called over HTTP."""
from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
import requests
import uvicorn

pytestmark = pytest.mark.integration


class LiveGateway:
    """The gateway app on uvicorn (uvloop, httptools) in a thread on a free port."""

    def __init__(self, app):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, loop="uvloop",
                                                    http="httptools", lifespan="on", log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 10
        while not self.server.started:
            assert time.time() < deadline, "gateway did not start"
            time.sleep(0.02)
        self.http = requests.Session()

    def get(self, path, **kw):
        return self.http.get(self.url + path, timeout=30, **kw)

    def post(self, path, **kw):
        return self.http.post(self.url + path, timeout=30, **kw)

    def close(self):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture()
def gateway(stack, monkeypatch):
    made = []

    def make(**env):
        for name, url in stack.service_url.items():
            monkeypatch.setenv(f"BACKEND_{name.upper()}_URL", url)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        from services.gateway.app import create_app
        made.append(LiveGateway(create_app()))
        return made[-1]
    yield make
    for g in made:
        g.close()


def test_api_keys(gateway, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# one per line\nfile-key-2\n")
    c = gateway(GATEWAY_API_KEYS="secret-1", GATEWAY_API_KEYS_FILE=str(keys))
    body = {"text": "A fine film."}
    r = c.post("/api/sentiment/predict", json=body)
    assert r.status_code == 401 and r.json()["field"] == "Authorization" and "Bearer" in r.headers["WWW-Authenticate"]
    assert c.post("/api/sentiment/predict", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    for key in ("secret-1", "file-key-2"):
        assert c.post("/api/sentiment/predict", json=body, headers={"Authorization": f"Bearer {key}"}).status_code == 200
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


def test_upstream_timeout_is_504(gateway):
    c = gateway(GATEWAY_UPSTREAM_TIMEOUT="0.05")
    r = c.post("/api/generate", json={"prompt": "ROMEO:", "max_tokens": 800, "seed": 1})
    assert r.status_code == 504 and "did not answer" in r.json()["error"]


def test_unknown_routes_and_models(gateway):
    c = gateway()
    assert c.post("/api/unknown/predict", json={}).status_code == 404
    r = c.post("/v2/models/resnet/infer", json={})
    assert r.status_code == 404 and r.json()["field"] == "model"
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


def test_circuit_breaker_states():
    import time as _t

    from services.gateway.upstream import BackendDown, CircuitBreaker, CircuitOpen
    b = CircuitBreaker(fail_max=2, reset_seconds=0.2)

    async def down():
        raise BackendDown("refused")

    async def ok():
        return "ok"
    for _ in range(2):
        with pytest.raises(BackendDown):
            asyncio.run(b.call(down))
    assert b.state == "open"
    with pytest.raises(CircuitOpen):
        asyncio.run(b.call(ok))
    _t.sleep(0.25)
    assert b.state == "half-open" and asyncio.run(b.call(ok)) == "ok" and b.state == "closed"
    # a failed trial opens it again at once
    for _ in range(2):
        with pytest.raises(BackendDown):
            asyncio.run(b.call(down))
    _t.sleep(0.25)
    with pytest.raises(BackendDown):
        asyncio.run(b.call(down))
    assert b.state == "open"

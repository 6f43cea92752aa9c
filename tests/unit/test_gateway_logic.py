"""The gateway's own logic with no stack and no socket: API keys, the rate limit's bucket behind proxies, route
matching, the checks' bypasses, bodies without a length, the circuit breaker and the HTTP-to-gRPC status table.
The ASGI app is called directly with hand-made messages."""
from __future__ import annotations

import asyncio
import hmac
import time

import grpc
import orjson
import pytest

from services.gateway import auth
from services.gateway.app import Gateway
from services.gateway.backends import Backend, Router
from services.gateway.grpc_status import grpc_status
from services.gateway.ratelimit import RateLimit
from services.gateway.upstream import BackendDown, CircuitBreaker, CircuitOpen
from services.settings import GatewaySettings
from tests.conftest import free_port_block


# ------------------------------------------------------------------------------------------------ API keys
@pytest.mark.parametrize("header, key", [
    ("Bearer k-1", "k-1"), ("bearer k-1", "k-1"), ("BEARER  k-1 ", "k-1"), ("Bearer ", None), ("Bearer", None),
    ("Basic azox", None), ("k-1", None), ("", None), (None, None)])
def test_the_presented_key_is_read_from_a_bearer_header_only(header, key):
    assert auth.presented_key(header) == key


def test_every_key_is_compared_in_constant_time_with_no_early_exit(monkeypatch):
    keys = auth.load_keys(GatewaySettings(api_keys="k-1, k-2,k-3"))
    assert len(keys) == 3 and all(len(k) == 32 for k in keys)  # digests: the same length whatever the key's
    compared, compare = [], hmac.compare_digest

    def counting(a, b):
        compared.append((len(a), len(b)))
        return compare(a, b)
    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    for presented, ok in (("k-1", True), ("k-3", True), ("nope", False), ("k-1-longer-than-any", False)):
        compared.clear()
        assert auth.valid(presented, keys) is ok
        assert compared == [(32, 32)] * 3, presented  # every key, digests of equal length, first match or not
    assert auth.valid(None, keys) is False


def test_keys_come_from_the_variable_and_the_file(tmp_path):
    f = tmp_path / "keys"
    f.write_text("# a comment\nfile-key\n\n")
    keys = auth.load_keys(GatewaySettings(api_keys="env-key", api_keys_file=f))
    assert auth.valid("env-key", keys) and auth.valid("file-key", keys) and not auth.valid("# a comment", keys)


# ------------------------------------------------------------------------------------------------ rate limit
@pytest.fixture
def limit():
    return RateLimit("3/minute", "memory://", trusted="10.0.0.0/8, fd00::/8")


@pytest.mark.parametrize("peer, forwarded, bucket", [
    ("203.0.113.9", None, "203.0.113.9"),                                 # no proxy
    ("203.0.113.9", b"198.51.100.1", "203.0.113.9"),                      # untrusted peer: its header is ignored
    ("10.0.0.2", b"198.51.100.1", "198.51.100.1"),                        # one trusted hop
    ("10.0.0.2", b"198.51.100.7, 198.51.100.1, 10.0.0.5", "198.51.100.1"),  # several hops: the last untrusted
    ("10.0.0.2", b"10.0.0.9, 10.0.0.5", "10.0.0.9"),                       # every hop trusted: the first one
    ("fd00::1", b"2001:db8::7", "2001:db8::7"),                           # IPv6 peer and client
    ("10.0.0.2", b"2001:db8::7, fd00::3", "2001:db8::7"),
    ("10.0.0.2", b"junk, 198.51.100.1", "198.51.100.1"),                  # junk the client wrote before the hop
    ("10.0.0.2", b"198.51.100.1, not-an-address", "10.0.0.2"),             # junk as a hop: the last sure address
    ("10.0.0.2", b"198.51.100.1,,", "10.0.0.2"),
    ("10.0.0.2", b"", "10.0.0.2"),
])
def test_the_rate_limit_counts_the_client_behind_trusted_proxies(limit, peer, forwarded, bucket):
    assert limit.bucket(None, (peer, 5000), forwarded) == bucket


def test_a_key_is_its_own_bucket_wherever_it_comes_from(limit):
    a = limit.bucket("k-1", ("203.0.113.9", 1), None)
    assert a == limit.bucket("k-1", ("10.0.0.2", 2), b"198.51.100.1") == auth.key_id("k-1")
    assert "k-1" not in a and a != limit.bucket("k-2", ("203.0.113.9", 1), None)
    assert limit.bucket(None, None, None) == ""  # no peer known (a unix socket): one shared bucket


def test_the_limit_allows_its_amount_then_refuses_with_retry_after(limit):
    async def hits():
        return [await limit.hit("203.0.113.9") for _ in range(4)] + [await limit.hit("203.0.113.10")]
    results = asyncio.run(hits())
    assert [ok for ok, _ in results] == [True, True, True, False, True]
    refused = dict(results[3][1])
    assert refused[b"x-ratelimit-remaining"] == b"0" and int(refused[b"retry-after"]) >= 1
    assert limit.exceeded().status == 429 and limit.exceeded().body()["limit"] == "3/minute"


# ------------------------------------------------------------------------------------------------ routing
def test_native_routes_match_by_prefix_the_longest_first():
    router = Router({"mnist": Backend("mnist", "http://m", ("mnist",), ("/api/mnist/",)),
                     "translation": Backend("translation", "http://t", ("translation_transformer",),
                                            ("/api/translate",)),
                     "special": Backend("special", "http://s", (), ("/api/mnist/special/",))})
    name = {p: (b.name if (b := router.native(p)) else None) for p in (
        "/api/mnist/predict", "/api/mnist", "/api/mnist/special/x", "/api/mnistx", "/api/translate",
        "/api/translate/", "/api/translatex", "/api/other")}
    assert name == {"/api/mnist/predict": "mnist", "/api/mnist": "mnist", "/api/mnist/special/x": "special",
                    "/api/mnistx": None, "/api/translate": "translation", "/api/translate/": None,
                    "/api/translatex": None, "/api/other": None}
    assert router.model("translation_transformer").name == "translation" and router.model("nosuch") is None


# ------------------------------------------------------------------------------------------------ the ASGI app
def call(app: Gateway, method: str, path: str, headers=(), chunks=(b"",), client=("203.0.113.9", 5000)):
    """-> (status, headers, body: parsed when JSON) of one request, its body sent in ``chunks``."""
    pending = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    out: dict = {"body": b""}

    async def receive():
        if pending:
            return pending.pop(0)
        await asyncio.Event().wait()  # the client stays connected

    async def send(message):
        if message["type"] == "http.response.start":
            out["status"], out["headers"] = message["status"], dict(message["headers"])
        else:
            out["body"] += message.get("body", b"")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "client": client, "server": None,
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers]}
    asyncio.run(app(scope, receive, send))
    is_json = out["headers"].get(b"content-type", b"").startswith(b"application/json")
    return out["status"], out["headers"], orjson.loads(out["body"]) if is_json else out["body"]


@pytest.fixture
def app():
    """The gateway with keys, a rate limit and a small body limit, its backends on a port nobody listens on."""
    dead = f"http://127.0.0.1:{free_port_block(1)}"
    settings = GatewaySettings(api_keys="k-1", rate_limit="100/minute", max_body_bytes=1000, grpc_tfs_port=0,
                               grpc_v2_port=0, backend_urls=tuple((n, dead) for n in (
                                   "mnist", "sentiment", "translation", "textgen", "gan")))
    return Gateway(settings)


def test_a_model_call_needs_the_key_and_counts_against_the_limit(app):
    status, headers, body = call(app, "POST", "/api/mnist/predict")
    assert status == 401 and body["field"] == "Authorization" and headers[b"www-authenticate"].startswith(b"Bearer")
    status, headers, body = call(app, "POST", "/api/mnist/predict", [("Authorization", "Bearer k-1")])
    assert status == 503 and "mnist" in body["error"]  # past the checks, to a backend that is down
    assert headers[b"x-ratelimit-limit"] == b"100"


@pytest.mark.parametrize("method, path", [("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/openapi.json"),
                                          ("GET", "/"), ("OPTIONS", "/api/mnist/predict")])
def test_public_paths_and_preflights_skip_the_key_and_the_limit(app, method, path):
    status, headers, _ = call(app, method, path)
    assert status != 401 and b"x-ratelimit-limit" not in headers, (status, path)


def test_a_body_without_a_length_is_refused_once_past_the_limit(app):
    key = [("Authorization", "Bearer k-1"), ("Transfer-Encoding", "chunked")]
    status, _, body = call(app, "POST", "/api/mnist/predict", key, chunks=[b"x" * 600, b"x" * 600, b"x"])
    assert status == 413 and body["limit"] == 1000 and body["field"] == "body"
    status, _, body = call(app, "POST", "/api/mnist/predict", key, chunks=[b"x" * 500, b"x" * 500])
    assert status == 503, body  # exactly the limit passes the check (and meets the dead backend)
    status, _, body = call(app, "POST", "/api/mnist/predict", [("Content-Length", "1001"), *key[:1]])
    assert status == 413 and "1001" in body["error"]  # announced: refused before a byte is read


# ------------------------------------------------------------------------------------------------ breaker
def circuit_gauge(backend: str) -> float | None:
    from prometheus_client import REGISTRY
    return REGISTRY.get_sample_value("gateway_backend_circuit_open", {"backend": backend})


def test_circuit_breaker_states():
    b = CircuitBreaker(fail_max=2, reset_seconds=0.2, name="breaker-test")

    async def down():
        raise BackendDown("refused")

    async def ok():
        return "ok"
    for _ in range(2):
        assert b.state == "closed"
        with pytest.raises(BackendDown):
            asyncio.run(b.call(down))
    assert b.state == "open" and circuit_gauge("breaker-test") == 1  # what the CircuitOpen alert reads
    with pytest.raises(CircuitOpen):  # open: the backend is not even tried
        asyncio.run(b.call(ok))
    time.sleep(0.3)
    assert b.state == "half-open" and asyncio.run(b.call(ok)) == "ok" and b.state == "closed"
    assert circuit_gauge("breaker-test") == 0
    for _ in range(2):
        with pytest.raises(BackendDown):
            asyncio.run(b.call(down))
    time.sleep(0.3)
    assert b.state == "half-open"
    with pytest.raises(BackendDown):  # a failed trial opens it again at once
        asyncio.run(b.call(down))
    assert b.state == "open"


# ------------------------------------------------------------------------------------------------ gRPC codes
C = grpc.StatusCode


@pytest.mark.parametrize("status, code", [
    (400, C.INVALID_ARGUMENT), (401, C.UNAUTHENTICATED), (403, C.PERMISSION_DENIED), (404, C.NOT_FOUND),
    (405, C.UNIMPLEMENTED), (413, C.RESOURCE_EXHAUSTED), (415, C.INVALID_ARGUMENT), (429, C.RESOURCE_EXHAUSTED),
    (499, C.CANCELLED), (502, C.UNAVAILABLE), (503, C.UNAVAILABLE), (504, C.DEADLINE_EXCEEDED),
    (500, C.INTERNAL), (418, C.INTERNAL)])
def test_every_gateway_status_has_its_grpc_code_and_keeps_the_message(status, code):
    assert grpc_status(status, orjson.dumps({"error": f"why {status}", "field": "x"})) == (code, f"why {status}")
    assert grpc_status(status, orjson.dumps({"error": {"message": "openai-shaped"}})) == (code, "openai-shaped")
    assert grpc_status(status, b"<html>not json</html>") == (code, f"HTTP {status}")

"""Gateway metrics: requests by route, model and status; end-to-end and upstream latency."""
from prometheus_client import Counter, Histogram

from services.runtime.metrics import LATENCY_BUCKETS

REQUESTS = Counter("gateway_requests_total", "Requests through the gateway", ["route", "model", "status"])
LATENCY = Histogram("gateway_request_seconds", "End-to-end latency at the gateway", ["route", "model"],
                    buckets=LATENCY_BUCKETS)
UPSTREAM_LATENCY = Histogram("gateway_upstream_seconds", "Time waiting on a backend", ["backend"],
                             buckets=LATENCY_BUCKETS)

_children: dict = {}


def observe(route: str, model: str, status: int, seconds: float) -> None:
    """Count and time one request; the labelled children are looked up once per label set (``labels()``
    takes a lock and builds a key on every call)."""
    key = (route, model, status)
    pair = _children.get(key)
    if pair is None:
        pair = _children[key] = (REQUESTS.labels(route, model, str(status)), LATENCY.labels(route, model))
    pair[0].inc()
    pair[1].observe(seconds)


_upstream: dict = {}


def observe_upstream(backend: str, seconds: float) -> None:
    child = _upstream.get(backend)
    if child is None:
        child = _upstream[backend] = UPSTREAM_LATENCY.labels(backend)
    child.observe(seconds)

"""Gateway metrics: requests by route, model and status; end-to-end and upstream latency."""
from prometheus_client import Counter, Histogram

from services.runtime.metrics import LATENCY_BUCKETS, child

REQUESTS = Counter("gateway_requests_total", "Requests through the gateway", ["route", "model", "status"])
LATENCY = Histogram("gateway_request_seconds", "End-to-end latency at the gateway", ["route", "model"],
                    buckets=LATENCY_BUCKETS)
UPSTREAM_LATENCY = Histogram("gateway_upstream_seconds", "Time waiting on a backend", ["backend"],
                             buckets=LATENCY_BUCKETS)


def observe(route: str, model: str, status: int, seconds: float) -> None:
    """Count and time one request."""
    child(REQUESTS, route, model, str(status)).inc()
    child(LATENCY, route, model).observe(seconds)


def observe_upstream(backend: str, seconds: float) -> None:
    child(UPSTREAM_LATENCY, backend).observe(seconds)

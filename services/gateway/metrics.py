"""Gateway metrics: requests by route, model and status; end-to-end and upstream latency; and the access log
line, written where a request is counted."""
import logging

from prometheus_client import Counter, Gauge, Histogram

from services.runtime.logs import QUIET_PATHS
from services.runtime.metrics import LATENCY_BUCKETS, child

REQUESTS = Counter("gateway_requests_total", "Requests through the gateway", ["route", "model", "status"])
LATENCY = Histogram("gateway_request_seconds", "End-to-end latency at the gateway", ["route", "model"],
                    buckets=LATENCY_BUCKETS)
UPSTREAM_LATENCY = Histogram("gateway_upstream_seconds", "Time waiting on a backend", ["backend"],
                             buckets=LATENCY_BUCKETS)
CIRCUIT_OPEN = Gauge("gateway_backend_circuit_open", "1 while a backend's circuit is not closed (open, or waiting "
                     "for its trial call): calls to it fail fast", ["backend"])


def observe(route: str, model: str, status: int, seconds: float) -> None:
    """Count and time one request."""
    child(REQUESTS, route, model, str(status)).inc()
    child(LATENCY, route, model).observe(seconds)


access = logging.getLogger("access")


def record(method: str, path: str, status: int, seconds: float, route: str, model: str, request_id: str) -> None:
    """Count, time and log one finished request."""
    observe(route, model if status != 404 else "", status, seconds)  # a 404's model is whatever was typed
    if path not in QUIET_PATHS and access.isEnabledFor(logging.INFO):
        access.info("request", extra={"method": method, "path": path, "status": status,
                                      "ms": round(seconds * 1000, 2), "route": route, "model": model,
                                      "request_id": request_id})


def observe_upstream(backend: str, seconds: float) -> None:
    child(UPSTREAM_LATENCY, backend).observe(seconds)

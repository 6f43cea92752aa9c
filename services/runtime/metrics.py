"""Prometheus metrics shared by every service (and the gateway's own, in its package).

Several gunicorn workers share counters through ``PROMETHEUS_MULTIPROC_DIR`` when it is set."""
from __future__ import annotations

from services.settings import ProcessSettings

_SHARED = ProcessSettings.from_env().metrics_dir  # the workers' shared files (prometheus_client reads it too)
if _SHARED:  # must exist before the first metric is created
    _SHARED.mkdir(parents=True, exist_ok=True)

from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

REQUESTS = Counter("model_requests_total", "Requests by model, version, protocol and status",
                   ["model", "version", "protocol", "status"])
# by outcome (success: status below 400) as well, for Triton's statistics (services/runtime/statistics.py)
REQUEST_LATENCY = Histogram("model_request_seconds", "Request latency", ["model", "version", "protocol", "outcome"],
                            buckets=LATENCY_BUCKETS)
LAST_REQUEST = Gauge("model_last_request_timestamp_seconds", "When the model last answered an inference request",
                     ["model", "version"], multiprocess_mode="max")
QUEUE_TIME = Histogram("model_queue_seconds", "Time a request waited in the batcher", ["model", "version", "graph"],
                       buckets=LATENCY_BUCKETS)
COMPUTE_TIME = Histogram("model_compute_seconds", "ONNX Runtime call time per batch", ["model", "version", "graph"],
                         buckets=LATENCY_BUCKETS)
BATCH_SIZE = Histogram("model_batch_size", "Rows per ONNX Runtime call", ["model", "version", "graph"],
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
# every exact batch size, with its compute time: Triton's batch_stats
BATCHES = Counter("model_batches_total", "ONNX Runtime calls by rows in the call",
                  ["model", "version", "graph", "size"])
BATCH_SECONDS = Counter("model_batch_seconds_total", "ONNX Runtime call time by rows in the call",
                        ["model", "version", "graph", "size"])
QUEUE_DEPTH = Gauge("model_queue_depth", "Rows waiting in the batcher", ["model", "version", "graph"],
                    multiprocess_mode="livesum")
QUEUE_LIMIT = Gauge("model_queue_limit", "Rows a batcher holds before it answers 429 (MAX_QUEUE_SIZE)",
                    ["model", "version", "graph"], multiprocess_mode="max")
LOADED = Gauge("model_loaded", "1 when a model version is loaded and serving", ["model", "version", "device"],
               multiprocess_mode="max")
LOAD_FAILURES = Counter("model_load_failures_total", "Versions refused at load (bad manifest or checksum)",
                        ["model", "version"])
# the models service's memory budget (services/runtime/budget.py); each worker keeps to its part of it
LOADS = Counter("model_loads_total", "Versions loaded on demand or at start, under the memory budget", ["model"])
EVICTIONS = Counter("model_evictions_total", "Versions unloaded to make room under the memory budget", ["model"])
COLD_START = Histogram("model_cold_start_seconds", "A request's wait for its model to load",
                       buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
MODEL_BYTES = Gauge("model_memory_bytes", "Memory a loaded version added at its load", ["model", "version"],
                    multiprocess_mode="livesum")
BUDGET_BYTES = Gauge("model_memory_budget_bytes", "The memory budget (MODEL_MEMORY_BUDGET)",
                     multiprocess_mode="livesum")
BUDGET_IN_USE = Gauge("model_memory_in_use_bytes", "Bytes charged to the memory budget: loaded, loading and "
                      "closing versions", multiprocess_mode="livesum")
ACTIVE_SEQUENCES = Gauge("model_decoder_active_sequences", "Decoding jobs in the decoder's batch",
                         multiprocess_mode="livesum")

_children: dict = {}


def child(metric, *values):
    """``metric.labels(*values)``, looked up once per label set: ``labels()`` takes a lock and builds its key on
    every call, which adds up on paths run per request or per decoder step."""
    key = (metric, values)
    c = _children.get(key)
    if c is None:
        c = _children[key] = metric.labels(*values)
    return c


def registry():
    """Every metric of this service: summed over its workers' files when there are several."""
    if _SHARED:
        from prometheus_client import multiprocess
        summed = CollectorRegistry()
        multiprocess.MultiProcessCollector(summed)
        return summed
    return REGISTRY


def exposition() -> tuple[bytes, str]:
    return generate_latest(registry()), CONTENT_TYPE_LATEST


def observe_batch(model: str, version: str, graph: str, rows: int, seconds: float) -> None:
    """One ONNX Runtime call of a dynamic batcher (decoder steps: generation.StepMetrics)."""
    child(COMPUTE_TIME, model, version, graph).observe(seconds)
    child(BATCH_SIZE, model, version, graph).observe(rows)
    child(BATCHES, model, version, graph, str(rows)).inc()
    child(BATCH_SECONDS, model, version, graph, str(rows)).inc(seconds)

"""Triton's statistics extension (``GET /v2/models[/NAME[/versions/V]]/stats``), read from the service's
Prometheus metrics, so every worker's requests count.

success / fail: inference requests and their time, by outcome; queue: time waiting in a dynamic batcher;
compute_infer: ONNX Runtime calls (a batch, or one decoder step for every sequence in flight) and their time;
batch_stats: those calls by the rows in them. Inputs and outputs are converted inside the request's time, not
measured apart, so compute_input and compute_output stay at zero, as does the cache, which this server has not.
"""
from __future__ import annotations

from collections import defaultdict

from services.runtime import metrics

ZERO = {"count": 0, "ns": 0}


def _duration(count: float, seconds: float) -> dict:
    return {"count": int(count), "ns": int(seconds * 1e9)}


def model_stats(versions: list[tuple[str, str]]) -> dict:
    """``versions``: (model, version) pairs to report, in order -> Triton's ``{"model_stats": [...]}``."""
    sums: dict[tuple, float] = defaultdict(float)
    batches: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0]))
    for family in metrics.registry().collect():
        for sample in family.samples:
            labels = sample.labels
            key = (labels.get("model"), labels.get("version"))
            name = sample.name
            if name in ("model_request_seconds_count", "model_request_seconds_sum"):
                sums[key + (labels["outcome"], name.rsplit("_", 1)[1])] += sample.value
            elif name in ("model_queue_seconds_count", "model_queue_seconds_sum"):
                sums[key + ("queue", name.rsplit("_", 1)[1])] += sample.value
            elif name == "model_last_request_timestamp_seconds":
                sums[key + ("last",)] = max(sums[key + ("last",)], sample.value)
            elif name == "model_batches_total":  # every ONNX Runtime call: batches and decoder steps
                batches[key][int(labels["size"])][0] += sample.value
                sums[key + ("compute", "count")] += sample.value
            elif name == "model_batch_seconds_total":
                batches[key][int(labels["size"])][1] += sample.value
                sums[key + ("compute", "sum")] += sample.value
    out = []
    for model, version in versions:
        key = (model, version)

        def timed(kind: str) -> dict:
            return _duration(sums[key + (kind, "count")], sums[key + (kind, "sum")])  # noqa: B023
        success, fail = timed("success"), timed("fail")
        compute = timed("compute")
        out.append({
            "name": model, "version": version, "last_inference": int(sums[key + ("last",)] * 1000),
            "inference_count": success["count"], "execution_count": compute["count"],
            "inference_stats": {"success": success, "fail": fail, "queue": timed("queue"),
                                "compute_input": ZERO, "compute_infer": compute, "compute_output": ZERO,
                                "cache_hit": ZERO, "cache_miss": ZERO},
            "batch_stats": [{"batch_size": size, "compute_input": ZERO, "compute_output": ZERO,
                             "compute_infer": _duration(count, seconds)}
                            for size, (count, seconds) in sorted(batches[key].items())],
            "memory_usage": []})
    return {"model_stats": out}

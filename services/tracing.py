"""OpenTelemetry traces, configured by the standard variables only (``OTEL_TRACES_EXPORTER``,
``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_PROTOCOL``, ``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER``,
``OTEL_TRACES_SAMPLER_ARG``, and the SDK's own ``OTEL_BSP_*``), which the OpenTelemetry SDK reads itself.

Off unless ``OTEL_TRACES_EXPORTER`` names ``otlp``: then the API's tracer is a no-op, and a request costs a
function call or two. On, a W3C ``traceparent`` from the client is honoured; the gateway passes its own on to
the service. Spans: the gateway's request and its upstream call, the service's request, each request's wait in
a batcher and its batch's run (with the batch size), and one span per decoded request (steps and tokens).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext

from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind

tracer = trace.get_tracer("keras-onnx-serving")
enabled = False  # set by setup(); off, the callers skip every span


def setup(default_service_name: str) -> None:
    """Install the SDK's tracer provider when traces are on (once per process)."""
    global enabled
    exporters = os.environ.get("OTEL_TRACES_EXPORTER", "none")  # the SDK's own variable
    if enabled or "otlp" not in exporters.split(","):
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    elif protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # type: ignore[assignment]
    else:
        raise SystemExit(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use http/protobuf (the default) or grpc")
    # the sampler (OTEL_TRACES_SAMPLER[_ARG]) and the endpoint are read from the environment by the SDK
    provider = TracerProvider(resource=Resource.create({"service.name": default_service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    enabled = True


def span(name: str, kind: SpanKind = SpanKind.INTERNAL, headers: Mapping[str, str] | None = None,
         attributes: dict | None = None) -> AbstractContextManager:
    """A span around a block, the current one inside it (``headers``: continue the caller's trace); a null
    context while traces are off."""
    if not enabled:
        return nullcontext()
    ctx = extract(headers) if headers is not None else None
    return tracer.start_as_current_span(name, context=ctx, kind=kind, attributes=attributes)


def extract(headers: Mapping[str, str]) -> context.Context:
    """The caller's trace context (``traceparent``), or an empty one."""
    return propagate.extract(headers)


def inject() -> list[tuple[bytes, bytes]]:
    """The current span's ``traceparent`` (and ``tracestate``) as headers for an upstream call."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(k.encode(), v.encode()) for k, v in carrier.items()]


def record_spans(spans: Iterable[tuple[str, int, int, dict]]) -> None:
    """Spans already timed elsewhere (``(name, start_ns, end_ns, attributes)``), children of the current span."""
    if not trace.get_current_span().get_span_context().is_valid:
        return
    for name, start, end, attributes in spans:
        tracer.start_span(name, start_time=start, attributes=attributes).end(end_time=end)


def trace_id() -> str | None:
    """The current trace's id (hex), for log lines; None outside a sampled trace."""
    if not enabled:
        return None
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None

"""Traces across every hop: a stack started with ``OTEL_TRACES_EXPORTER=otlp`` exports to a real OTLP/HTTP
receiver (this test's, decoding each export with ``opentelemetry-proto``). One v2 request sent with a W3C
``traceparent`` yields the gateway's, its upstream call's, the service's, and the batcher's spans in that trace,
each the child of the one before; the service's log lines carry the trace id."""
from __future__ import annotations

import http.server
import secrets
import threading
import time

import numpy as np
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conftest import Stack


class Receiver:
    """An OTLP/HTTP trace endpoint on a free port: every span it is sent, with its service's name."""

    def __init__(self):
        spans = self.spans = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                export = ExportTraceServiceRequest.FromString(body)
                for rs in export.resource_spans:
                    service = next(a.value.string_value for a in rs.resource.attributes if a.key == "service.name")
                    for scope in rs.scope_spans:
                        spans.extend((service, s) for s in scope.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_one_request_is_one_trace_from_the_gateway_to_the_batch():
    receiver = Receiver()
    stack = Stack({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                   "OTEL_BSP_SCHEDULE_DELAY": "200"})
    try:
        stack.wait_ready()
        trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
        body = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 28, 28, 1],
                            "data": np.zeros(784).tolist()}]}
        r = requests.post(stack.url + "/v2/models/mnist/infer", json=body, timeout=30,
                          headers={"traceparent": f"00-{trace_id}-{parent_id}-01"})
        assert r.status_code == 200
        wanted = {"gateway request", "upstream mnist", "mnist POST /v2/models/mnist/infer", "batcher queue",
                  "batch run"}
        deadline = time.time() + 30
        while True:
            ours = {s.name: (service, s) for service, s in receiver.spans if s.trace_id.hex() == trace_id}
            if wanted <= set(ours):
                break
            assert time.time() < deadline, f"spans of the trace: {sorted(ours)}"
            time.sleep(0.2)
        log = stack.workdir.with_suffix(".log").read_text()
    finally:
        stack.stop()
        receiver.server.shutdown()

    def parent(name):
        return ours[name][1].parent_span_id.hex()

    def span_id(name):
        return ours[name][1].span_id.hex()
    assert ours["gateway request"][0] == "gateway" and parent("gateway request") == parent_id
    assert parent("upstream mnist") == span_id("gateway request")
    assert ours["mnist POST /v2/models/mnist/infer"][0] == "mnist"
    assert parent("mnist POST /v2/models/mnist/infer") == span_id("upstream mnist")
    for name in ("batcher queue", "batch run"):
        assert parent(name) == span_id("mnist POST /v2/models/mnist/infer")
    run = {a.key: a.value for a in ours["batch run"][1].attributes}
    assert run["batch.size"].int_value == 1 and run["model"].string_value == "mnist"
    assert f'"trace_id":"{trace_id}"' in log  # the service's access log line

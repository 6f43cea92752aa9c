"""``python -m services NAME``: run one service (or the gateway) under gunicorn with its default port.

NAME: mnist (9001), sentiment (9002), translation (9003), textgen (9004), gan (9005), gateway (8080).
The port comes from PORT (or GATEWAY_PORT for the gateway) when set.
"""
from __future__ import annotations

import os
import sys

from services import catalog

SERVICES = {**{s.name: s.port for s in catalog.SERVICES}, "gateway": catalog.GATEWAY_PORT}  # name -> port
# request threads per worker where the default (16) is too few: a stream holds its thread for its whole life,
# and connections past the threads of the worker the kernel gave them to wait for a whole generation
THREADS = {"textgen": 64}
# ONNX Runtime threads per worker where the default (2) costs more than it gives: a text-generation step is a
# [streams, 384] LSTM cell, too small to split well; with one thread per worker, the service's two workers
# use two threads on two CPUs instead of four, and 32 streams get about 9% more tokens/s per CPU (one stream
# alone is about 7% slower; bench/results/vm/FINDINGS.md)
ORT_THREADS = {"textgen": 1}
# gunicorn workers where one per CPU is too many: the gateway's event loop proxies thousands of requests a
# second in one process, and a second one would only take CPU from the model services beside it
WORKERS = {"gateway": 1}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SERVICES:
        print(f"usage: python -m services {{{','.join(SERVICES)}}} [gunicorn options]", file=sys.stderr)
        return 2
    name, extra = argv[0], argv[1:]
    port = os.environ.get("GATEWAY_PORT" if name == "gateway" else "PORT") or str(SERVICES[name])
    os.environ["PORT"] = port
    from services.ports import ensure_free
    ensure_free(os.environ.get("HOST", "0.0.0.0"), int(port))
    if name == "gateway":  # and its gRPC ports
        from services.settings import GatewaySettings
        grpc = GatewaySettings.from_env()
        for grpc_port in (grpc.grpc_tfs_port, grpc.grpc_v2_port):
            if grpc_port:
                ensure_free(os.environ.get("HOST", "0.0.0.0"), grpc_port)
    if name in THREADS:
        os.environ.setdefault("GUNICORN_THREADS", str(THREADS[name]))
    if name in ORT_THREADS:
        os.environ.setdefault("ORT_INTRA_OP_THREADS", str(ORT_THREADS[name]))
    if name in WORKERS:
        os.environ.setdefault("WEB_CONCURRENCY", str(WORKERS[name]))
    worker = ["-k", "services.gateway.worker.GatewayWorker"] if name == "gateway" else []
    args = ["gunicorn", "-c", "python:services.runtime.gunicorn_conf", "--name", name, *worker, *extra,
            f"services.{name}.app:create_app()"]
    os.execvp(sys.executable, [sys.executable, "-m", *args])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

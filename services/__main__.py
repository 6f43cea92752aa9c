"""``python -m services NAME``: run one service (or the gateway) under gunicorn with its default port.

NAME: a service of the catalog (``services/catalog.py``: mnist on 9001 ... models, the imported models, on 9006),
or gateway (8080).
The port comes from PORT (or GATEWAY_PORT for the gateway) when set.
"""
from __future__ import annotations

import os
import sys

from services import catalog
from services.settings import SERVICE_DEFAULTS, GatewaySettings, ProcessSettings

DEFAULT_PORTS = {**{s.name: s.port for s in catalog.SERVICES}, "gateway": catalog.GATEWAY_PORT}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in DEFAULT_PORTS:
        print(f"usage: python -m services {{{','.join(DEFAULT_PORTS)}}} [gunicorn options]", file=sys.stderr)
        return 2
    name, extra = argv[0], argv[1:]
    for variable, value in SERVICE_DEFAULTS.get(name, {}).items():
        os.environ.setdefault(variable, value)  # for gunicorn_conf and the app, which read their settings
    process = ProcessSettings.from_env()
    port = (process.gateway_port if name == "gateway" else process.port) or DEFAULT_PORTS[name]
    os.environ["PORT"] = str(port)
    from services.ports import ensure_free
    host = process.bind_host
    ensure_free(host, port)
    if name == "gateway":  # and its gRPC ports
        grpc = GatewaySettings.from_env()
        for grpc_port in (grpc.grpc_tfs_port, grpc.grpc_v2_port):
            if grpc_port:
                ensure_free(host, grpc_port)
    worker = ["-k", "services.gateway.worker.GatewayWorker"] if name == "gateway" else []
    args = ["gunicorn", "-c", "python:services.runtime.gunicorn_conf", "--name", name, *worker, *extra,
            catalog.BY_NAME[name].app if name in catalog.BY_NAME else "services.gateway.app:create_app()"]
    os.execvp(sys.executable, [sys.executable, "-m", *args])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

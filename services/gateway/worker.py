"""The gateway's gunicorn worker: uvicorn's, on uvloop and httptools (the fast event loop and HTTP parser),
without the proxy-header rewriting and Server header the gateway does not want. ``CONFIG_KWARGS`` is
uvicorn-worker's documented way to set uvicorn's options."""
from __future__ import annotations

from uvicorn_worker import UvicornWorker


class GatewayWorker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "uvloop", "http": "httptools", "lifespan": "on",
                     "proxy_headers": False, "server_header": False}

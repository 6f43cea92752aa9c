"""Structured JSON logs on stderr, each line carrying the request id of the request being served."""
from __future__ import annotations

import logging
import sys
import time

import orjson

from services import tracing

# probes and scrapes: counted in the metrics, not written to the access log (the services' and the gateway's)
QUIET_PATHS = ("/metrics", "/v2/health/live", "/v2/health/ready")
_STD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        try:
            from flask import g, has_request_context
            if has_request_context() and getattr(g, "request_id", None):
                out["request_id"] = g.request_id
        except ImportError:
            pass
        for k, v in record.__dict__.items():
            if k not in _STD and not k.startswith("_"):
                out[k] = v
        trace_id = tracing.trace_id()
        if trace_id:
            out["trace_id"] = trace_id
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def setup(level: str = "info") -> None:
    root = logging.getLogger()
    if getattr(root, "_json_configured", False):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root._json_configured = True  # type: ignore[attr-defined]
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

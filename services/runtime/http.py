"""HTTP helpers shared by every service: fast JSON responses (orjson), server-sent event streams and lenient JSON
request bodies."""
from __future__ import annotations

import logging

import orjson
from flask import Response, g, request, stream_with_context

from services.runtime import codec
from services.runtime.logs import QUIET_PATHS
from services.runtime.request_ids import request_id


def json_response(obj, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), status, headers=headers,
                    mimetype="application/json")


def event_stream(events) -> Response:
    """Server-sent events from a generator of bytes, written by the request's thread as they come; no proxy
    buffering (nginx's ``X-Accel-Buffering``)."""
    return Response(stream_with_context(events), 200, mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def json_body(optional: bool = False) -> dict:
    """The request body as a JSON object, whatever the Content-Type (curl -d sends form-urlencoded); ``optional``:
    an empty body is ``{}``."""
    raw = codec.decompress(request.get_data(cache=False), request.headers.get("Content-Encoding"))
    return {} if optional and not raw.strip() else codec.parse_json(raw)


_access = logging.getLogger("access")


def assign_request_id() -> str:
    """Keep the caller's X-Request-ID or make one (``request_ids``: the gateway's rule); stored in ``g``."""
    sent = request.headers.get("X-Request-ID", "")
    g.request_id = request_id(sent.encode("latin-1", "replace")).decode("latin-1")
    return g.request_id


def log_access(resp: Response, seconds: float, **fields) -> None:
    """One JSON access-log line per request (probes and scrapes excepted); echoes the request id."""
    resp.headers["X-Request-ID"] = g.get("request_id", "")
    if request.path not in QUIET_PATHS:
        _access.info("request", extra={"method": request.method, "path": request.path,
                                       "status": resp.status_code, "ms": round(seconds * 1000, 2), **fields})

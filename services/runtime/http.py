"""HTTP helpers shared by every service: fast JSON responses (orjson) and lenient JSON request bodies."""
from __future__ import annotations

import orjson
from flask import Response, request

from services.runtime import codec


def json_response(obj, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), status, headers=headers,
                    mimetype="application/json")


def json_body() -> dict:
    """The request body as a JSON object, whatever the Content-Type (curl -d sends form-urlencoded)."""
    return codec.parse_json(codec.decompress(request.get_data(cache=False), request.headers.get("Content-Encoding")))

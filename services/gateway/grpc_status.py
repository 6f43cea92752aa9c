"""How an HTTP answer of the gateway becomes a gRPC status: the code (as Triton and TF Serving use them) and
the message, the JSON error's own text. Kept apart from ``grpc_api`` so that it loads without the protocol
messages."""
from __future__ import annotations

import grpc
import orjson

Code = grpc.StatusCode
STATUS_CODES = {400: Code.INVALID_ARGUMENT, 401: Code.UNAUTHENTICATED, 403: Code.PERMISSION_DENIED,
                404: Code.NOT_FOUND, 405: Code.UNIMPLEMENTED, 413: Code.RESOURCE_EXHAUSTED,
                415: Code.INVALID_ARGUMENT, 429: Code.RESOURCE_EXHAUSTED, 499: Code.CANCELLED,
                502: Code.UNAVAILABLE, 503: Code.UNAVAILABLE, 504: Code.DEADLINE_EXCEEDED}


def grpc_status(status: int, body: bytes) -> tuple[grpc.StatusCode, str]:
    """An HTTP error answer -> (gRPC code, message); a status not in the table is INTERNAL."""
    return STATUS_CODES.get(status, Code.INTERNAL), _message(body, status)


def _message(data: bytes, status: int) -> str:
    try:
        err = orjson.loads(data).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        err = None
    if isinstance(err, dict):  # OpenAI-shaped
        err = err.get("message")
    return str(err) if err else f"HTTP {status}"

"""Client-facing errors: every one becomes a JSON body with an ``error`` string (TF Serving and KServe
clients read that key), plus ``field`` and ``limit`` where they help the caller fix the request.

Model and runtime code raise the type that says what went wrong (bad input, not found, overloaded, unavailable,
too slow, unsupported media type); the type alone decides the HTTP status (``status``), which the gateway's gRPC
turns into a gRPC code. Only the gateway, which relays other servers' statuses, passes one explicitly."""
from __future__ import annotations


class ApiError(Exception):
    status = 400

    def __init__(self, message: str, status: int | None = None, field: str | None = None, limit=None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.field, self.limit = field, limit

    def body(self) -> dict:
        out = {"error": self.message}
        if self.field is not None:
            out["field"] = self.field
        if self.limit is not None:
            out["limit"] = self.limit
        return out


class NotFound(ApiError):
    status = 404


class Overloaded(ApiError):
    status = 429


class Unavailable(ApiError):
    status = 503


class DeadlineExceeded(ApiError):
    status = 504


class UnsupportedMediaType(ApiError):
    status = 415


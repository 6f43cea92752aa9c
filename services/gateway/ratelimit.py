"""Optional rate limit per API key (or client address without one): ``GATEWAY_RATE_LIMIT`` such as
``100/second`` or ``1000/minute`` (the ``limits`` notation), fixed windows, counted in memory or in the storage
``GATEWAY_RATE_LIMIT_STORAGE`` names (``redis://host:6379`` to share the count across gateway replicas)."""
from __future__ import annotations

import os
import time

from limits import parse
from limits.storage import storage_from_string
from limits.aio.strategies import FixedWindowRateLimiter

from services.gateway import auth
from services.runtime.errors import ApiError


class RateLimit:
    def __init__(self, rate: str, storage_uri: str):
        self.item = parse(rate)
        self.text = rate
        uri = storage_uri if storage_uri.startswith("async+") else "async+" + storage_uri
        self.limiter = FixedWindowRateLimiter(storage_from_string(uri))

    @staticmethod
    def bucket(key: str | None, client: tuple | None) -> str:
        """What is counted: the API key (by a non-reversible name), else the client's address."""
        return auth.key_id(key) if key else (client[0] if client else "")

    def exceeded(self) -> ApiError:
        return ApiError(f"rate limit exceeded ({self.text}); retry later", status=429, limit=self.text)

    async def hit(self, key: str) -> tuple[bool, list[tuple[bytes, bytes]]]:
        """-> (allowed, X-RateLimit-* headers for the response)."""
        ok = await self.limiter.hit(self.item, key)
        stats = await self.limiter.get_window_stats(self.item, key)
        headers = [(b"x-ratelimit-limit", str(self.item.amount).encode()),
                   (b"x-ratelimit-remaining", str(stats.remaining).encode()),
                   (b"x-ratelimit-reset", str(int(stats.reset_time)).encode())]
        if not ok:
            headers.append((b"retry-after", str(max(1, int(stats.reset_time - time.time()))).encode()))
        return ok, headers


def from_env() -> RateLimit | None:
    rate = os.environ.get("GATEWAY_RATE_LIMIT", "")
    if not rate:
        return None
    return RateLimit(rate, os.environ.get("GATEWAY_RATE_LIMIT_STORAGE", "memory://"))

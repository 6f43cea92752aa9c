"""Optional rate limit per API key (or client address without one): ``GATEWAY_RATE_LIMIT`` such as
``100/second`` or ``1000/minute`` (the ``limits`` notation), fixed windows, counted in memory or in the storage
``GATEWAY_RATE_LIMIT_STORAGE`` names (``redis://host:6379`` to share the count across gateway replicas).

Behind an ingress every request comes from the ingress's address: with ``GATEWAY_TRUSTED_PROXIES`` (addresses
or networks, comma-separated) the client is the last ``X-Forwarded-For`` address not itself a trusted proxy."""
from __future__ import annotations

import ipaddress
import time

from limits import parse
from limits.aio.strategies import FixedWindowRateLimiter
from limits.storage import storage_from_string

from services.gateway import auth
from services.runtime.errors import ApiError
from services.settings import GatewaySettings


class RateLimit:
    def __init__(self, rate: str, storage_uri: str, trusted: str = ""):
        self.trusted = [ipaddress.ip_network(t.strip(), strict=False) for t in trusted.split(",") if t.strip()]
        self.item = parse(rate)
        self.text = rate
        uri = storage_uri if storage_uri.startswith("async+") else "async+" + storage_uri
        self.limiter = FixedWindowRateLimiter(storage_from_string(uri))

    def bucket(self, key: str | None, client: tuple | None, forwarded_for: bytes | None = None) -> str:
        """What is counted: the API key (by a non-reversible name), else the client's address."""
        if key:
            return auth.key_id(key)
        addr = client[0] if client else ""
        if forwarded_for and self.is_trusted(addr):
            for hop in reversed(forwarded_for.decode("latin-1").split(",")):
                hop = hop.strip()
                if not _is_address(hop):
                    break  # junk where a proxy should have written an address: count the last sure one
                addr = hop
                if not self.is_trusted(addr):
                    break
        return addr

    def is_trusted(self, addr: str) -> bool:
        if not _is_address(addr):
            return False
        ip = ipaddress.ip_address(addr)
        return any(ip in net for net in self.trusted)

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


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def from_settings(settings: GatewaySettings) -> RateLimit | None:
    if not settings.rate_limit:
        return None
    return RateLimit(settings.rate_limit, settings.rate_limit_storage, settings.trusted_proxies)

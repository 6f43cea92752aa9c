"""Which replicas of the models service serve each imported model, so that a cluster holds each model once or
twice instead of in every pod, and its memory is the sum of its pods'.

Rendezvous (highest random weight) hashing: each model ranks the replicas by a hash of (model, replica address)
and goes to the first; a change of replica count moves only the models whose first replica came or went (about
1/N of them). A hot model (over ``GATEWAY_HOT_MODEL_RPS`` requests a second, over the last ten seconds) is spread
over its first two. The rest of the order is the failover: a replica that refuses the connection, or whose circuit
is open, passes the request on to the next (an inference on an imported model has no side effects).

The replicas come from ``GATEWAY_MODELS_REPLICAS``: ``dns:HOST:PORT`` (a Kubernetes headless Service: every
address it resolves to, looked up again every ``GATEWAY_REPLICAS_REFRESH_SECONDS``) or a comma-separated list of
URLs (run by hand). Unset, the models backend's one URL serves every model, as ``make serve`` has it.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import time
from dataclasses import replace

from services.gateway.backends import Backend

log = logging.getLogger("gateway.placement")

WINDOW_SECONDS = 10.0


def score(model: str, url: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{model}\0{url}".encode(), digest_size=8).digest(), "big")


class Placement:
    def __init__(self, backend: Backend, source: str, refresh_seconds: float, hot_rps: float):
        self.backend, self.source = backend, source.strip()
        self.refresh_seconds, self.hot_rps = refresh_seconds, hot_rps
        self.dns = self.source.startswith("dns:")
        urls = [] if self.dns else [u.strip().rstrip("/") for u in self.source.split(",") if u.strip()]
        self.replicas: list[Backend] = []
        self._set(urls or [backend.url])
        self.counts: dict[str, list] = {}  # model -> [window start, requests in it, rate of the last window]
        self.turn = 0

    def _set(self, urls: list[str]) -> None:
        urls = sorted(set(urls))
        if urls != [r.url for r in self.replicas]:
            if self.replicas:
                log.info("models replicas now %s", urls)
            # a backend per replica: each has its own connections and circuit breaker
            self.replicas = [replace(self.backend, name=f"{self.backend.name}@{u.split('//')[-1]}", url=u)
                             for u in urls]
            self.orders: dict[str, list[Backend]] = {}

    def order(self, model: str) -> list[Backend]:
        """Every replica, the ones that serve ``model`` first."""
        order = self.orders.get(model)
        if order is None:
            order = self.orders[model] = sorted(self.replicas, key=lambda r: score(model, r.url), reverse=True)
        return order

    def pick(self, model: str) -> list[Backend]:
        """The replicas to try for one request, in turn: a hot model's two copies alternate."""
        order = self.order(model)
        if len(order) > 1 and self._rate(model) > self.hot_rps:
            self.turn += 1
            if self.turn % 2:
                return [order[1], order[0], *order[2:]]
        return order

    def _rate(self, model: str) -> float:
        """Requests a second over the last full window (counted here: the event loop is one thread)."""
        now = time.monotonic()
        c = self.counts.get(model)
        if c is None:
            c = self.counts[model] = [now, 0, 0.0]
        if now - c[0] >= WINDOW_SECONDS:
            c[2] = c[1] / (now - c[0]) if now - c[0] < 2 * WINDOW_SECONDS else 0.0
            c[0], c[1] = now, 0
        c[1] += 1
        return max(c[2], c[1] / max(now - c[0], 1.0))  # this window so far, over at least a second

    async def refresh_forever(self) -> None:
        """Look the headless Service's addresses up again and again (``dns:`` only)."""
        if not self.dns:
            return
        host, _, port = self.source[4:].rpartition(":")
        scheme = "http"
        loop = asyncio.get_running_loop()
        while True:
            try:
                infos = await loop.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
                addrs = sorted({i[4][0] for i in infos})
                self._set([f"{scheme}://{a if ':' not in a else f'[{a}]'}:{port}" for a in addrs] or [self.backend.url])
            except OSError as exc:  # keep the last addresses: a lookup that fails says nothing about the pods
                log.warning("looking up the models replicas (%s) failed: %s", self.source, exc)
            await asyncio.sleep(self.refresh_seconds)

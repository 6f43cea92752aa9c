"""Calls to the model services: pooled keep-alive connections (urllib3), a per-backend circuit breaker
(pybreaker), fast failure when a backend is down, retries only of connection attempts (nothing was sent,
so any method is safe to retry), and an upstream timeout."""
from __future__ import annotations

import os
import time

import pybreaker
import urllib3
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError, ProtocolError, ReadTimeoutError

from services.gateway import metrics
from services.runtime.errors import ApiError

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
              "transfer-encoding", "upgrade", "content-length", "host", "server", "date"}


class BackendDown(Exception):
    """The backend refused or did not accept the connection (counts against its circuit breaker)."""


class Upstream:
    def __init__(self):
        self.connect_timeout = float(os.environ.get("GATEWAY_CONNECT_TIMEOUT", "0.5"))
        self.read_timeout = float(os.environ.get("GATEWAY_UPSTREAM_TIMEOUT", "60"))
        self.pool = urllib3.PoolManager(num_pools=16, maxsize=int(os.environ.get("GATEWAY_POOL_SIZE", "64")),
                                        block=False, retries=False)
        self.breakers: dict[str, pybreaker.CircuitBreaker] = {}
        self.fail_max = int(os.environ.get("GATEWAY_BREAKER_FAILURES", "3"))
        self.reset = float(os.environ.get("GATEWAY_BREAKER_RESET_SECONDS", "5"))

    def breaker(self, backend: str) -> pybreaker.CircuitBreaker:
        b = self.breakers.get(backend)
        if b is None:
            b = self.breakers.setdefault(backend, pybreaker.CircuitBreaker(
                fail_max=self.fail_max, reset_timeout=self.reset, name=backend,
                throw_new_error_on_trip=False))
        return b

    def request(self, backend, method: str, path: str, headers: dict, body: bytes | None, stream: bool = False,
                timeout: float | None = None):
        """-> urllib3 response (preload_content=not stream). Raises ApiError 503/504 on backend trouble."""
        url = backend.url + path
        t = urllib3.Timeout(connect=self.connect_timeout, read=timeout or self.read_timeout)

        def send():
            for attempt in (0, 1):  # one retry of a failed connection; nothing reached the backend
                try:
                    return self.pool.request(method, url, body=body, headers=headers, timeout=t,
                                             preload_content=not stream, redirect=False, retries=False)
                except (NewConnectionError, ConnectTimeoutError) as exc:
                    if attempt:
                        raise BackendDown(str(exc)) from None
                except MaxRetryError as exc:
                    if isinstance(exc.reason, (NewConnectionError, ConnectTimeoutError)):
                        if attempt:
                            raise BackendDown(str(exc.reason)) from None
                    else:
                        raise
                except ProtocolError as exc:
                    # a pooled keep-alive connection closed by the backend: retry on a fresh one
                    if attempt:
                        raise BackendDown(str(exc)) from None
        t0 = time.perf_counter()
        try:
            resp = self.breaker(backend.name).call(send)
        except pybreaker.CircuitBreakerError:
            raise ApiError(f"backend '{backend.name}' is unavailable (circuit open, retry in a few seconds)",
                           status=503) from None
        except BackendDown:
            raise ApiError(f"backend '{backend.name}' is unavailable", status=503) from None
        except (ReadTimeoutError, TimeoutError):
            raise ApiError(f"backend '{backend.name}' did not answer within {t.read_timeout:.0f}s", status=504) from None
        except MaxRetryError as exc:
            if isinstance(exc.reason, ReadTimeoutError):
                raise ApiError(f"backend '{backend.name}' did not answer within {t.read_timeout:.0f}s",
                               status=504) from None
            raise ApiError(f"backend '{backend.name}' failed: {exc.reason}", status=502) from None
        finally:
            metrics.UPSTREAM_LATENCY.labels(backend.name).observe(time.perf_counter() - t0)
        return resp


def response_headers(resp) -> list[tuple[str, str]]:
    return [(k, v) for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP]

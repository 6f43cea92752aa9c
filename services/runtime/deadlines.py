"""How long a request may take, and whether its client is still there: what a decoder's wait
(``generation.wait_all``) checks, so that a decoding job nobody waits for any more leaves the batch at its
next step.

A request starts with ``DECODE_TIMEOUT_SECONDS``; the client may shorten it: v2's ``timeout`` parameter (in
microseconds, as Triton has; the gateway sets it from a gRPC call's deadline) or the ``openai`` client's
``x-stainless-read-timeout`` header. A client that closes its connection is seen by a look at the request's own
socket (``gunicorn.socket`` in the WSGI environ, read without taking data); where the server gives none, only
the deadline counts. Streams need neither: a write to a gone client fails, and that ends the stream.
"""
from __future__ import annotations

import contextvars
import socket
import time
from dataclasses import dataclass


@dataclass
class Budget:
    deadline: float  # time.monotonic()
    set_by_client: bool = False
    sock: socket.socket | None = None

    def client_gone(self) -> bool:
        """The client closed its connection (a read would return end of file). Data waiting (a pipelined
        request) or nothing yet both mean it is still there."""
        if self.sock is None:
            return False
        try:
            return self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True


current: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("request_budget", default=None)


def begin(seconds: float, environ: dict) -> None:
    """A request starts (in the thread that handles it, and writes its stream if it has one)."""
    current.set(Budget(time.monotonic() + seconds, sock=environ.get("gunicorn.socket")))


def shorten(seconds: float) -> None:
    """The client's own limit, when it is shorter than the server's."""
    budget = current.get()
    if budget is not None and time.monotonic() + seconds < budget.deadline:
        budget.deadline, budget.set_by_client = time.monotonic() + seconds, True

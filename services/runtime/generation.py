"""One continuous-batching scheduler per process, shared by every autoregressive model of a service."""
from __future__ import annotations

import threading
import time

from services.runtime import deadlines, metrics
from services.runtime.config import settings
from modelcore.decoding import Job, Scheduler
from services.runtime.errors import DeadlineExceeded, Overloaded, Unavailable

_scheduler: Scheduler | None = None
POLL_SECONDS = 0.1  # how often a waiting request looks at its deadline and its client
_lock = threading.Lock()


def scheduler() -> Scheduler:
    global _scheduler
    with _lock:
        if _scheduler is None:
            def on_step(adapter, rows, seconds):
                metrics.observe_batch(getattr(adapter, "model_name", "decoder"), getattr(adapter, "model_version", ""),
                                      "decoder", rows, seconds)
            _scheduler = Scheduler(max_rows=settings().decoder_max_rows, name="decoder-scheduler",
                                   on_step=on_step, on_active=metrics.ACTIVE_SEQUENCES.set).start()
        return _scheduler


def submit_all(jobs: list[Job]) -> None:
    s = scheduler()
    limit = settings().max_active_sequences
    if s.active() + len(jobs) > limit:
        raise Overloaded(f"too many sequences in flight ({s.active()}, limit {limit}); retry later", limit=limit)
    for j in jobs:
        s.submit(j)


def wait_all(jobs: list[Job], timeout: float) -> None:
    """Wait for every job, at most ``timeout`` seconds or the request's own deadline (``deadlines``); past it,
    or once the client has closed its connection, the jobs are cancelled and leave the batch at the next step."""
    budget = deadlines.current.get()
    end = time.monotonic() + timeout
    by_client = budget is not None and budget.set_by_client and budget.deadline < end
    if by_client:
        end = budget.deadline  # type: ignore[union-attr]
    for j in jobs:
        while not j.finished.wait(max(0.0, min(POLL_SECONDS, end - time.monotonic()))):
            gone = budget is not None and budget.client_gone()
            if gone or time.monotonic() >= end:
                for k in jobs:
                    k.cancelled = True
                if gone:
                    raise ConnectionAbortedError("the client closed its connection")
                if by_client:
                    raise DeadlineExceeded("the request's deadline passed before decoding finished", field="timeout")
                raise Unavailable(f"decoding did not finish within {timeout:.0f}s")
        if j.error is not None:
            raise j.error

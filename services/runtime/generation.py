"""One continuous-batching scheduler per process, shared by every autoregressive model of a service."""
from __future__ import annotations

import threading

from services.runtime import metrics
from services.runtime.config import settings
from modelcore.decoding import Job, Scheduler
from services.runtime.errors import ApiError, Overloaded

_scheduler: Scheduler | None = None
_lock = threading.Lock()


def scheduler() -> Scheduler:
    global _scheduler
    with _lock:
        if _scheduler is None:
            def on_step(adapter, rows, seconds):
                metrics.observe_batch(getattr(adapter, "model_name", "decoder"), getattr(adapter, "model_version", ""),
                                      "decoder", rows, seconds)
            _scheduler = Scheduler(max_rows=settings().decoder_max_rows, name="decoder-scheduler",
                                   on_step=on_step).start()
        return _scheduler


def submit_all(jobs: list[Job]) -> None:
    s = scheduler()
    limit = settings().max_active_sequences
    if s.active() + len(jobs) > limit:
        raise Overloaded(f"too many sequences in flight ({s.active()}, limit {limit}); retry later", limit=limit)
    for j in jobs:
        s.submit(j)


def wait_all(jobs: list[Job], timeout: float) -> None:
    for j in jobs:
        if not j.finished.wait(timeout):
            for k in jobs:
                k.cancelled = True
            raise ApiError(f"decoding did not finish within {timeout:.0f}s", status=503)
        if j.error is not None:
            raise j.error

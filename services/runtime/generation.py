"""One continuous-batching scheduler per process, shared by every autoregressive model of a service."""
from __future__ import annotations

import threading
import time
from collections import defaultdict

from modelcore.decoding_jobs import Job
from modelcore.scheduler import Scheduler
from services import tracing
from services.runtime import deadlines, metrics
from services.runtime.config import settings
from services.runtime.errors import DeadlineExceeded, Overloaded, Unavailable

_scheduler: Scheduler | None = None
POLL_SECONDS = 0.1  # how often a waiting request looks at its deadline and its client
_lock = threading.Lock()


class StepMetrics:
    """The decoder's steps in the metrics: rows per step at once, and Triton's batch statistics (steps and their
    time by rows) added to their counters a few times a second and when the decoder falls idle: at thousands of
    steps a second, two more counter updates per step cost a stream measurably (bench/results/vm/FINDINGS.md).
    Called from the scheduler's thread only."""

    FLUSH_SECONDS = 0.25

    def __init__(self):
        self.pending: dict[tuple, list] = defaultdict(lambda: [0, 0.0])
        self.flushed = time.monotonic()

    def step(self, adapter, rows: int, seconds: float) -> None:
        model, version = adapter.model_name, adapter.model_version
        metrics.child(metrics.BATCH_SIZE, model, version, "decoder").observe(rows)
        counts = self.pending[(model, version, rows)]
        counts[0] += 1
        counts[1] += seconds
        if time.monotonic() - self.flushed > self.FLUSH_SECONDS:
            self.flush()

    def active(self, jobs: int) -> None:
        metrics.ACTIVE_SEQUENCES.set(jobs)
        if jobs == 0:
            self.flush()

    def flush(self) -> None:
        for (model, version, rows), (n, seconds) in self.pending.items():
            metrics.child(metrics.BATCHES, model, version, "decoder", str(rows)).inc(n)
            metrics.child(metrics.BATCH_SECONDS, model, version, "decoder", str(rows)).inc(seconds)
        self.pending.clear()
        self.flushed = time.monotonic()


def scheduler() -> Scheduler:
    global _scheduler
    with _lock:
        if _scheduler is None:
            steps = StepMetrics()
            _scheduler = Scheduler(max_rows=settings().decoder_max_rows, name="decoder-scheduler",
                                   on_step=steps.step, on_active=steps.active).start()
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
    or once the client has closed its connection, the jobs are cancelled and leave the batch at the next step.
    With traces on, the wait is one span (its jobs, steps and tokens), not one per step."""
    with tracing.span("decode", attributes={"decode.sequences": len(jobs)}) as span:
        try:
            _wait_all(jobs, timeout)
        finally:
            if span is not None:
                span.set_attributes({"decode.steps": max((j.steps for j in jobs), default=0),
                                     "decode.tokens": sum(j.tokens_made for j in jobs)})


def _wait_all(jobs: list[Job], timeout: float) -> None:
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

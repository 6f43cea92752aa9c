"""Server-side dynamic batching: concurrent requests to one graph are joined into one ONNX Runtime call.

A request submits a dict of arrays that share a leading batch dimension (one request may carry several
rows). A worker thread takes the oldest request, then keeps taking requests until ``max_batch_size`` rows
are gathered or ``max_queue_delay_ms`` has passed since the first one, concatenates them (padding
variable-length axes where the caller says how), runs the session once and hands each request its slice.
Requests whose other dimensions differ (and that no ``pad`` evens out) are never joined: the batch ends there.
``max_batch_size`` 0 runs each request alone, whatever its rows (a model whose rows are not independent).
An error in a batch fails only the requests in that batch; a full queue refuses new work with 429. A request
waits no longer than its deadline (``deadlines``: v2's ``timeout``, a gRPC deadline): past it, it gets a 504 and,
if it is still queued, it leaves the queue without running.

``in_flight`` batches may run at once (a runner thread each): on a GPU, while one batch runs (ONNX Runtime
releases the GIL and a session may be called from several threads), the next one forms and starts. On a CPU
one is enough: the session's own threads already use the cores.
"""
from __future__ import annotations

import functools
import threading
import time
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from services import tracing
from services.runtime import deadlines, metrics
from services.runtime.errors import DeadlineExceeded, Overloaded, Unavailable


class _Result(Future):
    """A request's outputs, and (with traces on) its wait and its batch's run as spans to record."""
    spans: tuple = ()


@dataclass
class _Pending:
    feeds: dict
    rows: int
    future: _Result = field(default_factory=_Result)
    enqueued: float = field(default_factory=time.perf_counter)
    enqueued_ns: int = 0  # wall clock, for the queue span (traces on)
    shapes: tuple = ()    # the dimensions after the batch of inputs not padded: only equal ones are joined


class DynamicBatcher:
    def __init__(self, run: Callable[[dict], dict], *, max_batch_size: int, max_queue_delay_ms: float,
                 max_queue_size: int = 1024, pad: dict | None = None, model: str = "", version: str = "",
                 graph: str = "model", in_flight: int = 1):
        """``run(feeds) -> outputs`` calls the session; ``pad`` maps an input name to (axis, value, side) for
        inputs whose non-batch length may differ between requests (e.g. token sequences)."""
        self.run_fn, self.max_batch, self.delay = run, max_batch_size, max_queue_delay_ms / 1000.0
        self.max_queue = max_queue_size
        self.pad = pad or {}
        self.labels = {"model": model, "version": version, "graph": graph}
        metrics.QUEUE_LIMIT.labels(**self.labels).set(max_queue_size)  # what the queue-depth alert compares with
        self.queue: deque[_Pending] = deque()
        self.queued_rows = 0
        self.last_batch_requests = 1
        self.in_flight = max(1, in_flight)
        self.running = 0  # session calls under way (in runner threads, or inline in request threads)
        self.cond = threading.Condition()
        self.closed = False
        self.threads = [threading.Thread(target=self._loop, name=f"batcher-{model}-{graph}-{i}", daemon=True)
                        for i in range(self.in_flight)]
        for t in self.threads:
            t.start()

    # ---------------------------------------------------------------------------------------- client side
    def submit(self, feeds: dict) -> Future:
        rows = int(next(iter(feeds.values())).shape[0])
        if 0 < self.max_batch < rows:
            # larger than one batch: split, so one request cannot exceed the graph's tested batch size
            parts = [self.submit({k: v[i:i + self.max_batch] for k, v in feeds.items()})
                     for i in range(0, rows, self.max_batch)]
            return _join(parts)
        item = _Pending(feeds, rows, enqueued_ns=time.time_ns() if tracing.enabled else 0,
                        shapes=tuple((k, v.shape[1:]) for k, v in feeds.items() if k not in self.pad))
        with self.cond:
            if self.closed:
                raise Unavailable("server is shutting down")
            if self.queued_rows + rows > self.max_queue:
                raise Overloaded(f"model {self.labels['model']} is overloaded: queue holds {self.queued_rows} rows "
                                 f"(limit {self.max_queue}); retry later", limit=self.max_queue)
            inline = self.running < self.in_flight and not self.queue
            if inline:
                self.running += 1
            else:
                self.queue.append(item)
                self.queued_rows += rows
                metrics.QUEUE_DEPTH.labels(**self.labels).set(self.queued_rows)
                self.cond.notify()
        if inline:
            # nothing queued and a runner free: run it in the caller's thread (no hand-off to a runner thread
            # and back, about 0.2 ms); whatever arrives meanwhile queues up and goes as one batch next
            item.future.set_running_or_notify_cancel()
            try:
                self._run([item])
            finally:
                with self.cond:
                    self.running -= 1
                    self.cond.notify()
        return item.future

    def __call__(self, feeds: dict, timeout: float = 60.0) -> dict:
        budget = deadlines.current.get()
        if budget is not None:
            timeout = min(timeout, budget.deadline - time.monotonic())
            if timeout <= 0:
                raise DeadlineExceeded("the request's deadline passed before it reached the model", field="timeout")
        future = self.submit(feeds)
        try:
            outputs = future.result(timeout)
        except FutureTimeout:
            future.cancel()  # still queued: it leaves without running (taken already: its answer is dropped)
            raise DeadlineExceeded(f"the request's deadline passed while it waited for a batch of model "
                                   f"{self.labels['model']}", field="timeout") from None
        if tracing.enabled:  # in the request's thread: children of its span
            tracing.record_spans(getattr(future, "spans", ()))
        return outputs

    def close(self) -> None:
        """Stop taking work; requests already queued are still run."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        for t in self.threads:
            t.join(timeout=30)

    # ---------------------------------------------------------------------------------------- worker
    def _take(self) -> list[_Pending]:
        with self.cond:
            while True:
                while not self.queue or self.running >= self.in_flight:
                    if self.closed and not self.queue:
                        return []
                    self.cond.wait()
                first = self.queue.popleft()
                if first.future.set_running_or_notify_cancel():
                    break
                self._abandoned(first)
            self.running += 1
            batch = [first]
            rows = first.rows
            deadline = batch[0].enqueued + self.delay
            while rows < self.max_batch:
                if self.queue:
                    if rows + self.queue[0].rows > self.max_batch or self.queue[0].shapes != batch[0].shapes:
                        break
                    nxt = self.queue.popleft()
                    if not nxt.future.set_running_or_notify_cancel():
                        self._abandoned(nxt)
                        continue
                    batch.append(nxt)
                    rows += nxt.rows
                    continue
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or self.closed or self.last_batch_requests <= 1 and len(batch) == 1:
                    break
                self.cond.wait(remaining)
            self.last_batch_requests = len(batch)
            self.queued_rows -= rows
            metrics.QUEUE_DEPTH.labels(**self.labels).set(self.queued_rows)
            return batch

    def _abandoned(self, p: _Pending) -> None:
        """A queued request whose deadline passed (its future cancelled): it leaves the queue unrun."""
        self.queued_rows -= p.rows
        metrics.QUEUE_DEPTH.labels(**self.labels).set(self.queued_rows)

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                return
            try:
                self._run(batch)
            finally:
                with self.cond:
                    self.running -= 1
                    self.cond.notify_all()

    def _run(self, batch: list[_Pending]) -> None:
        start, start_ns = time.perf_counter(), time.time_ns() if tracing.enabled else 0
        for p in batch:
            metrics.QUEUE_TIME.labels(**self.labels).observe(start - p.enqueued)
        try:
            feeds = self._concat([p.feeds for p in batch])
            outputs = self.run_fn(feeds)
        except Exception as exc:  # noqa: BLE001 - delivered to the requests of this batch only
            if len(batch) > 1:  # one request's values (an id past the vocabulary) must not fail the others
                for p in batch:
                    self._run([p])
                return
            batch[0].future.set_exception(exc)
            return
        rows = sum(p.rows for p in batch)
        metrics.observe_batch(self.labels["model"], self.labels["version"], self.labels["graph"], rows,
                              time.perf_counter() - start)
        if tracing.enabled:
            end_ns = time.time_ns()
            for p in batch:
                p.future.spans = (("batcher queue", p.enqueued_ns, start_ns, dict(self.labels)),
                                  ("batch run", start_ns, end_ns, {**self.labels, "batch.size": rows,
                                                                   "batch.requests": len(batch)}))
        offset = 0
        for p in batch:
            p.future.set_result({k: v[offset:offset + p.rows] for k, v in outputs.items()})
            offset += p.rows

    def _concat(self, feeds_list: list[dict]) -> dict:
        if len(feeds_list) == 1:
            return feeds_list[0]
        out = {}
        for name in feeds_list[0]:
            arrays = [f[name] for f in feeds_list]
            if name in self.pad:
                axis, value, side = self.pad[name]
                length = max(a.shape[axis] for a in arrays)
                padded = []
                for a in arrays:
                    widths = [(0, 0)] * a.ndim
                    extra = length - a.shape[axis]
                    widths[axis] = (extra, 0) if side == "pre" else (0, extra)
                    padded.append(np.pad(a, widths, constant_values=value) if extra else a)
                arrays = padded
            out[name] = np.concatenate(arrays, axis=0)
        return out


def _join(parts: list[Future]) -> Future:
    """One future for a request that was split into several batches."""
    joined: Future = Future()
    results: list = [None] * len(parts)
    left = [len(parts)]
    lock = threading.Lock()

    def done(i: int, f: Future) -> None:
        exc = f.exception()
        with lock:
            if joined.done():
                return
            if exc is not None:
                joined.set_exception(exc)
                return
            results[i] = f.result()
            left[0] -= 1
            if left[0] == 0:
                joined.set_result({k: np.concatenate([r[k] for r in results]) for k in results[0]})
    for i, f in enumerate(parts):
        f.add_done_callback(functools.partial(done, i))
    return joined

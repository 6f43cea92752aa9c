"""Streaming, written once: how the text a model makes leaves for its client. The native SSE route, OpenAI's
``stream: true`` and Triton's ``generate_stream`` all iterate a ``Generation`` and only format what it gives.

Pacing: the first piece goes at once (time to first token); after it, a write carries every piece made in the
last flush interval, and the end goes at once. All the streams of a worker together make at most
``WRITES_PER_SECOND`` writes a second (0: no limit): past ``WRITES_PER_SECOND * interval`` streams (8 at 10 ms)
each stream's interval grows with their number, so the cost of writing stays bounded while the tokens/s of
continuous batching grows (FINDINGS)."""
from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

WRITES_PER_SECOND = 800.0


class Stream(Protocol):
    """One generation's text as it is made (``services/textgen/model.py``'s ``Stream``)."""
    ended: bool

    @property
    def text(self) -> str: ...

    def take(self, timeout: float, interval: float | None = None) -> tuple[list[str], bool]: ...

    def drain(self) -> list[str]: ...


class Job(Protocol):
    """The scheduler's side of one generation (``modelcore/decoding_jobs.py``)."""
    tokens: list
    stop_reason: str | None
    cancelled: bool


@dataclass(frozen=True)
class Update:
    """What one write carries of one stream: the pieces made since its last write, and whether it ended."""
    index: int
    pieces: list[str]
    ended: bool


class _OpenStreams:
    """How many generations this worker is streaming now: they share the write budget."""

    def __init__(self):
        self._lock = threading.Lock()
        self.count = 0

    def add(self, delta: int) -> None:
        with self._lock:
            self.count += delta


OPEN = _OpenStreams()


def interval(flush_seconds: float) -> float:
    """The time between one stream's writes: its flush interval, or its share of the worker's write budget."""
    if WRITES_PER_SECOND <= 0:
        return flush_seconds
    return max(flush_seconds, OPEN.count / WRITES_PER_SECOND)


class Generation:
    """Several generations of one request, read together: iterating yields, per write, an ``Update`` for each
    stream that made pieces or ended since the last. The first stream still running paces the writes; the
    others are drained when it wakes. Ending the iteration (the last stream ended, or the client went away)
    cancels every job, which frees its row in the scheduler."""

    def __init__(self, streams: Sequence[Stream], jobs: Sequence[Job], timeout: float, flush_seconds: float):
        self.streams, self.jobs, self.timeout, self.flush_seconds = streams, jobs, timeout, flush_seconds

    def __iter__(self) -> Iterator[list[Update]]:
        OPEN.add(1)
        try:
            running = list(range(len(self.streams)))
            while running:
                out = []
                for k, i in enumerate(list(running)):
                    st = self.streams[i]
                    if st.ended:  # before draining: an ended stream's pieces are all there
                        pieces, ended = st.drain(), True
                    elif k == 0:  # waits for the first piece, then for the interval (or the end)
                        pieces, ended = st.take(self.timeout, interval(self.flush_seconds))
                    else:
                        pieces, ended = st.drain(), False
                    if ended:
                        running.remove(i)
                    if pieces or ended:
                        out.append(Update(i, pieces, ended))
                if out:
                    yield out
        finally:
            OPEN.add(-1)
            self.cancel()

    def cancel(self) -> None:
        """Free every job's row in the scheduler (the end of the iteration does; a writer that never started it
        must)."""
        for job in self.jobs:
            job.cancelled = True

    def tokens(self) -> int:
        """Tokens made so far by every stream."""
        return sum(len(j.tokens) for j in self.jobs)

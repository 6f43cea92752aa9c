"""The continuous-batching scheduler: every tick, one step-graph call per adapter over the rows of all active
jobs; jobs join between ticks and leave when finished or cancelled."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

from modelcore.decoding_jobs import Job, SamplingJob
from modelcore.sampling import Sampler
from modelcore.steps import ArrayStepAdapter, Row, batched_inputs


class SampledBatch:
    """The sampled streams of one adapter, stepped together tick after tick as arrays: the step's inputs are
    the last step's outputs and sampled tokens, fed back as they are, so a tick costs one step-graph call, one
    vectorised draw and a list append per stream. Per-stream Python (a row object, a callback) costs the
    scheduler thread a noticeable share of what a row of the step costs (FINDINGS), and it grows with the
    streams where the rest does not. It is only paid here when the streams change: the scheduler builds a batch
    when streams join or leave, and releases the old one.

    For adapters with ``step_arrays(tokens, states) -> (logits, states)``, whose row state is
    ``(array_1, ..., array_k, i)`` (row i of the arrays a step made, as ``batched_inputs`` reads it)."""

    def __init__(self, adapter, jobs: tuple["SamplingJob", ...]):
        self.adapter, self.jobs = adapter, jobs
        rows = [j.row for j in jobs]
        self.tokens = np.array([r.token for r in rows], dtype=np.int64)
        self.states = batched_inputs(rows)
        self.steps = 0
        self.sampler = Sampler(jobs)

    def tick(self, on_step: Callable | None = None) -> bool:
        """One step and draw of every stream; False (and no step) when some were cancelled: they are finished,
        and the scheduler steps the others in a batch without them."""
        cancelled = [job for job in self.jobs if job.cancelled and not job.done]
        if cancelled:
            for job in cancelled:
                job.cancel()
            return False
        t0 = time.perf_counter()
        logits, self.states = self.adapter.step_arrays(self.tokens, self.states)
        self.steps += 1
        if on_step:
            on_step(self.adapter, len(self.jobs), time.perf_counter() - t0)
        self.sampler.tick(logits, self.tokens)  # the tokens fed back to the next step, in place
        return True

    def release(self) -> None:
        """Hand each live stream its row back (its state as a row of the last step's outputs), for the next
        batch or the general path."""
        for i, job in enumerate(self.jobs):
            if not job.done:
                row = job.row
                row.state, row.token, row.position = (*self.states, i), int(self.tokens[i]), row.position + self.steps

    def fail(self, exc: BaseException) -> None:
        for job in self.jobs:
            if not job.done:
                job.fail(exc)


class Scheduler:
    """Continuous batching: every tick, one step-graph call per adapter over the rows of all active jobs.

    New jobs are admitted between ticks and finished ones retired, so a long generation never holds up a
    short one and many requests share each ONNX Runtime call. ``max_rows`` caps the rows per call; jobs that
    do not fit wait for the next tick (oldest first).
    """

    def __init__(self, max_rows: int = 128, name: str = "scheduler", on_step: Callable | None = None,
                 on_active: Callable[[int], None] | None = None):
        """``on_step(adapter, rows, seconds)``: called after every step-graph call; ``on_active(jobs)``: when the
        number of jobs in the batch changes (metrics)."""
        self.max_rows = max_rows
        self.on_active, self.reported = on_active, 0
        self.jobs: list[Job] = []
        self.incoming: list[Job] = []
        self.lock = threading.Condition()
        self.on_step = on_step
        self.thread: threading.Thread | None = None
        self.name = name
        self.stopping = False
        self.samplers: dict[int, Sampler] = {}  # per adapter: last tick's, kept while the same streams are drawn
        self.batch: SampledBatch | None = None  # while every job is a stream of one array-stepped adapter

    # -- synchronous use (training evaluation, tests)
    def run_until_done(self, jobs: Sequence[Job]) -> None:
        self.jobs.extend(jobs)
        while self.jobs:
            self.tick()

    # -- threaded use (servers)
    def start(self) -> "Scheduler":
        if self.thread is None:
            self.thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self.thread.start()
        return self

    def submit(self, job: Job) -> Job:
        with self.lock:
            self.incoming.append(job)
            self.lock.notify()
        return job

    def active(self) -> int:
        with self.lock:
            return len(self.jobs) + len(self.incoming)

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            self.lock.notify()

    def _loop(self) -> None:
        while True:
            with self.lock:
                while not self.incoming and not self.jobs and not self.stopping:
                    self.lock.wait()
                if self.stopping and not self.jobs and not self.incoming:
                    return
                self.jobs.extend(self.incoming)
                self.incoming.clear()
            self.tick()
            if self.on_active is not None and len(self.jobs) != self.reported:
                self.reported = len(self.jobs)
                self.on_active(self.reported)

    def tick(self) -> None:
        jobs = tuple(self.jobs)
        batch = self.batch
        if batch is None or batch.jobs != jobs:
            if batch is not None:
                batch.release()
            batch = self.batch = self._batchable(jobs)
        if batch is None:
            return self._tick_rows()
        try:
            stepped = batch.tick(self.on_step)
        except Exception as exc:  # noqa: BLE001 - a failed step fails its jobs, not the scheduler
            batch.fail(exc)
            stepped = True
        if any(j.done for j in jobs):
            self.jobs = [j for j in self.jobs if not j.done]
        if not stepped and self.jobs:  # cancelled streams left without a step: the others step now
            self.tick()

    def _batchable(self, jobs: tuple) -> "SampledBatch | None":
        """A SampledBatch of ``jobs`` when they are all one-row streams of one adapter with ``step_arrays``
        that fit one call; else None (the general path, one Row per hypothesis)."""
        if not jobs or len(jobs) > self.max_rows:
            return None
        adapter = jobs[0].adapter
        if not isinstance(adapter, ArrayStepAdapter) or not all(type(j) is SamplingJob and j.adapter is adapter
                                                                for j in jobs):
            return None
        return SampledBatch(adapter, jobs)

    def _tick_rows(self) -> None:
        """The general path: one ``step`` per adapter over the rows of every job that fits this tick."""
        for job in self.jobs:
            if job.cancelled and not job.done:
                job.cancel()  # every kind of job: a beam search nobody waits for stops here too
        self.jobs = [j for j in self.jobs if not j.done]
        by_adapter: dict[int, tuple[Any, list[tuple[Job, list[Row]]]]] = {}
        budget = self.max_rows
        for job in self.jobs:
            rows = job.rows()
            if budget < len(rows) and budget != self.max_rows:
                continue  # does not fit this tick; it keeps its place for the next one
            budget -= len(rows)
            by_adapter.setdefault(id(job.adapter), (job.adapter, []))[1].append((job, rows))
        samplers: dict[int, Sampler] = {}
        for key, (adapter, entries) in by_adapter.items():
            flat = [r for _, rows in entries for r in rows]
            try:
                t0 = time.perf_counter()
                logprobs, states = adapter.step(flat)
            except Exception as exc:  # noqa: BLE001 - a failed step fails its jobs, not the scheduler
                for job, _ in entries:
                    job.fail(exc)
                continue
            if self.on_step:
                self.on_step(adapter, len(flat), time.perf_counter() - t0)
            i = 0
            sampled: list[tuple[SamplingJob, int]] = []  # one-row streams, drawn together below
            for job, rows in entries:
                n = len(rows)
                if isinstance(job, SamplingJob):
                    sampled.append((job, i))
                else:
                    try:
                        job.advance(logprobs[i:i + n], states[i:i + n])
                    except Exception as exc:  # noqa: BLE001
                        job.fail(exc)
                i += n
            if sampled:
                streams, idx = tuple(j for j, _ in sampled), [i for _, i in sampled]
                last = self.samplers.get(key)
                sampler = samplers[key] = last if last is not None and last.jobs == streams else Sampler(streams)
                try:
                    tokens = sampler.tick(logprobs[idx] if len(idx) < len(flat) else logprobs)
                except Exception as exc:  # noqa: BLE001
                    for job in streams:
                        if not job.done:
                            job.fail(exc)
                    continue
                for job, i, token in zip(streams, idx, tokens.tolist(), strict=True):
                    row = job.row
                    row.state, row.token, row.position = states[i], token, row.position + 1
        self.samplers = samplers
        self.jobs = [j for j in self.jobs if not j.done]

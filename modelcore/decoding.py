"""Autoregressive decoding over step graphs: beam search (greedy = beam 1) and sampling, as *jobs* that a
continuous-batching scheduler steps together.

A model adapter turns rows into one batched step-graph call: ``adapter.step(rows) -> (logprobs [N, V],
new_states)``; an adapter that is only sampled from may return raw logits instead (``normalized = False``),
since sampling does not change when a row's scores shift by a constant. A row is one hypothesis (one beam, or
one sampled stream) holding the adapter's state, the last token and its position. Jobs only see scores, so the
same code drives translation and text generation, on ONNX Runtime in a server or synchronously in a training
job's evaluation.
"""
from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np


@functools.lru_cache(maxsize=64)
def banned_ids(banned: tuple[int, ...]) -> np.ndarray:
    """One read-only id array per banned set, shared by every job that bans it: sample_rows masks a whole
    batch at once when its rows share one array."""
    arr = np.array(banned, dtype=np.int64)
    arr.setflags(write=False)
    return arr


@dataclass
class Row:
    """One hypothesis's place in the batch. Beam search shares rows between hypotheses, so it makes a new one
    per step; a sampled stream owns its row and updates it in place."""
    state: Any          # adapter-specific (e.g. per-row arrays, or a row of a step's batched outputs)
    token: int          # last token fed to the next step
    position: int       # position of ``token`` in the output sequence
    context: Any = None  # per-source data shared by all rows of one input (e.g. encoder memory)


@dataclass
class Hypothesis:
    tokens: list[int]
    logprob: float
    row: Row | None = None

    def score(self, alpha: float) -> float:
        """Length-normalised log-probability (GNMT penalty), so beams do not prefer short outputs."""
        lp = ((5 + max(len(self.tokens), 1)) / 6) ** alpha
        return self.logprob / lp


class Job:
    """Something the scheduler steps: exposes rows, consumes their step outputs, finishes at some point."""

    adapter: Any
    done: bool = False
    finished: threading.Event
    error: BaseException | None = None
    cancelled: bool = False

    def rows(self) -> list[Row]:
        raise NotImplementedError

    def advance(self, logprobs: np.ndarray, states: list) -> None:
        raise NotImplementedError

    def fail(self, exc: BaseException) -> None:
        self.error = exc
        self.done = True
        self.finished.set()

    def cancel(self) -> None:
        """Leave the batch unfinished: nobody waits for the rest (``cancelled`` was set by the waiting request)."""
        self.done = True
        self.finished.set()


class BeamSearchJob(Job):
    """Beam search for one input; every live beam is a row of the shared batch. ``beam_size=1`` is greedy."""

    def __init__(self, adapter, first_row: Row, beam_size: int, max_len: int, eos_id: int,
                 banned: tuple[int, ...] = (), alpha: float = 0.6, no_repeat_ngram: int = 0):
        if not getattr(adapter, "normalized", True):
            raise ValueError("beam search needs an adapter whose step returns log-probabilities")
        self.adapter, self.beam_size, self.max_len, self.eos_id, self.alpha = adapter, beam_size, max_len, eos_id, alpha
        self.no_repeat_ngram = no_repeat_ngram
        self.banned = banned_ids(tuple(banned))
        self.live = [Hypothesis([], 0.0, first_row)]
        self.complete: list[Hypothesis] = []
        self.steps = 0
        self.finished = threading.Event()
        self.error: BaseException | None = None

    def rows(self) -> list[Row]:
        return [h.row for h in self.live if h.row is not None]  # a live hypothesis always has its row

    def advance(self, logprobs: np.ndarray, states: list) -> None:
        self.steps += 1
        lp = np.array(logprobs, dtype=np.float64)
        if self.banned.size:
            lp[:, self.banned] = -np.inf
        if self.no_repeat_ngram:
            for i, hyp in enumerate(self.live):
                lp[i, repeating_tokens(hyp.tokens, self.no_repeat_ngram)] = -np.inf
        k = self.beam_size
        cand = []
        for i, hyp in enumerate(self.live):
            top = np.argpartition(-lp[i], k)[:k] if lp.shape[1] > k else np.arange(lp.shape[1])
            for t in top:
                if np.isfinite(lp[i, t]):
                    cand.append((hyp.logprob + float(lp[i, t]), i, int(t)))
        cand.sort(key=lambda c: -c[0])
        new_live = []
        for total, i, t in cand:
            parent = self.live[i]
            assert parent.row is not None
            if t == self.eos_id:
                self.complete.append(Hypothesis(parent.tokens, total))
            else:
                row = Row(states[i], t, parent.row.position + 1, parent.row.context)
                new_live.append(Hypothesis(parent.tokens + [t], total, row))
            if len(new_live) == k:
                break
        self.live = new_live
        if self.steps >= self.max_len:
            self.complete.extend(Hypothesis(h.tokens, h.logprob) for h in self.live)
            self.live = []
        elif len(self.complete) >= k and self.live:
            # stop once no live beam can beat the best complete one (scores only fall as beams grow)
            best = max(h.score(self.alpha) for h in self.complete)
            if all(h.logprob / (((5 + self.max_len) / 6) ** self.alpha) < best for h in self.live):
                self.live = []
        if not self.live:
            self.done = True
            self.finished.set()

    def results(self) -> list[Hypothesis]:
        return sorted(self.complete, key=lambda h: -h.score(self.alpha))[: self.beam_size]


def repeating_tokens(tokens: list[int], n: int) -> list[int]:
    """Tokens that would repeat an n-gram of ``tokens``, or make one token three times in a row (the loops a
    small model falls into: "ein bisschen ein bisschen ...")."""
    out = []
    if len(tokens) >= 2 and tokens[-1] == tokens[-2]:
        out.append(tokens[-1])
    if len(tokens) >= n:
        prefix = tuple(tokens[len(tokens) - n + 1:])
        for j in range(len(tokens) - n + 1):
            if tuple(tokens[j:j + n - 1]) == prefix:
                out.append(tokens[j + n - 1])
    return out


class SamplingJob(Job):
    """One sampled stream: the prompt is fed first (its rows share the batch with other streams' sampling
    steps), then tokens are drawn with temperature, top-k and top-p from a private RNG seeded per request.

    ``on_token(token_id) -> bool`` is called from the scheduler thread as each token is made (stop strings);
    returning False ends the stream, and it is called with None at the end. A reader that needs no per-token
    check passes ``on_first()`` and ``on_end()`` instead, each called once, and reads ``tokens`` itself: a
    call per token and stream is what the scheduler thread's time goes to once the step graph is batched.
    """

    def __init__(self, adapter, first_state, prompt_ids: list[int], max_tokens: int, temperature: float,
                 top_k: int, top_p: float, seed: int, banned: tuple[int, ...] = (),
                 on_token: Callable[[int | None], bool | None] | None = None,
                 on_first: Callable[[], None] | None = None, on_end: Callable[[], None] | None = None):
        if not prompt_ids:
            raise ValueError("a prompt of at least one token is needed")
        self.adapter, self.max_tokens = adapter, max_tokens
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.rng = np.random.default_rng(seed)
        self.uniforms: list[float] = []  # drawn from rng in blocks, used from the end (next_uniform)
        self.banned = banned_ids(tuple(banned))
        self.on_token, self.on_first, self.on_end = on_token, on_first, on_end
        self.tokens: list[int] = []
        self.row = Row(first_state, prompt_ids[0], 0)
        self.forced = list(prompt_ids[1:])
        self.finished = threading.Event()
        self.error: BaseException | None = None
        self.stop_reason: str | None = None
        self.cancelled = False

    def rows(self) -> list[Row]:
        return [self.row]

    def advance(self, logprobs: np.ndarray, states: list) -> None:
        SamplingJob.advance_many([self], logprobs, states)

    @staticmethod
    def advance_many(jobs: list["SamplingJob"], logprobs: np.ndarray, states, last: "Draw | None" = None
                     ) -> "Draw | None":
        """Advance many streams (one row each) with one vectorised draw: per-row Python work in the scheduler
        thread is what limits tokens/s once the step graph is batched. ``last`` is the previous tick's
        ``Draw``, reused while the same streams are drawn together; the one used is returned."""
        drawing = []
        for i, job in enumerate(jobs):
            if job.cancelled:
                job.cancel()
            elif job.forced:  # still reading the prompt
                row = job.row
                row.state, row.token, row.position = states[i], job.forced.pop(0), row.position + 1
            else:
                drawing.append(i)
        if not drawing:
            return last
        every = len(drawing) == len(jobs)
        picked = tuple(jobs) if every else tuple(jobs[i] for i in drawing)
        draw = last if last is not None and last.jobs == picked else Draw(picked)
        tokens = sample_rows(logprobs if every else logprobs[drawing], draw.temperature, draw.top_k, draw.top_p,
                             np.array([j.next_uniform() for j in picked]), draw.banned, draw.flags)
        for i, job, tok in zip(drawing, picked, tokens.tolist(), strict=False):
            job.tokens.append(tok)
            row = job.row
            row.state, row.token, row.position = states[i], tok, row.position + 1
            if job.on_first is not None and len(job.tokens) == 1:
                job.on_first()
            if job.on_token is not None and job.on_token(tok) is False:
                job._finish("stop")
            elif len(job.tokens) >= job.max_tokens:
                job._finish("length")
        return draw

    def next_uniform(self) -> float:
        """The stream's next U[0, 1) number: the same sequence as one ``rng.random()`` a token, at a fraction of
        the cost (a Generator call takes its lock, once per token and stream; FINDINGS)."""
        if not self.uniforms:
            self.uniforms = self.rng.random(64)[::-1].tolist()
        return self.uniforms.pop()

    def cancel(self) -> None:
        self._finish("cancelled")

    def _finish(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason
        self.done = True
        self.finished.set()
        if self.on_token:
            self.on_token(None)
        if self.on_end:
            self.on_end()


class Draw:
    """The sampling settings of the streams drawn together in one tick, as arrays, with which of the costly
    masks any of them needs. Streams stay together for many ticks, so the scheduler keeps one ``Draw`` while
    the same streams are drawn instead of rebuilding it row by row every tick."""

    __slots__ = ("jobs", "temperature", "top_k", "top_p", "banned", "flags")

    def __init__(self, jobs: tuple["SamplingJob", ...]):
        self.jobs = jobs
        self.temperature = np.array([j.temperature for j in jobs], dtype=np.float64)
        self.top_k = np.array([j.top_k for j in jobs], dtype=np.int64)
        self.top_p = np.array([j.top_p for j in jobs], dtype=np.float64)
        first = jobs[0].banned
        self.banned = first if all(j.banned is first for j in jobs) else [j.banned for j in jobs]
        self.flags = sampling_flags(self.temperature, self.top_k, self.top_p)


def sampling_flags(temperature: np.ndarray, top_k: np.ndarray, top_p: np.ndarray) -> tuple[bool, bool, bool]:
    """(any row greedy, any row top-k, any row top-p): the masks sample_rows can skip."""
    return bool((temperature <= 0).any()), bool((top_k > 0).any()), bool((top_p < 1.0).any())


def sample_rows(logits: np.ndarray, temperature: np.ndarray, top_k: np.ndarray, top_p: np.ndarray,
                uniform: np.ndarray, banned, flags: tuple[bool, bool, bool] | None = None) -> np.ndarray:
    """Draw one token per row with per-row temperature (<= 0: argmax), top-k (0: off) and top-p (1: off).

    ``uniform`` holds one U[0, 1) number per row from that row's own RNG, so a seeded stream draws the same
    tokens whatever else shares its batch. ``banned`` is one id array for every row, or one per row.
    ``flags`` (``sampling_flags`` of the same arrays) may be passed when already known.
    """
    any_greedy, any_top_k, any_top_p = flags or sampling_flags(temperature, top_k, top_p)
    z = np.array(logits, dtype=np.float64)
    n, v = z.shape
    if isinstance(banned, list):
        for i, b in enumerate(banned):
            z[i, b] = -np.inf
    elif len(banned):
        z[:, banned] = -np.inf
    out = np.empty(n, dtype=np.int64)
    rows: slice | np.ndarray = slice(None)
    if any_greedy:
        greedy = temperature <= 0
        out[greedy] = np.argmax(z[greedy], axis=1)
        if greedy.all():
            return out
        rows = np.flatnonzero(~greedy)
        z, temperature, top_k, top_p, uniform = z[rows], temperature[rows], top_k[rows], top_p[rows], uniform[rows]
    z /= temperature[:, None]
    cut = (top_k > 0) & (top_k < v) if any_top_k else None
    if cut is not None and cut.any():  # keep the k largest logits (ties at the k-th are kept, as a partition would)
        kth = np.sort(z[cut], axis=1)[np.arange(int(cut.sum())), v - top_k[cut]]
        sub = z[cut]
        sub[sub < kth[:, None]] = -np.inf
        z[cut] = sub
    p = np.exp(z - z.max(axis=1, keepdims=True))  # unnormalised: the draw below scales by each row's total
    nucleus = top_p < 1.0 if any_top_p else None
    if nucleus is not None and nucleus.any():  # keep the smallest set of most likely tokens whose mass reaches top_p
        q = p[nucleus]
        q /= q.sum(axis=1, keepdims=True)
        order = np.argsort(-q, axis=1, kind="stable")
        cum = np.cumsum(np.take_along_axis(q, order, axis=1), axis=1)
        keep = (cum < top_p[nucleus, None]).sum(axis=1) + 1
        dropped = np.arange(v)[None, :] >= keep[:, None]
        np.put_along_axis(q, order, np.where(dropped, 0.0, np.take_along_axis(q, order, axis=1)), axis=1)
        p[nucleus] = q / q.sum(axis=1, keepdims=True)
    # inverse-CDF draw: one uniform number per row
    cdf = np.cumsum(p, axis=1)
    drawn = (cdf <= (uniform * cdf[:, -1])[:, None]).sum(axis=1)
    out[rows] = np.minimum(drawn, v - 1)
    return out


class SampledBatch:
    """The sampled streams of one adapter, stepped together tick after tick as arrays: the step's inputs are
    the last step's outputs and sampled tokens, fed back as they are, so a tick costs one step-graph call, one
    vectorised draw and a list append per stream. Per-stream Python (a row object, a callback) costs the
    scheduler thread a noticeable share of what a row of the step costs (FINDINGS), and it grows with the
    streams where the rest does not. It is only paid here when the
    streams change: the scheduler builds a batch when streams join or leave, and releases the old one.

    For adapters with ``step_arrays(tokens, states) -> (logits, states)``, whose row state is
    ``(array_1, ..., array_k, i)`` (row i of the arrays a step made, as ``batched_inputs`` reads it)."""

    def __init__(self, adapter, jobs: tuple["SamplingJob", ...]):
        self.adapter, self.jobs = adapter, jobs
        rows = [j.row for j in jobs]
        self.tokens = np.array([r.token for r in rows], dtype=np.int64)
        self.states = batched_inputs(rows)
        self.steps = 0
        self._plan()

    def _plan(self) -> None:
        """Which streams still read their prompt and which draw, with the drawing ones' settings."""
        self.reading = [i for i, j in enumerate(self.jobs) if j.forced]
        drawing = [i for i, j in enumerate(self.jobs) if not j.forced]
        self.every = len(drawing) == len(self.jobs)
        self.drawing = drawing if not self.every else slice(None)
        self.drawers = tuple(self.jobs[i] for i in drawing)
        self.draw = Draw(self.drawers) if drawing else None
        self.fresh = [j for j in self.drawers if not j.tokens and j.on_first is not None]
        self.watched = [j for j in self.drawers if j.on_token is not None]  # per-token checks (stop strings)
        # ticks until the first drawing stream reaches its max_tokens (all of them draw once a tick)
        self.until_full = min((j.max_tokens - len(j.tokens) for j in self.drawers), default=-1)

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
        replan = False
        for i in self.reading:
            forced = self.jobs[i].forced
            self.tokens[i] = forced.pop(0)
            replan = replan or not forced
        if self.draw is not None:
            draw = self.draw
            drawn = sample_rows(logits if self.every else logits[self.drawing], draw.temperature, draw.top_k,
                                draw.top_p, np.array([j.next_uniform() for j in self.drawers]), draw.banned,
                                draw.flags)
            self.tokens[self.drawing] = drawn
            for job, tok in zip(self.drawers, drawn.tolist(), strict=False):
                job.tokens.append(tok)
            if self.fresh:
                for job in self.fresh:
                    job.on_first()  # type: ignore[misc]  # fresh: the jobs that asked for on_first
                self.fresh = []
            for job in self.watched:
                if job.on_token(job.tokens[-1]) is False:  # type: ignore[misc]  # watched: they have one
                    job._finish("stop")
            self.until_full -= 1
            if self.until_full == 0:
                for job in self.drawers:
                    if len(job.tokens) >= job.max_tokens and not job.done:
                        job._finish("length")
        if replan:
            self._plan()
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
        self.draws: dict[int, Draw | None] = {}  # per adapter: last tick's sampling settings (SamplingJob.advance_many)
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
        if not hasattr(adapter, "step_arrays") or not all(type(j) is SamplingJob and j.adapter is adapter
                                                          for j in jobs):
            return None
        return SampledBatch(adapter, jobs)

    def _tick_rows(self) -> None:
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
        draws: dict[int, Draw | None] = {}
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
            sampling: list[tuple[Job, int]] = []  # one-row sampling jobs advance together below
            for job, rows in entries:
                n = len(rows)
                if isinstance(job, SamplingJob):
                    sampling.append((job, i))
                else:
                    try:
                        job.advance(logprobs[i:i + n], states[i:i + n])
                    except Exception as exc:  # noqa: BLE001
                        job.fail(exc)
                i += n
            if sampling:
                jobs = [j for j, _ in sampling]
                if len(sampling) < len(flat):  # beams share this adapter: pick the sampled rows out
                    idx = [i for _, i in sampling]
                    logprobs, states = logprobs[idx], [states[i] for i in idx]
                try:
                    draws[key] = SamplingJob.advance_many(jobs, logprobs, states,  # type: ignore[arg-type]
                                                          self.draws.get(key))
                except Exception as exc:  # noqa: BLE001
                    for job in jobs:
                        if not job.done:
                            job.fail(exc)
        self.draws = draws
        self.jobs = [j for j in self.jobs if not j.done]


def batched_inputs(rows: list[Row]) -> tuple[np.ndarray, ...]:
    """A step's state inputs from rows whose state is (array_1, ..., array_k, i): row i of arrays an earlier
    step made (k of them, one per state input). When all rows point into the same arrays, in order and all of
    them, those arrays are fed back as they are; from the same arrays otherwise, one gather each; else a
    stack of the rows (streams joined since the last step)."""
    first = rows[0].state
    src, n = first[0], len(rows)
    if all(r.state[0] is src for r in rows):
        idx = [r.state[-1] for r in rows]
        if len(src) == n and idx == list(range(n)):
            return first[:-1]
        return tuple(a[idx] for a in first[:-1])
    return tuple(np.stack([r.state[k][r.state[-1]] for r in rows]) for k in range(len(first) - 1))


def log_softmax(x: np.ndarray) -> np.ndarray:
    m = np.max(x, axis=-1, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))


def pad_stack(arrays: list[np.ndarray], length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stack [T_i, ...] arrays into [N, T, ...] padded on the right, with a float mask [N, T] (1 = real)."""
    length = max((a.shape[0] for a in arrays), default=0) if length is None else length
    out = np.zeros((len(arrays), length) + arrays[0].shape[1:], dtype=arrays[0].dtype)
    mask = np.zeros((len(arrays), length), dtype=np.float32)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = a
        mask[i, : a.shape[0]] = 1.0
    return out, mask



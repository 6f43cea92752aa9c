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
from dataclasses import dataclass
from typing import Any, Callable

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
    state: Any          # adapter-specific (per-row arrays); immutable once made
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

    def rows(self) -> list[Row]:
        raise NotImplementedError

    def advance(self, logprobs: np.ndarray, states: list) -> None:
        raise NotImplementedError

    def fail(self, exc: BaseException) -> None:
        self.error = exc
        self.done = True
        self.finished.set()


class BeamSearchJob(Job):
    """Beam search for one input; every live beam is a row of the shared batch. ``beam_size=1`` is greedy."""

    def __init__(self, adapter, first_row: Row, beam_size: int, max_len: int, eos_id: int,
                 banned: tuple[int, ...] = (), alpha: float = 0.6):
        if not getattr(adapter, "normalized", True):
            raise ValueError("beam search needs an adapter whose step returns log-probabilities")
        self.adapter, self.beam_size, self.max_len, self.eos_id, self.alpha = adapter, beam_size, max_len, eos_id, alpha
        self.banned = banned_ids(tuple(banned))
        self.live = [Hypothesis([], 0.0, first_row)]
        self.complete: list[Hypothesis] = []
        self.steps = 0
        self.finished = threading.Event()
        self.error: BaseException | None = None

    def rows(self) -> list[Row]:
        return [h.row for h in self.live]

    def advance(self, logprobs: np.ndarray, states: list) -> None:
        self.steps += 1
        lp = np.array(logprobs, dtype=np.float64)
        if self.banned.size:
            lp[:, self.banned] = -np.inf
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


class SamplingJob(Job):
    """One sampled stream: the prompt is fed first (its rows share the batch with other streams' sampling
    steps), then tokens are drawn with temperature, top-k and top-p from a private RNG seeded per request.

    ``on_token(token_id) -> bool`` is called from the scheduler thread as each token is made (streaming,
    stop strings); returning False ends the stream.
    """

    def __init__(self, adapter, first_state, prompt_ids: list[int], max_tokens: int, temperature: float,
                 top_k: int, top_p: float, seed: int, banned: tuple[int, ...] = (),
                 on_token: Callable[[int], bool] | None = None):
        if not prompt_ids:
            raise ValueError("a prompt of at least one token is needed")
        self.adapter, self.max_tokens = adapter, max_tokens
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.rng = np.random.default_rng(seed)
        self.banned = banned_ids(tuple(banned))
        self.on_token = on_token
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
    def advance_many(jobs: list["SamplingJob"], logprobs: np.ndarray, states: list) -> None:
        """Advance many streams (one row each) with one vectorised draw: per-row Python work in the scheduler
        thread is what limits tokens/s once the step graph is batched."""
        drawing = []
        for i, job in enumerate(jobs):
            if job.cancelled:
                job._finish("cancelled")
            elif job.forced:  # still reading the prompt
                job.row = Row(states[i], job.forced.pop(0), job.row.position + 1)
            else:
                drawing.append(i)
        if not drawing:
            return
        picked = [jobs[i] for i in drawing]
        tokens = sample_rows(logprobs[drawing] if len(drawing) < len(jobs) else logprobs,
                             np.array([j.temperature for j in picked]), np.array([j.top_k for j in picked]),
                             np.array([j.top_p for j in picked]), np.array([j.rng.random() for j in picked]),
                             picked[0].banned if all(j.banned is picked[0].banned for j in picked) else
                             [j.banned for j in picked])
        for i, job, tok in zip(drawing, picked, tokens.tolist()):
            job.tokens.append(tok)
            job.row = Row(states[i], tok, job.row.position + 1)
            keep_going = job.on_token(tok) if job.on_token else True
            if keep_going is False:
                job._finish("stop")
            elif len(job.tokens) >= job.max_tokens:
                job._finish("length")

    def _finish(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason
        self.done = True
        self.finished.set()
        if self.on_token:
            self.on_token(None)


def sample_rows(logits: np.ndarray, temperature: np.ndarray, top_k: np.ndarray, top_p: np.ndarray,
                uniform: np.ndarray, banned) -> np.ndarray:
    """Draw one token per row with per-row temperature (<= 0: argmax), top-k (0: off) and top-p (1: off).

    ``uniform`` holds one U[0, 1) number per row from that row's own RNG, so a seeded stream draws the same
    tokens whatever else shares its batch. ``banned`` is one id array for every row, or one per row.
    """
    z = np.array(logits, dtype=np.float64)
    n, v = z.shape
    if isinstance(banned, list):
        for i, b in enumerate(banned):
            z[i, b] = -np.inf
    elif len(banned):
        z[:, banned] = -np.inf
    greedy = temperature <= 0
    out = np.empty(n, dtype=np.int64)
    rows = slice(None)
    if greedy.any():
        out[greedy] = np.argmax(z[greedy], axis=1)
        if greedy.all():
            return out
        rows = np.flatnonzero(~greedy)
        z, temperature, top_k, top_p, uniform = z[rows], temperature[rows], top_k[rows], top_p[rows], uniform[rows]
    z /= temperature[:, None]
    cut = (top_k > 0) & (top_k < v)
    if cut.any():  # keep the k largest logits (ties at the k-th are kept, as a partition would)
        kth = np.sort(z[cut], axis=1)[np.arange(int(cut.sum())), v - top_k[cut]]
        sub = z[cut]
        sub[sub < kth[:, None]] = -np.inf
        z[cut] = sub
    p = np.exp(z - z.max(axis=1, keepdims=True))  # unnormalised: the draw below scales by each row's total
    nucleus = top_p < 1.0
    if nucleus.any():  # keep the smallest set of most likely tokens whose mass reaches top_p
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


class Scheduler:
    """Continuous batching: every tick, one step-graph call per adapter over the rows of all active jobs.

    New jobs are admitted between ticks and finished ones retired, so a long generation never holds up a
    short one and many requests share each ONNX Runtime call. ``max_rows`` caps the rows per call; jobs that
    do not fit wait for the next tick (oldest first).
    """

    def __init__(self, max_rows: int = 128, name: str = "scheduler", on_step: Callable | None = None):
        self.max_rows = max_rows
        self.jobs: list[Job] = []
        self.incoming: list[Job] = []
        self.lock = threading.Condition()
        self.on_step = on_step
        self.thread: threading.Thread | None = None
        self.name = name
        self.stopping = False

    # -- synchronous use (training evaluation, tests)
    def run_until_done(self, jobs: list[Job]) -> None:
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

    def tick(self) -> None:
        by_adapter: dict[int, tuple[Any, list[tuple[Job, list[Row]]]]] = {}
        budget = self.max_rows
        for job in self.jobs:
            rows = job.rows()
            if budget < len(rows) and budget != self.max_rows:
                continue  # does not fit this tick; it keeps its place for the next one
            budget -= len(rows)
            by_adapter.setdefault(id(job.adapter), (job.adapter, []))[1].append((job, rows))
        for adapter, entries in by_adapter.values():
            flat = [r for _, rows in entries for r in rows]
            try:
                logprobs, states = adapter.step(flat)
            except Exception as exc:  # noqa: BLE001 - a failed step fails its jobs, not the scheduler
                for job, _ in entries:
                    job.fail(exc)
                continue
            if self.on_step:
                self.on_step(adapter, len(flat))
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
                idx = [i for _, i in sampling]
                try:
                    SamplingJob.advance_many([j for j, _ in sampling], logprobs[idx], [states[i] for i in idx])
                except Exception as exc:  # noqa: BLE001
                    for job, _ in sampling:
                        if not job.done:
                            job.fail(exc)
        self.jobs = [j for j in self.jobs if not j.done]


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



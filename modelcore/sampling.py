"""Sampling: drawing each stream's next token with its own temperature, top-k, top-p and seed, for many streams
at once (``sample_rows``), and the one engine that advances the streams drawn together in a tick (``Sampler``):
prompt tokens fed, tokens drawn, callbacks called, streams ended. The scheduler runs it for streams stepped row
by row and for streams stepped as whole arrays alike."""
from __future__ import annotations

import numpy as np

from modelcore.decoding_jobs import SamplingJob


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


class Sampler:
    """The streams drawn together, tick after tick, until they change: each tick feeds every stream still
    reading its prompt its next prompt token and draws one for the others (one vectorised ``sample_rows``),
    then tells the readers (``on_first``, ``on_token``) and ends the streams that stopped or reached
    ``max_tokens``. What per-stream Python it needs is planned once, and again only when a prompt has been
    read; the scheduler keeps one while the same streams share its ticks."""

    def __init__(self, jobs: tuple[SamplingJob, ...]):
        self.jobs = jobs
        self._plan()

    def _plan(self) -> None:
        """Which streams still read their prompt and which draw, with the drawing ones' settings."""
        self.reading = [i for i, j in enumerate(self.jobs) if j.forced]
        drawing = [i for i, j in enumerate(self.jobs) if not j.forced]
        self.every = len(drawing) == len(self.jobs)
        self.drawing: list[int] | slice = drawing if not self.every else slice(None)
        self.drawers = tuple(self.jobs[i] for i in drawing)
        self.draw = Draw(self.drawers) if drawing else None
        self.fresh = [j for j in self.drawers if not j.tokens and j.on_first is not None]
        self.watched = [j for j in self.drawers if j.on_token is not None]  # per-token checks (stop strings)
        # ticks until the first drawing stream reaches its max_tokens (all of them draw once a tick)
        self.until_full = min((j.max_tokens - len(j.tokens) for j in self.drawers), default=-1)

    def tick(self, logits: np.ndarray, tokens: np.ndarray | None = None) -> np.ndarray:
        """One tick from the step's scores (a row per stream, in order) -> the token each stream feeds the next
        step, written into ``tokens`` when given."""
        tokens = np.empty(len(self.jobs), dtype=np.int64) if tokens is None else tokens
        replan = False
        for i in self.reading:
            forced = self.jobs[i].forced
            tokens[i] = forced.pop(0)
            replan = replan or not forced
        if self.draw is not None:
            draw = self.draw
            drawn = sample_rows(logits if self.every else logits[self.drawing], draw.temperature, draw.top_k,
                                draw.top_p, np.array([j.next_uniform() for j in self.drawers]), draw.banned,
                                draw.flags)
            tokens[self.drawing] = drawn
            for job, tok in zip(self.drawers, drawn.tolist(), strict=True):
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
        return tokens

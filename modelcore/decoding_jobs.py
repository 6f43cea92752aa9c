"""What the decoding scheduler steps: jobs. A beam search (greedy is beam 1) for one input, every live beam a
row of the shared batch; or one sampled stream. Jobs only see scores, so the same code drives translation and
text generation, on ONNX Runtime in a server or synchronously in a training job's evaluation."""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

from modelcore.steps import Row, StepAdapter


@functools.lru_cache(maxsize=64)
def banned_ids(banned: tuple[int, ...]) -> np.ndarray:
    """One read-only id array per banned set, shared by every job that bans it: sample_rows masks a whole
    batch at once when its rows share one array."""
    arr = np.array(banned, dtype=np.int64)
    arr.setflags(write=False)
    return arr


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
    """Something the scheduler steps: exposes rows, consumes their step outputs, finishes at some point. A beam
    search consumes its own (``advance``); sampled streams are advanced together by ``sampling.Sampler``."""

    adapter: StepAdapter
    done: bool = False
    finished: threading.Event
    error: BaseException | None = None
    cancelled: bool = False
    steps: int = 0  # step-graph calls this job took part in

    @property
    def tokens_made(self) -> int:
        """Tokens of output so far (a beam search: its longest hypothesis)."""
        raise NotImplementedError

    def rows(self) -> list[Row]:
        raise NotImplementedError

    def advance(self, logprobs: np.ndarray, states: list) -> None:
        """Consume the step's outputs for this job's rows (not called for sampled streams)."""
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
        if not adapter.normalized:
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

    @property
    def tokens_made(self) -> int:
        return max((len(h.tokens) for h in self.complete + self.live), default=0)

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

    @property
    def steps(self) -> int:  # type: ignore[override]  # the steps that drew a token (the prompt's are not counted)
        return len(self.tokens)

    @property
    def tokens_made(self) -> int:
        return len(self.tokens)

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

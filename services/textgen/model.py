"""Text-generation servable: many streams sampled together on the shared continuous-batching scheduler."""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable

import numpy as np

from modelcore.decoding_jobs import SamplingJob
from modelcore.textgen import CharModel
from services.routes import MAX_SEED
from services.runtime.config import LIMITS, settings
from services.runtime.errors import ApiError
from services.runtime.generation import submit_all, wait_all
from services.runtime.native import texts_from_bytes
from services.runtime.prefill import check_against_steps, scan_graph
from services.runtime.servable import Servable, TensorSpec
from services.runtime.sessions import create_session
from services.runtime.streaming import Generation
from services.textgen import routes
from services.v2_tensors import bytes_tensor

log = logging.getLogger("textgen")


class Stream:
    """One generation: text so far, stop strings, and the pieces made but not yet sent (SSE streaming).

    With ``flush_seconds`` > 0 the writer keeps its own time: the scheduler wakes it (``ready``) only for the
    first piece (time to first token) and for the end; in between, the writer waits ``flush_seconds`` and
    takes whatever was made meanwhile. Waking a thread costs the scheduler a system call and, on a small CPU,
    usually a context switch: with a wake-up per write, many streams spend much of the scheduler thread's time
    in them (FINDINGS). With 0, every piece wakes the writer.

    ``job()`` makes the generation with the callbacks the stream needs. Without stop strings (and with a
    writer that keeps its own time) the scheduler calls it twice, for the first token and the end, and the
    stream reads the text from the job's tokens when it is asked for it: the scheduler thread pays a list
    append per token and nothing more. With stop strings every token is checked as it is made
    (``on_token``), since the stream must end the moment one appears."""

    def __init__(self, model: CharModel, stop: list[str], streaming: bool, flush_seconds: float = 0.0):
        self.model, self.stop = model, stop
        self._text = ""
        self.pieces: deque | None = deque() if streaming else None
        self.ready = threading.Event()
        self.ended = False
        self.flush_seconds = flush_seconds
        self.woken = False  # the first piece has woken the writer
        self.last_piece = time.monotonic()
        self.source: SamplingJob | None = None  # the job whose tokens are read (without per-token checks)
        self.sent = 0  # how many of its tokens drain() has given out

    def job(self, prompt: str, max_tokens: int, temperature: float, top_k: int, top_p: float, seed: int):
        per_token = bool(self.stop) or (self.pieces is not None and not self.flush_seconds)
        callbacks: dict[str, Callable[..., Any]] = (dict(on_token=self.on_token) if per_token
                                                    else dict(on_first=self.first, on_end=self.end))
        job = self.model.job(prompt, max_tokens, temperature, top_k, top_p, seed, **callbacks)
        if not per_token:
            self.source = job
        return job

    @property
    def text(self) -> str:
        return self.model.text(self.source.tokens) if self.source is not None else self._text

    def first(self) -> None:
        """A piece the writer must not wait for (the first: time to first token): wake it."""
        self.woken = True
        if not self.ready.is_set():
            self.ready.set()

    def end(self) -> None:
        self.ended = True
        self.ready.set()

    def on_token(self, tok):
        if tok is None:  # the job finished
            self.end()
            return False
        piece = self.model.vocab.tokens[tok]
        self._text += piece
        for s in self.stop:
            if s and self._text.endswith(s):
                self._text = self._text[: -len(s)]
                return False
        if self.pieces is not None:
            self.pieces.append(piece)
            if not self.woken or not self.flush_seconds:
                self.first()
        return True

    def take(self, timeout: float, interval: float | None = None) -> tuple[list[str], bool]:
        """-> (every piece made since the last call, whether the stream has ended). Waits for the first piece
        (or the end); after it, for ``interval`` (default ``flush_seconds``; or the end). TimeoutError after
        ``timeout`` seconds without a piece."""
        if self.flush_seconds and self.woken:
            self.ready.wait(self.flush_seconds if interval is None else interval)  # returns early at the end
        elif not self.ready.wait(timeout):
            raise TimeoutError(f"no token within {timeout:.0f}s")
        self.ready.clear()  # before reading ``ended``: an end after this sets it again
        ended = self.ended  # read first: every piece of an ended stream is already in the deque
        out = self.drain()
        if not out and not ended and self.stalled(timeout):
            raise TimeoutError(f"no token within {timeout:.0f}s")
        return out, ended

    def drain(self) -> list[str]:
        """Every piece made since the last call, without waiting (a stream's last read)."""
        if self.source is not None:
            made = self.source.tokens[self.sent:]  # appended by the scheduler thread meanwhile: a copy
            self.sent += len(made)
            out = self.model.vocab.decode(made)
        else:
            out = []
            pieces = self.pieces
            while pieces:
                out.append(pieces.popleft())
        if out:
            self.last_piece = time.monotonic()
        return out

    def stalled(self, timeout: float) -> bool:
        """No piece for ``timeout`` seconds."""
        return time.monotonic() - self.last_piece > timeout


class TextgenServable(Servable):
    inputs = [TensorSpec("prompt", "BYTES", (-1,), "prompt text")]
    outputs = [TensorSpec("text", "BYTES", (-1,), "generated continuation")]

    def __init__(self, manifest, version_dir):
        super().__init__(manifest, version_dir)
        self.model = CharModel(manifest, self.dir, self.sessions["step"],
                               prefill_min_tokens=settings().prefill_min_tokens)
        if self.model.prefill_min_tokens > 0:
            self.model.prefill = self._prefill_session(manifest)
        self.timeout = settings().decode_timeout_seconds

    def _prefill_session(self, manifest):
        """The step graph's Scan (runtime/prefill.py), or None (logged) where it cannot be built or differs."""
        import onnx
        try:
            graph = scan_graph(onnx.load(str(self.dir / manifest["graphs"]["step"]["file"])), CharModel.TOKEN,
                               CharModel.STATES)
            sess = create_session(graph.SerializeToString())
            check_against_steps(sess, self.sessions["step"], CharModel.TOKEN, CharModel.STATES, len(self.model.vocab))
            return sess
        except Exception:  # noqa: BLE001 - without it prompts are read a token a tick, as before
            log.exception("textgen %s: no prefill graph; prompts are read one token per step", self.version)
            return None

    def warm_up(self):
        # a short prompt (read by the steps) and a long one (by the prefill graph, whose first call allocates)
        self.generate(["ROMEO:", "ROMEO:\n" * 8], dict(max_tokens=4, temperature=1.0, top_k=0, top_p=1.0, seed=0,
                                                       stop=[]))

    def check_prompt(self, prompt: str, field: str) -> None:
        unknown = sorted({ch for ch in prompt if ch not in self.model.vocab.index})
        if unknown:
            shown = "".join(unknown[:10])
            raise ApiError(f"'{field}' has characters the model never saw ({shown!r}); it knows "
                           f"{len(self.model.vocab) - 2} characters of English text", field=field)

    def start(self, prompts: list[str], opts: dict, streaming: bool = False, flush_seconds: float = 0.0):
        streams, jobs = [], []
        for i, p in enumerate(prompts):
            st = Stream(self.model, opts.get("stop", []), streaming, flush_seconds)
            jobs.append(st.job(p, opts["max_tokens"], opts["temperature"], opts["top_k"], opts["top_p"],
                               opts["seed"] + i))
            streams.append(st)
        submit_all(jobs)
        return streams, jobs

    def generation(self, prompts: list[str], opts: dict) -> Generation:
        """The prompts' generations as they are made, paced for a stream (``runtime/streaming.py``)."""
        streams, jobs = self.start(prompts, opts, streaming=True, flush_seconds=flush_seconds())
        return Generation(streams, jobs, self.timeout, flush_seconds())

    def stream(self, inputs, parameters) -> Generation:
        return self.generation(self._prompts(inputs), options(parameters))

    def _prompts(self, inputs) -> list[str]:
        prompts = texts_from_bytes(inputs["prompt"], "prompt", LIMITS["max_prompt_chars"])
        for p in prompts:
            self.check_prompt(p, "prompt")
        return prompts

    def generate(self, prompts: list[str], opts: dict):
        streams, jobs = self.start(prompts, opts)
        wait_all(jobs, self.timeout)
        return [(s.text, len(j.tokens), j.stop_reason) for s, j in zip(streams, jobs, strict=False)]

    def parameters(self) -> dict[str, dict]:
        return routes.parameters(LIMITS)

    def infer(self, inputs, parameters):
        done = self.generate(self._prompts(inputs), options(parameters))
        return {"text": bytes_tensor([t.encode("utf-8") for t, _, _ in done])}


def options(checked: dict) -> dict:
    """Sampling settings from a checked body or checked parameters (``textgen/routes.py``, defaults filled in)."""
    seed = checked.get("seed")
    return {"max_tokens": checked["max_tokens"], "temperature": checked["temperature"], "top_k": checked["top_k"],
            "top_p": checked["top_p"] or 1.0, "seed": random_seed() if seed is None else seed,
            "stop": stop_strings(checked.get("stop"))}


def flush_seconds() -> float:
    """After the first token (sent at once), a stream's request thread wakes every SSE_FLUSH_MS and sends every
    token made meanwhile in one write; the end goes at once. 10 ms is below one 60 Hz frame, so a reader sees
    no difference, while 32 streams stop spending the CPU on a write and a wake-up per token."""
    return settings().sse_flush_ms / 1000


def stop_strings(stop: str | list[str] | None) -> list[str]:
    """``stop`` as checked (``textgen/routes.STOP``): none, one string or a list of them."""
    return [] if stop is None else [stop] if isinstance(stop, str) else stop


def random_seed() -> int:
    return int(np.random.default_rng().integers(0, MAX_SEED))

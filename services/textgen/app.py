"""Text-generation service (port 9004): ``POST /api/generate`` (JSON, or ``stream: true`` for server-sent
events, one event per token and a final ``done`` event) plus /v1 and /v2 for model ``textgen``."""
from __future__ import annotations

import threading

import orjson
from flask import Blueprint

from services.runtime import native
from services.runtime.app import create_app as runtime_app
from services.runtime.http import event_stream
from services.textgen import openai_api
from services.textgen.model import TextgenServable, flush_seconds, options
from services.textgen.routes import GENERATE, ROUTES

api = Blueprint("textgen_api", __name__)
# All the streams of a worker together make at most this many writes a second (0: no limit): past
# SSE_WRITES_PER_SECOND * SSE_FLUSH_MS / 1000 streams (8 at 10 ms) each stream's interval grows with their
# number, so the cost of writing stays bounded while the tokens/s of continuous batching grows.
SSE_WRITES_PER_SECOND = 800.0
_streams_lock = threading.Lock()
_streams_open = 0


def _interval() -> float:
    if SSE_WRITES_PER_SECOND <= 0:
        return flush_seconds()
    return max(flush_seconds(), _streams_open / SSE_WRITES_PER_SECOND)


def _count_stream(delta: int) -> None:
    global _streams_open
    with _streams_lock:
        _streams_open += delta


_TOKEN_HEADS: dict[str, bytes] = {}  # a token event's bytes up to its index, per piece (a vocabulary entry)


def _token_head(piece: str) -> bytes:
    head = _TOKEN_HEADS[piece] = b'data: {"token":' + orjson.dumps(piece) + b',"index":'
    return head


def _sse(event: str | None, data: dict) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(data) + b"\n\n"


@native.endpoint(api, GENERATE, "textgen")
def generate(s, body):
    prompt, opts, stream = body["prompt"], options(body), body["stream"]
    s.check_prompt(prompt, "prompt")
    if not stream:
        text, n, reason = s.generate([prompt], opts)[0]
        return {"text": text, "tokens": n, "finish_reason": reason, "prompt": prompt, "seed": opts["seed"]}
    meta = {"model": s.name, "version": str(s.version), "device": s.device, "seed": opts["seed"]}
    streams, jobs = s.start([prompt], opts, streaming=True, flush_seconds=flush_seconds())
    st, job = streams[0], jobs[0]
    out = _Events(st, job, meta)

    def events():
        _count_stream(1)
        try:
            pieces, ended = st.take(s.timeout)  # the first piece is sent at once: time to first token
            if ended:
                yield out.events(pieces) + out.done()
                return
            yield out.events(pieces)
            while True:
                # one write for every token made since the last one: under load the scheduler runs ahead of
                # the socket, and a write per token would cost a system call each
                pieces, ended = (st.drain(), True) if st.ended else st.take(s.timeout, _interval())
                if ended:  # the last tokens and the done event in one write
                    yield out.events(pieces) + out.done()
                    break
                if pieces:
                    yield out.events(pieces)
        finally:
            _count_stream(-1)
            job.cancelled = True  # client went away (or we finished): free the row

    return event_stream(events())


class _Events:
    """One stream's server-sent events, numbered the same whichever thread writes them."""

    __slots__ = ("stream", "job", "meta", "index")

    def __init__(self, stream, job, meta: dict):
        self.stream, self.job, self.meta, self.index = stream, job, meta, 0

    def events(self, pieces: list[str]) -> bytes:
        """``data: {"token":...,"index":i}`` per piece: the bytes ``_sse`` makes, from each piece's encoded
        head, kept once per vocabulary entry."""
        index = self.index
        self.index += len(pieces)
        heads = _TOKEN_HEADS
        return b"".join([(heads.get(piece) or _token_head(piece)) + b"%d}\n\n" % (index + i)
                         for i, piece in enumerate(pieces)])

    def done(self) -> bytes:
        return _sse("done", {"text": self.stream.text, "tokens": len(self.job.tokens),
                             "finish_reason": self.job.stop_reason, **self.meta})


def create_app(**kw):
    app = runtime_app("textgen", {"textgen": TextgenServable}, api, ROUTES, **kw)
    app.register_blueprint(openai_api.bp)
    return app

"""Text-generation service (port 9004): ``POST /api/generate`` (JSON, or ``stream: true`` for server-sent
events, one event per token and a final ``done`` event) plus /v1 and /v2 for model ``textgen``."""
from __future__ import annotations

import orjson
from flask import Blueprint

from services.runtime import native
from services.runtime.app import create_app as runtime_app
from services.runtime.http import event_stream
from services.textgen import openai_api
from services.textgen.model import TextgenServable, options
from services.textgen.routes import GENERATE, ROUTES

api = Blueprint("textgen_api", __name__)
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
    generation = s.generation([prompt], opts)
    out = _Events(generation.streams[0], generation.jobs[0], meta)

    def events():
        for updates in generation:  # one stream: one update a write, its last with the done event
            update = updates[0]
            yield out.events(update.pieces) + (out.done() if update.ended else b"")

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

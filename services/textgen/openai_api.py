"""OpenAI-compatible completions for the text generator: ``POST /v1/completions`` (JSON, or ``stream: true`` for
``data:`` chunks ending in ``data: [DONE]``) and ``GET /v1/models``, on the same continuous-batching scheduler as
``/api/generate``. Errors have OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``), so the
``openai`` client raises its usual exceptions; a field this server cannot honour is refused, never ignored.
"""
from __future__ import annotations

import time

import orjson
from flask import Blueprint, current_app, g, request

from services.runtime import deadlines, native
from services.runtime.config import LIMITS
from services.runtime.errors import ApiError, NotFound
from services.runtime.http import event_stream, json_body, json_response
from services.textgen.model import MAX_SEED, flush_seconds, random_seed, stop_strings

bp = Blueprint("openai", __name__)
OWNER = "keras-onnx-serving"
SUPPORTED = ("model", "prompt", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "stream",
             "stream_options", "echo", "user")
# accepted only at the value that means "off", which is what clients such as LangChain send by default
NEUTRAL = {"best_of": (None, 1), "presence_penalty": (None, 0), "frequency_penalty": (None, 0),
           "logit_bias": (None, {}), "logprobs": (None, 0), "suffix": (None, "")}


@bp.errorhandler(ApiError)
def openai_error(exc: ApiError):
    kind = "invalid_request_error" if exc.status < 500 else "server_error"
    code = "model_not_found" if isinstance(exc, NotFound) and exc.field == "model" else None
    if exc.status == 429:
        kind, code = "rate_limit_error", "rate_limit_exceeded"
    return json_response({"error": {"message": exc.message, "type": kind, "param": exc.field, "code": code}},
                         exc.status)


@bp.get("/v1/models")
def models():
    """Every model with a loaded version; ``NAME:VERSION`` in a request picks an older loaded one."""
    repo = current_app.extensions["repository"]
    out = []
    for name in repo.names():
        if repo.is_ready(name):
            s = repo.get(name)
            out.append({"id": name, "object": "model", "created": int(s.dir.stat().st_mtime), "owned_by": OWNER})
    return json_response({"object": "list", "data": out})


def _request() -> tuple[object, dict]:
    body = json_body()
    read_timeout = request.headers.get("x-stainless-read-timeout", "")  # the openai client's own timeout
    try:
        deadlines.shorten(float(read_timeout))
    except ValueError:
        pass  # absent or not a number: the server's limit alone
    for field in body:
        if field in NEUTRAL:
            if body[field] not in NEUTRAL[field]:
                raise ApiError(f"'{field}' is not supported by this server (only {NEUTRAL[field][1]!r})",
                               field=field, limit=NEUTRAL[field][1])
        elif field not in SUPPORTED:
            raise ApiError(f"unknown or unsupported field '{field}'; supported: {', '.join(SUPPORTED)}",
                           field=field, limit=list(SUPPORTED))
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError("'model' is required: the name from GET /v1/models", field="model")
    name, _, version = model.partition(":")
    repo = current_app.extensions["repository"]
    if name not in repo.names():
        raise NotFound(f"the model '{model}' does not exist here; models: {', '.join(repo.names())}", field="model")
    s = repo.get(name, version or None)
    g.model, g.model_version = s.name, str(s.version)

    prompt = body.get("prompt", "<|endoftext|>")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ApiError("'prompt' must be a string or a non-empty list of strings (token ids are not supported: "
                       "the model reads characters)", field="prompt")
    prompts = ["" if p == "<|endoftext|>" else native.text(p, "prompt", LIMITS["max_prompt_chars"], True)
               for p in prompts]
    for p in prompts:
        s.check_prompt(p, "prompt")
    n = native.integer(body, "n", 1, 1, LIMITS["max_batch_items"])
    native.check_count(len(prompts) * n, "prompt", LIMITS["max_batch_items"])
    seed = native.integer(body, "seed", None, 0, MAX_SEED)
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise ApiError("'stream_options' must be an object", field="stream_options")
    native.unknown_in(stream_options, ["include_usage"], {}, "field", prefix="stream_options.")
    opts = {"max_tokens": native.integer(body, "max_tokens", 16, 1, LIMITS["max_new_tokens"]),
            "temperature": native.number(body, "temperature", 1.0, 0.0, 2.0),
            "top_p": native.number(body, "top_p", 1.0, 0.0, 1.0) or 1.0, "top_k": 0,
            "stop": stop_strings([] if body.get("stop") is None else body["stop"]), "seed": seed}
    return s, {"prompts": prompts, "n": n, "opts": opts, "stream": native.boolean(body, "stream", False),
               "echo": native.boolean(body, "echo", False), "model": model}


@bp.post("/v1/completions")
def completions():
    s, req = _request()
    # choice i*n+j: prompt i, sample j; with a seed every choice repeats (it samples with seed + its index)
    prompts = [p for p in req["prompts"] for _ in range(req["n"])]
    opts = req["opts"]
    if opts["seed"] is None:
        opts["seed"] = random_seed()
    head = {"id": f"cmpl-{g.request_id}", "object": "text_completion", "created": int(time.time()),
            "model": req["model"], "system_fingerprint": f"{s.name}-v{s.version}"}
    prompt_tokens = sum(len(s.model.prompt_ids(p)) for p in prompts)
    echo = req["echo"]
    if not req["stream"]:
        done = s.generate(prompts, opts)
        choices = [{"text": (prompts[i] if echo else "") + text, "index": i, "logprobs": None,
                    "finish_reason": _reason(reason)} for i, (text, _, reason) in enumerate(done)]
        return json_response({**head, "choices": choices, "usage": _usage(prompt_tokens, sum(d[1] for d in done))})

    streams, jobs = s.start(prompts, opts, streaming=True, flush_seconds=flush_seconds())

    def chunk(i: int, text: str, reason: str | None = None, **extra) -> bytes:
        choice = {"text": text, "index": i, "logprobs": None, "finish_reason": reason}
        return b"data: " + orjson.dumps({**head, "choices": [choice], **extra}) + b"\n\n"

    def events():
        try:
            if echo:
                yield b"".join(chunk(i, p) for i, p in enumerate(prompts))
            running = list(range(len(streams)))
            while running:
                out = []
                for k, i in enumerate(list(running)):
                    if k == 0:  # the first running stream paces the writes: its first piece at once, then a flush
                        pieces, ended = streams[i].take(s.timeout)
                    else:
                        ended = streams[i].ended  # before draining: an ended stream's pieces are all there
                        pieces = streams[i].drain()
                    if pieces:
                        out.append(chunk(i, "".join(pieces)))
                    if ended:
                        running.remove(i)
                        usage = {} if running else {"usage": _usage(prompt_tokens, sum(len(j.tokens) for j in jobs))}
                        out.append(chunk(i, "", _reason(jobs[i].stop_reason), **usage))
                if out:
                    yield b"".join(out)
            yield b"data: [DONE]\n\n"
        finally:
            for job in jobs:  # the client went away (or every choice ended): free the rows
                job.cancelled = True

    return event_stream(events())


def _reason(stop_reason: str | None) -> str:
    return "length" if stop_reason == "length" else "stop"


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}

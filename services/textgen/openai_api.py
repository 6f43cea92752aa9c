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
from services.textgen.model import random_seed, stop_strings

bp = Blueprint("openai", __name__)
OWNER = "keras-onnx-serving"


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
    body = {k: v for k, v in json_body().items() if v is not None}  # OpenAI's null: the default
    read_timeout = request.headers.get("x-stainless-read-timeout", "")  # the openai client's own timeout
    try:
        deadlines.shorten(float(read_timeout))
    except ValueError:
        pass  # absent or not a number: the server's limit alone
    body = native.checked("/v1/completions", body)
    model = body["model"]
    name, _, version = model.partition(":")
    repo = current_app.extensions["repository"]
    if name not in repo.names():
        raise NotFound(f"the model '{model}' does not exist here; models: {', '.join(repo.names())}", field="model")
    s = current_app.extensions["dataplane"].model(name, version or None)
    prompts = [body["prompt"]] if isinstance(body["prompt"], str) else body["prompt"]
    prompts = ["" if p == "<|endoftext|>" else p for p in prompts]
    for p in prompts:
        s.check_prompt(p, "prompt")
    native.check_count(len(prompts) * body["n"], "prompt", LIMITS["max_batch_items"])
    opts = {"max_tokens": body["max_tokens"], "temperature": body["temperature"], "top_p": body["top_p"] or 1.0,
            "top_k": 0, "stop": stop_strings(body.get("stop")), "seed": body.get("seed")}
    return s, {"prompts": prompts, "n": body["n"], "opts": opts, "stream": body["stream"], "echo": body["echo"],
               "model": model}


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

    generation = s.generation(prompts, opts)
    jobs = generation.jobs

    def chunk(i: int, text: str, reason: str | None = None, **extra) -> bytes:
        choice = {"text": text, "index": i, "logprobs": None, "finish_reason": reason}
        return b"data: " + orjson.dumps({**head, "choices": [choice], **extra}) + b"\n\n"

    def events():
        try:
            if echo:
                yield b"".join(chunk(i, p) for i, p in enumerate(prompts))
            running = len(prompts)
            for updates in generation:
                out = []
                for u in updates:
                    if u.pieces:
                        out.append(chunk(u.index, "".join(u.pieces)))
                    if u.ended:  # its finish reason; the last choice to end carries the usage
                        running -= 1
                        usage = {} if running else {"usage": _usage(prompt_tokens, generation.tokens())}
                        out.append(chunk(u.index, "", _reason(jobs[u.index].stop_reason), **usage))
                yield b"".join(out)
            yield b"data: [DONE]\n\n"
        finally:
            generation.cancel()  # a client gone after the echo, before the generation was read, frees its rows too

    return event_stream(events())


def _reason(stop_reason: str | None) -> str:
    return "length" if stop_reason == "length" else "stop"


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}

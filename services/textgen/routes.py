"""The text generator's routes (services/routes.py): the native ``/api/generate`` and OpenAI's completions and
model list; its sampling knobs are the same on ``/api/generate`` and as v1/v2 request parameters."""
from __future__ import annotations

from services.routes import SEED, Route, body

STOP_ONE = {"type": "string", "minLength": 1, "maxLength": 64}
STOP = {**STOP_ONE, "type": ["string", "array"], "items": STOP_ONE, "maxItems": 4,
        "description": "a string, or a list of up to 4 strings of 1..64 characters, that ends the text"}


def parameters(limits) -> dict:
    return {"max_tokens": {"type": "integer", "minimum": 1, "maximum": limits["max_new_tokens"], "default": 200},
            "temperature": {"type": "number", "minimum": 0, "maximum": 5, "default": 0.8},
            "top_k": {"type": "integer", "minimum": 0, "maximum": 100000, "default": 0, "description": "0: off"},
            "top_p": {"type": "number", "minimum": 0, "maximum": 1, "default": 1.0, "description": "0 or 1: off"},
            "seed": SEED, "stop": STOP}


def _generate(limits) -> dict:
    return body({"prompt": {"type": "string", "maxLength": limits["max_prompt_chars"], "default": ""},
                 **parameters(limits),
                 "stream": {"type": "boolean", "default": False,
                            "description": "server-sent events: one per token, then a 'done' event"}})


# OpenAI's fields that this server accepts only at the value that means "off", which is what clients such as
# LangChain send by default
NEUTRAL = {"best_of": 1, "presence_penalty": 0, "frequency_penalty": 0, "logit_bias": {}, "logprobs": 0, "suffix": ""}


def completion(limits) -> dict:
    prompt = {"type": "string", "maxLength": limits["max_prompt_chars"]}
    return {"type": "object", "additionalProperties": False, "required": ["model"], "properties": {
        "model": {"type": "string", "minLength": 1, "description": "a name from GET /v1/models (NAME:VERSION for an "
                                                                  "older loaded version)"},
        "prompt": {**prompt, "type": ["string", "array"], "items": prompt, "minItems": 1, "default": "<|endoftext|>",
                   "description": "a string or a non-empty list of strings (token ids are not supported: the "
                                  "model reads characters)"},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": limits["max_new_tokens"], "default": 16},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2, "default": 1.0},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1, "default": 1.0},
        "n": {"type": "integer", "minimum": 1, "maximum": limits["max_batch_items"], "default": 1},
        "stop": STOP, "seed": SEED,
        "stream": {"type": "boolean", "default": False}, "echo": {"type": "boolean", "default": False},
        "stream_options": {"type": "object", "additionalProperties": False,
                           "properties": {"include_usage": {"type": "boolean"}}},
        "user": {"type": "string"},
        **{k: {"const": v, "description": f"accepted only as {v!r}"} for k, v in NEUTRAL.items()}}}


GENERATE = Route("/api/generate", "Generate Shakespeare-like text (stream: true for server-sent events)", _generate,
                 {"prompt": "ROMEO:\n", "max_tokens": 200, "temperature": 0.7, "seed": 1},
                 hints={"text": "prompt", "max_length": "max_tokens", "max_new_tokens": "max_tokens",
                        "n_tokens": "max_tokens", "length": "max_tokens"},
                 answers={"text/event-stream": {"type": "string"}})
COMPLETIONS = Route("/v1/completions", "OpenAI completions for the text generator (stream: true for data: chunks "
                    "ending in data: [DONE])", completion,
                    {"model": "textgen", "prompt": "ROMEO:\n", "max_tokens": 40, "seed": 1}, tag="openai")
MODEL_LIST = Route("/v1/models", "OpenAI model list", lambda limits: {}, {}, method="GET", tag="openai")
ROUTES = (GENERATE, COMPLETIONS, MODEL_LIST)

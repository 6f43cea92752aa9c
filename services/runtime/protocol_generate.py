"""Triton's generate extension: ``POST /v2/models/NAME[/versions/V]/generate`` answers one JSON object,
``.../generate_stream`` the same objects as server-sent events while the text is made.

A request is ``{"text_input": "...", "parameters": {...}}``; as in Triton, any other property is a parameter
too. ``text_input`` is the model's one text (BYTES) input, and ``text_output`` its text output, so any model of
text in and text out answers ``generate`` (the text generator, translation); only one that makes its answer
as it goes (``Servable.stream``) answers ``generate_stream``. Both run through the data plane, with the
parameter checks and the deadline (v2's ``timeout``) of ``/infer``. Errors are ``{"error": "..."}``, Triton's
shape, before the stream starts; a stream that fails midway ends with an ``error`` object."""
from __future__ import annotations

import logging

import orjson
from flask import Blueprint, current_app

from services.runtime import codec
from services.runtime.dataplane import InferRequest
from services.runtime.errors import ApiError
from services.runtime.http import event_stream, json_body, json_response
from services.runtime.protocol_v2 import apply_timeout, model_parameters
from services.runtime.servable import Servable
from services.v2_tensors import bytes_tensor

bp = Blueprint("generate", __name__)
log = logging.getLogger("runtime.generate")


@bp.post("/v2/models/<name>/generate", defaults={"stream": False})
@bp.post("/v2/models/<name>/versions/<version>/generate", defaults={"stream": False})
@bp.post("/v2/models/<name>/generate_stream", defaults={"stream": True})
@bp.post("/v2/models/<name>/versions/<version>/generate_stream", defaults={"stream": True})
def generate(name: str, stream: bool, version: str | None = None):
    body = json_body()
    parameters = _parameters(body, stream)
    dataplane = current_app.extensions["dataplane"]
    apply_timeout(parameters)
    s = dataplane.model(name, version)
    text_in, text_out = _text_tensors(s)
    request = InferRequest(s, {text_in: bytes_tensor([body["text_input"].encode("utf-8")])},
                           model_parameters(parameters, {"stream"}))
    head = {"model_name": s.name, "model_version": str(s.version)}
    if not stream:
        outputs = dataplane.infer(request).outputs
        return json_response({**head, "text_output": outputs[text_out][0].decode("utf-8")})
    generation = dataplane.stream(request)

    def events():
        try:
            for updates in generation:  # one prompt: one update a write
                pieces = updates[0].pieces
                if pieces:
                    yield b"data: " + orjson.dumps({**head, "text_output": "".join(pieces)}) + b"\n\n"
        except TimeoutError as exc:  # the status went with the first event: the error is the last one
            log.warning("generate_stream ended early: %s", exc)
            yield b"data: " + orjson.dumps({"error": str(exc)}) + b"\n\n"

    return event_stream(events())


def _parameters(body: dict, stream: bool) -> dict:
    """The request's parameters: its ``parameters`` object and its other properties (Triton passes both on)."""
    text = body.get("text_input")
    if not isinstance(text, str):
        raise ApiError("'text_input' must be a string: the text to generate from", field="text_input")
    given = codec.v2_check_request({"parameters": body.get("parameters")}, [])  # v2's own check of the object
    extra = {k: v for k, v in body.items() if k not in ("text_input", "parameters")}
    both = sorted(set(extra) & set(given))
    if both:
        raise ApiError(f"'{both[0]}' is given twice, in 'parameters' and beside them: send it once",
                       field=both[0])
    parameters = {**given, **extra}
    if parameters.get("stream", stream) is not stream:
        raise ApiError(f"'stream' is {parameters['stream']!r} on {'generate_stream' if stream else 'generate'}: "
                       f"POST .../{'generate' if stream else 'generate_stream'} for "
                       f"{'one response' if stream else 'a stream'}", field="stream")
    return parameters


def _text_tensors(s: Servable) -> tuple[str, str]:
    """The model's one text input and its text output, or a 400 that says why it cannot generate."""
    text_inputs = [t.name for t in s.inputs if t.datatype == "BYTES" and not t.optional]
    text_outputs = [t.name for t in s.outputs if t.datatype == "BYTES"]
    required = [t.name for t in s.inputs if not t.optional]
    if len(text_inputs) != 1 or len(required) != 1 or not text_outputs:
        raise ApiError(f"model '{s.name}' does not take one text and answer text (inputs "
                       f"{[f'{t.name}:{t.datatype}' for t in s.inputs]}, outputs "
                       f"{[f'{t.name}:{t.datatype}' for t in s.outputs]}): use POST /v2/models/{s.name}/infer",
                       field="text_input")
    return text_inputs[0], text_outputs[0]

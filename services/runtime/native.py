"""The friendly native JSON API: one way to serve a declared route (``services/routes.py``), bodies checked
against the route's schema, and the checks a schema cannot express, whose failures name the field and the
limit."""
from __future__ import annotations

from typing import Callable

from flask import Blueprint, Response, current_app

from services.routes import Route
from services.runtime.dataplane import InferRequest
from services.runtime.errors import ApiError
from services.runtime.http import json_body, json_response


def endpoint(blueprint: Blueprint, route: Route, model: str | Callable[[dict], str],
             parse: Callable[[], dict] | None = None):
    """Serve ``route``. The body is read (JSON, or ``parse()``, which then checks its own fields: ``checked``),
    checked against the route's schema with its defaults filled in, and the model's servable looked up in the
    data plane (the body's ``version``, else the newest). The handler gets ``(servable, body)`` and returns a
    dict, sent as JSON with the model, version and device, or a Response."""
    def wrap(handler: Callable[..., dict | Response]):
        def view():
            body = parse() if parse else checked(route.path, json_body())
            s = current_app.extensions["dataplane"].model(model(body) if callable(model) else model,
                                                          body.get("version"))
            out = handler(s, body)
            if isinstance(out, Response):
                return out
            return json_response({**out, "model": s.name, "version": str(s.version), "device": s.device})
        blueprint.add_url_rule(route.path, handler.__name__, view, methods=[route.method])
        return handler
    return wrap


def infer(s, inputs: dict) -> dict:
    """A native route's tensors through the data plane's ``infer``: the checks and error messages of every
    protocol (names, shapes, batch limit, the runtime's faults as 4xx), then the servable."""
    return current_app.extensions["dataplane"].infer(InferRequest(s, inputs)).outputs


def checked(path: str, body: dict) -> dict:
    """``body`` checked against the schema of the route at ``path``, with the defaults of what it left out."""
    return current_app.extensions["bodies"][path](body)


def one_or_many(body: dict, one: str, many: str) -> tuple[list, bool]:
    """``{"text": x}`` or ``{"texts": [x, ...]}`` of a body its route's schema checked (the list and its length)
    -> (items, single)."""
    if (one in body) == (many in body):
        raise ApiError(f"send exactly one of '{one}' (one item) or '{many}' (a list)", field=one)
    if one in body:
        return [body[one]], True
    return body[many], False


def check_count(n: int, field: str, limit: int) -> None:
    if n > limit:
        raise ApiError(f"'{field}' has {n} items; the limit is {limit}", field=field, limit=limit)


def texts(body: dict, max_chars: int) -> tuple[list[str], bool]:
    """``{"text": s}`` or ``{"texts": [s, ...]}``, each checked -> (texts, single)."""
    items, single = one_or_many(body, "text", "texts")
    return [text(t, "text" if single else f"texts[{i}]", max_chars) for i, t in enumerate(items)], single


def text(value, field: str, max_chars: int, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ApiError(f"'{field}' must be a string", field=field)
    if len(value) > max_chars:
        raise ApiError(f"'{field}' has {len(value)} characters; the limit is {max_chars}", field=field,
                       limit=max_chars)
    if not allow_empty and not value.strip():
        raise ApiError(f"'{field}' is empty", field=field)
    return value


def texts_from_bytes(arr, field: str, max_chars: int) -> list[str]:
    """BYTES tensor (v1/v2) -> list of str, checked like native text."""
    out = []
    for i, b in enumerate(arr.reshape(-1)):
        try:
            s = b.decode("utf-8") if isinstance(b, bytes) else str(b)
        except UnicodeDecodeError:
            raise ApiError(f"input '{field}'[{i}] is not valid UTF-8", field=field) from None
        out.append(text(s, field, max_chars, allow_empty=True))
    return out

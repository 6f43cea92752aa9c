"""The friendly native JSON API: one way to declare a route, and checks whose failures name the field and the
limit."""
from __future__ import annotations

import difflib
import math
from typing import Callable

from flask import Blueprint, Response, current_app, g

from services.runtime import schemas
from services.runtime.errors import ApiError
from services.runtime.http import json_body, json_response


def endpoint(blueprint: Blueprint, path: str, model: str | Callable[[dict], str],
             parse: Callable[[], dict] | None = None):
    """A native ``POST`` route. The body is read (JSON, or ``parse()``, which then checks its own fields), its
    fields checked against the route's schema, the model's servable looked up (the body's ``version``, else the
    newest) and recorded for metrics and logs. The handler gets ``(servable, body)`` and returns a dict, sent as
    JSON with the model, version and device, or a Response."""
    def wrap(handler: Callable[..., dict | Response]):
        def view():
            body = parse() if parse else json_body()
            if parse is None:
                known_fields(body, path)
            s = current_app.extensions["repository"].get(model(body) if callable(model) else model,
                                                         body.get("version"))
            g.model, g.model_version = s.name, str(s.version)
            out = handler(s, body)
            if isinstance(out, Response):
                return out
            return json_response({**out, "model": s.name, "version": str(s.version), "device": s.device})
        blueprint.add_url_rule(path, handler.__name__, view, methods=["POST"])
        return handler
    return wrap


def known_fields(body: dict, route: str) -> None:
    """Refuse a field the route's schema does not name (a typo must not be ignored), suggesting the closest."""
    schema = schemas.native()[route]
    unknown_in(body, list(schema["properties"]), schemas.HINTS.get(route, {}), "field")
    nested = {k: v for k, v in schema["properties"].items() if v.get("type") == "object"}
    for name, sub in nested.items():
        if isinstance(body.get(name), dict):
            unknown_in(body[name], list(sub["properties"]), {}, "field", prefix=f"{name}.")


def unknown_in(given: dict, accepted: list[str], hints: dict, what: str, prefix: str = "") -> None:
    for key in given:
        if key in accepted:
            continue
        close = hints.get(key) or next(iter(difflib.get_close_matches(str(key), accepted, 1, 0.6)), None)
        mean = f" (did you mean '{close}'?)" if close else ""
        raise ApiError(f"unknown {what} '{prefix}{key}'{mean}; accepted: {', '.join(sorted(accepted))}",
                       field=f"{prefix}{key}", limit=sorted(accepted))


def one_or_many(body: dict, one: str, many: str, limit: int) -> tuple[list, bool]:
    """``{"text": x}`` or ``{"texts": [x, ...]}`` -> (items, single)."""
    if (one in body) == (many in body):
        raise ApiError(f"send exactly one of '{one}' (one item) or '{many}' (a list)", field=one)
    if one in body:
        return [body[one]], True
    items = body[many]
    if not isinstance(items, list) or not items:
        raise ApiError(f"'{many}' must be a non-empty list", field=many, limit=limit)
    check_count(len(items), many, limit)
    return items, False


def check_count(n: int, field: str, limit: int) -> None:
    if n > limit:
        raise ApiError(f"'{field}' has {n} items; the limit is {limit}", field=field, limit=limit)


def texts(body: dict, limit: int, max_chars: int) -> tuple[list[str], bool]:
    """``{"text": s}`` or ``{"texts": [s, ...]}``, each checked -> (texts, single)."""
    items, single = one_or_many(body, "text", "texts", limit)
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


def integer(body: dict, field: str, default, lo: int, hi: int, text_ok: bool = False) -> int:
    """``text_ok``: v1/v2 request parameters, which some clients send as strings ("4")."""
    v = body.get(field, default)
    if v is None:
        return default
    if text_ok and isinstance(v, str) and v.lstrip("-").isdigit():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        else:
            raise ApiError(f"'{field}' must be an integer in {lo}..{hi}", field=field, limit=[lo, hi])
    if not lo <= v <= hi:
        raise ApiError(f"'{field}' is {v}; it must lie in {lo}..{hi}", field=field, limit=[lo, hi])
    return v


def number(body: dict, field: str, default: float, lo: float, hi: float) -> float:
    v = body.get(field, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ApiError(f"'{field}' must be a finite number in {lo}..{hi}", field=field, limit=[lo, hi])
    if not lo <= v <= hi:
        raise ApiError(f"'{field}' is {v}; it must lie in {lo}..{hi}", field=field, limit=[lo, hi])
    return float(v)


def choice(body: dict, field: str, default: str, options: list[str]) -> str:
    v = body.get(field, default)
    if v not in options:
        raise ApiError(f"'{field}' must be one of {options}", field=field, limit=options)
    return v


def boolean(body: dict, field: str, default: bool) -> bool:
    v = body.get(field, default)
    if not isinstance(v, bool):
        raise ApiError(f"'{field}' must be true or false", field=field)
    return v


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

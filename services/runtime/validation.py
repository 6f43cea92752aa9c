"""JSON bodies and request parameters checked against their JSON schema (``jsonschema``), with errors that name
the field and, where there is one, the limit. An unknown field is refused by name, with the field that was
probably meant; a missing field takes the schema's ``default``."""
from __future__ import annotations

import difflib
import math
from collections.abc import Mapping

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, relevance

from services.runtime.errors import ApiError

_KINDS = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
          "array": "a list", "object": "a JSON object"}


class Checked:
    """One schema, compiled once. ``what`` names an entry in errors ("field", "parameter")."""

    def __init__(self, schema: dict, hints: Mapping[str, str] | None = None, what: str = "field"):
        self.schema, self.hints, self.what = schema, dict(hints or {}), what
        self.validator = Draft202012Validator(schema)

    def __call__(self, given: dict, numbers_as_text: bool = False) -> dict:
        """-> ``given`` with the defaults of what it left out; raises ApiError. ``numbers_as_text``: v1/v2
        parameters, which some clients send as strings ("4")."""
        unknown_in(given, self.schema, self.hints, self.what)
        if numbers_as_text:
            given = {k: _number(v) if _is_numeric(self.schema["properties"].get(k)) else v for k, v in given.items()}
        errors = list(self.validator.iter_errors(given))
        if errors:  # the most relevant, not one inside a oneOf's branches: the field as a whole is named
            raise api_error(max(errors, key=relevance), self.what)
        return with_defaults(self.schema, given)


def with_defaults(schema: dict, given: dict) -> dict:
    """``given`` and, for what it left out, the schema's defaults (in nested objects too)."""
    out = dict(given)
    for key, sub in schema.get("properties", {}).items():
        if key not in out:
            if "default" in sub:
                out[key] = sub["default"]
        elif isinstance(out[key], dict) and sub.get("type") == "object":
            out[key] = with_defaults(sub, out[key])
    return out


def unknown_in(given: dict, schema: dict, hints: Mapping[str, str], what: str, prefix: str = "") -> None:
    """Refuse a key the schema does not name (a typo must not be ignored), suggesting the closest; nested objects
    that take no other keys are checked too."""
    accepted = list(schema.get("properties", {}))
    for key in given:
        if key not in accepted:
            close = hints.get(key) or next(iter(difflib.get_close_matches(str(key), accepted, 1, 0.6)), None)
            mean = f" (did you mean '{close}'?)" if close else ""
            raise ApiError(f"unknown {what} '{prefix}{key}'{mean}; accepted: {', '.join(sorted(accepted))}",
                           field=f"{prefix}{key}", limit=sorted(accepted))
        sub = schema["properties"][key]
        if isinstance(given[key], dict) and sub.get("type") == "object" and sub.get("additionalProperties") is False:
            unknown_in(given[key], sub, {}, what, prefix=f"{prefix}{key}.")


def api_error(err: ValidationError, what: str = "field") -> ApiError:
    """A schema violation as the 400 a client reads: the field, what it must be, and the limit."""
    field = _field(err.absolute_path) or "body"
    s, value, kind = err.schema, err.instance, err.validator
    lo, hi = (s.get("minimum"), s.get("maximum")) if isinstance(s, dict) else (None, None)
    span = f"{'' if lo is None else lo}..{'' if hi is None else hi}"
    if kind in ("minimum", "maximum"):
        return ApiError(f"'{field}' is {value}; it must lie in {span}", field=field, limit=[lo, hi])
    if kind == "type":
        if isinstance(s["type"], list):  # a field of several forms: its description names them
            return ApiError(f"'{field}' must be {s.get('description') or ' or '.join(_KINDS[t] for t in s['type'])}",
                            field=field)
        want = _KINDS.get(str(s["type"]), str(s["type"]))
        if lo is not None or hi is not None:
            return ApiError(f"'{field}' must be {want} in {span}", field=field, limit=[lo, hi])
        return ApiError(f"'{field}' must be {want}", field=field)
    if kind == "maxLength":
        return ApiError(f"'{field}' has {len(value)} characters; the limit is {s['maxLength']}", field=field,
                        limit=s["maxLength"])
    if kind == "minLength":
        return ApiError(f"'{field}' is empty", field=field)
    if kind == "maxItems":
        return ApiError(f"'{field}' has {len(value)} items; the limit is {s['maxItems']}", field=field,
                        limit=s["maxItems"])
    if kind == "minItems":
        return ApiError(f"'{field}' needs at least {s['minItems']} item(s)", field=field, limit=s["minItems"])
    if kind == "const":
        return ApiError(f"'{field}' is not supported by this server (only {s['const']!r})", field=field,
                        limit=s["const"])
    if kind == "enum":
        return ApiError(f"'{field}' must be one of {s['enum']}", field=field, limit=s["enum"])
    if kind == "required":
        missing = str(err.message).split("'")[1]
        name = f"{field}.{missing}" if err.absolute_path else missing
        return ApiError(f"'{name}' is required", field=name)
    if kind in ("oneOf", "anyOf"):
        return ApiError(f"'{field}' must be {s.get('description') or 'one of the accepted forms'}", field=field)
    return ApiError(f"'{field}': {err.message}", field=field)


def _field(path) -> str:
    """("texts", 2) -> texts[2]; ("interpolate", "steps") -> interpolate.steps."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _is_numeric(schema: dict | None) -> bool:
    return schema is not None and schema.get("type") in ("integer", "number")


def _number(value):
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                return value
            return number if math.isfinite(number) else value  # "nan" stays text, refused as not a number
    return value

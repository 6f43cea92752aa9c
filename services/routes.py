"""How a service declares a route of its own, once, where it is served: the path, the JSON schema of its body,
an example and a summary. The service validates requests against the schema; the catalog, the gateway's routing,
its OpenAPI document and its 404 hints are derived from the same declarations. Light on purpose: the gateway
reads the declarations without loading any model code.

A field of several forms is one schema with a list of types (each keyword applies to its own type) rather than a
``oneOf``: jsonschema checks the one in a fraction of the time it takes for the other."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

MAX_SEED = 2**32 - 1
SEED = {"type": "integer", "minimum": 0, "maximum": MAX_SEED, "description": "the same seed gives the same answer"}
VERSION = {"type": ["string", "integer"], "description": "model version (default: the newest ready one)"}


@dataclass(frozen=True)
class Route:
    path: str
    summary: str
    schema: Callable[[Mapping[str, int]], dict]  # the limits (LIMITS) -> the JSON schema of the request body
    example: dict
    method: str = "POST"
    hints: Mapping[str, str] = field(default_factory=dict)  # a field users write by habit -> the one meant here
    tag: str = "native"
    answers: Mapping[str, dict] = field(default_factory=dict)  # media type -> schema, beside JSON's object


def texts(limits) -> dict:
    """``text`` or ``texts``: one English text or a batch of them (the sentiment and translation routes)."""
    one = {"type": "string", "minLength": 1, "maxLength": limits["max_text_chars"]}
    return {"text": one, "texts": {"type": "array", "items": one, "minItems": 1, "maxItems": limits["max_batch_items"]}}


def body(properties: dict, required: tuple[str, ...] = ()) -> dict:
    """A native body: these fields and ``version``, nothing else."""
    out = {"type": "object", "additionalProperties": False, "properties": {**properties, "version": VERSION}}
    if required:
        out["required"] = list(required)
    return out


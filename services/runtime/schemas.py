"""The native API's request bodies, one JSON schema per route: the services refuse a field a schema does not
name (``native.known_fields``), and the gateway's OpenAPI document is built from the same schemas, so the
documentation and the validation cannot drift apart."""
from __future__ import annotations

import functools

from services.settings import ServiceSettings

MAX_SEED = 2**32 - 1
# what users coming from the other routes write, and what they meant on this one
HINTS = {"/api/generate": {"text": "prompt", "max_length": "max_tokens", "max_new_tokens": "max_tokens",
                           "n_tokens": "max_tokens", "length": "max_tokens"},
         "/api/translate": {"beam": "beam_size", "num_beams": "beam_size", "max_tokens": "max_length",
                            "source": "text", "sentence": "text"},
         "/api/sentiment/predict": {"review": "text", "sentence": "text"},
         "/api/gan/sample": {"count": "n", "num": "n"},
         "/api/mnist/predict": {"img": "image", "data": "image", "instances": "images"}}
# Open Inference Protocol request parameters that are the protocol's, not a model's (tritonclient sends some)
V2_PROTOCOL_PARAMETERS = {"binary_data_output", "sequence_id", "sequence_start", "sequence_end", "priority",
                          "timeout", "headers"}
_VERSION = {"oneOf": [{"type": "string"}, {"type": "integer"}],
            "description": "model version (default: the newest ready one)"}


def native() -> dict[str, dict]:
    """Route -> the JSON schema of its request body, with this process's limits (built once per settings: the
    services check every request's fields against it)."""
    return _native(ServiceSettings.load())


@functools.lru_cache(maxsize=4)
def _native(settings: ServiceSettings) -> dict[str, dict]:
    limits = settings.limits
    n = limits["max_batch_items"]
    pixel_grid = {"type": "array", "minItems": 28, "maxItems": 28,
                  "items": {"type": "array", "minItems": 28, "maxItems": 28,
                            "items": {"type": "number", "minimum": 0, "maximum": 255}}}
    image_item = {"oneOf": [{"type": "string", "description": "base64 PNG/JPEG"}, pixel_grid]}
    texts = {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": n}
    return {
        "/api/mnist/predict": _obj({"image": image_item, "images": {"type": "array", "items": image_item,
                                                                    "minItems": 1, "maxItems": n}}),
        "/api/sentiment/predict": _obj({"text": {"type": "string", "maxLength": limits["max_text_chars"]},
                                        "texts": texts}),
        "/api/translate": _obj({
            "text": {"type": "string", "maxLength": limits["max_text_chars"]}, "texts": texts,
            "model": {"type": "string", "enum": ["transformer", "seq2seq"]},
            "beam_size": {"type": "integer", "minimum": 1, "maximum": limits["max_beam_size"]},
            "max_length": {"type": "integer", "minimum": 1, "maximum": limits["max_translation_tokens"]},
            "return_scores": {"type": "boolean"}}),
        "/api/generate": _obj({
            "prompt": {"type": "string", "maxLength": limits["max_prompt_chars"]},
            "max_tokens": {"type": "integer", "minimum": 1, "maximum": limits["max_new_tokens"]},
            "temperature": {"type": "number", "minimum": 0, "maximum": 5},
            "top_k": {"type": "integer", "minimum": 0}, "top_p": {"type": "number", "minimum": 0, "maximum": 1},
            "seed": {"type": "integer", "minimum": 0, "maximum": MAX_SEED},
            "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}]},
            "stream": {"type": "boolean"}}),
        "/api/gan/sample": _obj({
            "n": {"type": "integer", "minimum": 1, "maximum": limits["max_samples"]},
            "seed": {"type": "integer", "minimum": 0, "maximum": MAX_SEED},
            "latent": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
            "interpolate": {"type": "object", "additionalProperties": False,
                            "properties": {"from_seed": {"type": "integer"}, "to_seed": {"type": "integer"},
                                           "steps": {"type": "integer", "minimum": 2}}},
            "format": {"type": "string", "enum": ["json", "png"]},
            "columns": {"type": "integer", "minimum": 1}}),
    }


def _obj(properties: dict) -> dict:
    return {"type": "object", "additionalProperties": False, "properties": {**properties, "version": _VERSION}}

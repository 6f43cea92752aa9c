"""The GAN service's native route (services/routes.py)."""
from __future__ import annotations

from services.routes import SEED, Route, body


def _sample(limits) -> dict:
    n = limits["max_samples"]
    return body({
        "n": {"type": "integer", "minimum": 1, "maximum": n, "default": 1},
        "seed": SEED,
        "latent": {"type": "array", "minItems": 1, "maxItems": n, "items": {"type": "array"},
                   "description": "latent vectors to draw, values within -100..100 (checked as an array)"},
        "interpolate": {"type": "object", "additionalProperties": False, "required": ["from_seed", "to_seed"],
                        "description": "digits on the way from one seed's latent to another's",
                        "properties": {"from_seed": SEED, "to_seed": SEED,
                                       "steps": {"type": "integer", "minimum": 2, "maximum": n, "default": 8}}},
        "format": {"type": "string", "enum": ["json", "png"], "default": "json"},
        "columns": {"type": "integer", "minimum": 1, "maximum": n, "description": "of the PNG grid"}})


SAMPLE = Route("/api/gan/sample", "Sample digits from the GAN", _sample, {"n": 16, "seed": 7, "format": "json"},
               hints={"count": "n", "num": "n"}, answers={"image/png": {"type": "string", "format": "binary"}})
ROUTES = (SAMPLE,)

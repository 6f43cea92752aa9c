"""The MNIST service's native route (services/routes.py)."""
from __future__ import annotations

from services.routes import Route, body


def _predict(limits) -> dict:
    grid = {"type": "array", "minItems": 28, "maxItems": 28, "description": "28 rows of 28 pixels, 0..255",
            "items": {"type": "array", "minItems": 28, "maxItems": 28,
                      "items": {"type": "number", "minimum": 0, "maximum": 255}}}
    image = {"oneOf": [{"type": "string", "description": "base64 PNG/JPEG"}, grid],
             "description": "a base64 PNG/JPEG string or a 28x28 grid of 0..255"}
    return body({"image": image, "images": {"type": "array", "items": image, "minItems": 1,
                                            "maxItems": limits["max_batch_items"]}})


ROUTES = (Route("/api/mnist/predict", "Classify handwritten digits (JSON, a multipart upload or a raw image)",
                _predict, {"images": [[[0] * 28] * 28]}, hints={"img": "image", "data": "image",
                                                                 "instances": "images"}),)

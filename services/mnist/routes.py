"""The MNIST service's native route (services/routes.py)."""
from __future__ import annotations

from services.routes import Route, body


def _predict(limits) -> dict:
    # the pixels are checked as an array where they are decoded (mnist.model.decode_item): a schema per number
    # costs a Python call each, which made a request several times slower (FINDINGS)
    image = {"type": ["string", "array"], "minItems": 28, "maxItems": 28,
             "description": "a base64 PNG/JPEG string or a 28x28 grid of 0..255"}
    return body({"image": image, "images": {"type": "array", "items": image, "minItems": 1,
                                            "maxItems": limits["max_batch_items"]}})


PREDICT = Route("/api/mnist/predict", "Classify handwritten digits (JSON, a multipart upload or a raw image)",
                _predict, {"images": [[[0] * 28] * 28]}, hints={"img": "image", "data": "image",
                                                                 "instances": "images"})
ROUTES = (PREDICT,)

"""MNIST service (port 9001): ``POST /api/mnist/predict`` plus /v1 and /v2 for model ``mnist``."""
from __future__ import annotations

import numpy as np
from flask import Blueprint, current_app, g

from services.mnist.model import MnistServable, decode_item
from services.runtime.app import create_app as runtime_app
from services.runtime.config import LIMITS
from services.runtime.errors import ApiError
from services.runtime.http import json_body, json_response

api = Blueprint("mnist_api", __name__)


@api.post("/api/mnist/predict")
def predict():
    body = json_body()
    if ("image" in body) == ("images" in body):
        raise ApiError("send exactly one of 'image' (one item) or 'images' (a list)", field="image")
    single = "image" in body
    items = [body["image"]] if single else body["images"]
    if not isinstance(items, list) or not items:
        raise ApiError("'images' must be a non-empty list", field="images", limit=LIMITS["max_batch_items"])
    if len(items) > LIMITS["max_batch_items"]:
        raise ApiError(f"'images' has {len(items)} items; the limit is {LIMITS['max_batch_items']}",
                       field="images", limit=LIMITS["max_batch_items"])
    x = np.stack([decode_item(it, "image" if single else f"images[{i}]") for i, it in enumerate(items)])[..., None]
    s = current_app.extensions["repository"].get("mnist", body.get("version"))
    g.model, g.model_version = s.name, str(s.version)
    probs = s.infer({"image": x}, {})["probabilities"]
    preds = [{"digit": int(p.argmax()), "confidence": float(p.max()), "probabilities": [round(float(v), 6) for v in p]}
             for p in probs]
    return json_response({"predictions": preds, "model": s.name, "version": str(s.version), "device": s.device})


def create_app(**kw):
    return runtime_app("mnist", {"mnist": MnistServable}, api, **kw)

"""MNIST service (port 9001): ``POST /api/mnist/predict`` plus /v1 and /v2 for model ``mnist``."""
from __future__ import annotations

import numpy as np
from flask import Blueprint, request

from services.mnist.model import MnistServable, decode_item, image_to_mnist
from services.mnist.routes import PREDICT, ROUTES
from services.runtime import native
from services.runtime.app import create_app as runtime_app
from services.runtime.config import LIMITS
from services.runtime.errors import ApiError, UnsupportedMediaType
from services.runtime.http import json_body
from services.runtime.images import IMAGE_MAGIC, raw_image
from services.runtime.validation import unknown_in

api = Blueprint("mnist_api", __name__)


ACCEPTED = ("a JSON object ({\"image\": ...} or {\"images\": [...]}), a multipart/form-data upload "
            "(curl -F image=@digit.png; several 'images' files for a batch), or a raw image/png, image/jpeg or "
            "image/webp body")


def _images() -> dict:
    """The request as {"x": images [N,28,28,1], "version": ...}: JSON, a multipart upload or a raw image."""
    x, version = _uploaded() if _is_upload() else _from_json()
    return {"x": x, "version": version}


@native.endpoint(api, PREDICT, "mnist", parse=_images)
def predict(s, body):
    probs = native.infer(s, {"image": body["x"]})["probabilities"]
    return {"predictions": [{"digit": int(p.argmax()), "confidence": float(p.max()),
                             "probabilities": [round(float(v), 6) for v in p]} for p in probs]}


def _is_upload() -> bool:
    return request.mimetype == "multipart/form-data" or request.mimetype.startswith("image/") or \
        request.get_data(cache=True)[:8].startswith(IMAGE_MAGIC)


def _uploaded() -> tuple[np.ndarray, str | None]:
    """Image files: multipart fields 'image' (one) or 'images' (several), or the whole body as one image."""
    if request.mimetype == "multipart/form-data":
        unknown_in({**request.form, **request.files}, {"properties": {"image": {}, "images": {}, "version": {}}}, {},
                   "form field")
        files = [(f"images[{i}]" if k == "images" else k, f) for k in ("image", "images")
                 for i, f in enumerate(request.files.getlist(k))]
        if not files:
            raise ApiError("the upload has no file: send it as 'image' (curl -F image=@digit.png)", field="image")
        native.check_count(len(files), "images", LIMITS["max_batch_items"])
        x = np.stack([image_to_mnist(raw_image(f.read(LIMITS["max_image_bytes"] + 1), name), name)
                      for name, f in files])
        return x[..., None], request.form.get("version")
    if request.mimetype.startswith("image/") and request.mimetype not in ("image/png", "image/jpeg", "image/webp"):
        raise UnsupportedMediaType(f"Content-Type {request.mimetype} is not accepted; send {ACCEPTED}",
                                   field="Content-Type")
    x = image_to_mnist(raw_image(request.get_data(cache=False), "image"), "image")
    return x[None, ..., None], request.args.get("version")


def _from_json() -> tuple[np.ndarray, str | None]:
    try:
        body = json_body()
    except ApiError:
        if request.get_data(cache=True)[:1].strip() not in (b"{", b""):  # not JSON at all
            raise UnsupportedMediaType(f"this body is neither JSON nor an image; send {ACCEPTED}",
                                       field="Content-Type") from None
        raise
    body = native.checked(PREDICT.path, body)
    items, single = native.one_or_many(body, "image", "images")
    x = np.stack([decode_item(it, "image" if single else f"images[{i}]") for i, it in enumerate(items)])[..., None]
    return x, body.get("version")


def create_app(**kw):
    return runtime_app("mnist", {"mnist": MnistServable}, api, ROUTES, **kw)

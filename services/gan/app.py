"""GAN service (port 9005): ``POST /api/gan/sample`` plus /v1 and /v2 for model ``gan``."""
from __future__ import annotations

import numpy as np
from flask import Blueprint, Response

from services.gan.model import GanServable, png_grid, to_uint8
from services.gan.routes import ROUTES, SAMPLE
from services.routes import MAX_SEED
from services.runtime import native
from services.runtime.app import create_app as runtime_app
from services.runtime.errors import ApiError
from services.runtime.http import json_response

api = Blueprint("gan_api", __name__)


@native.endpoint(api, SAMPLE, "gan")
def sample(s, body):
    given = [k for k in ("latent", "interpolate") if k in body]
    if len(given) > 1:
        raise ApiError("send at most one of 'latent' or 'interpolate' (with 'seed' and 'n' otherwise)", field=given[1])
    seed = body.get("seed")
    if "latent" in body:
        z = _latents(body["latent"], s.latent_dim)
    elif "interpolate" in body:
        ip = body["interpolate"]
        z = s.interpolate(ip["from_seed"], ip["to_seed"], ip["steps"])
    else:
        if seed is None:
            seed = int(np.random.default_rng().integers(0, MAX_SEED))
        z = s.latents_from_seed(seed, body["n"])
    images = to_uint8(native.infer(s, {"latent": z})["image"])
    headers = {"X-Model-Version": str(s.version), "X-Model-Device": s.device}
    if seed is not None:
        headers["X-Seed"] = str(seed)
    if body["format"] == "png":
        cols = body.get("columns")
        return Response(png_grid(images, cols), 200, mimetype="image/png", headers=headers)
    return json_response({"images": images.tolist(), "n": len(images), "seed": seed, "model": s.name,
                          "version": str(s.version), "device": s.device}, headers=headers)  # with its headers


def _latents(vectors: list, width: int) -> np.ndarray:
    """The vectors as one array, checked as an array (not number by number)."""
    try:
        z = np.asarray(vectors, dtype=np.float32)
    except (ValueError, TypeError):
        z = None
    if z is None or z.ndim != 2 or z.shape[1] != width:
        raise ApiError(f"'latent' must be a list of vectors of {width} numbers", field="latent", limit=width)
    if not np.all(np.abs(z) <= 100):
        raise ApiError("'latent' values must lie within -100..100", field="latent", limit=[-100, 100])
    return z


def create_app(**kw):
    return runtime_app("gan", {"gan": GanServable}, api, ROUTES, **kw)

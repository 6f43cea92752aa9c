"""GAN service (port 9005): ``POST /api/gan/sample`` plus /v1 and /v2 for model ``gan``."""
from __future__ import annotations

import numpy as np
from flask import Blueprint, Response

from services.gan.model import GanServable, png_grid, to_uint8
from services.runtime import native
from services.runtime.config import LIMITS
from services.runtime.errors import ApiError
from services.runtime.app import create_app as runtime_app
from services.runtime.http import json_response

api = Blueprint("gan_api", __name__)
MAX_SEED = 2**32 - 1


@native.endpoint(api, "/api/gan/sample", "gan")
def sample(s, body):
    limit = LIMITS["max_samples"]
    fmt = native.choice(body, "format", "json", ["json", "png"])
    given = [k for k in ("latent", "interpolate") if k in body]
    if len(given) > 1:
        raise ApiError("send at most one of 'latent' or 'interpolate' (with 'seed' and 'n' otherwise)", field=given[1])
    seed = native.integer(body, "seed", None, 0, MAX_SEED)
    if "latent" in body:
        lat = body["latent"]
        try:
            z = np.asarray(lat, dtype=np.float32)
        except (ValueError, TypeError):
            raise ApiError(f"'latent' must be a list of {s.latent_dim}-number vectors", field="latent") from None
        if z.ndim != 2 or z.shape[1] != s.latent_dim or not 1 <= z.shape[0] <= limit:
            raise ApiError(f"'latent' must be 1..{limit} vectors of {s.latent_dim} numbers", field="latent",
                           limit=limit)
        if not np.all(np.isfinite(z)) or np.abs(z).max() > 100:
            raise ApiError("'latent' values must be finite and within -100..100", field="latent", limit=[-100, 100])
    elif "interpolate" in body:
        ip = body["interpolate"]
        if not isinstance(ip, dict):
            raise ApiError("'interpolate' must be an object {from_seed, to_seed, steps}", field="interpolate")
        a = native.integer(ip, "from_seed", None, 0, MAX_SEED)
        b = native.integer(ip, "to_seed", None, 0, MAX_SEED)
        if a is None or b is None:
            raise ApiError("'interpolate' needs 'from_seed' and 'to_seed'", field="interpolate.from_seed")
        steps = native.integer(ip, "steps", 8, 2, limit)
        z = s.interpolate(a, b, steps)
    else:
        n = native.integer(body, "n", 1, 1, limit)
        if seed is None:
            seed = int(np.random.default_rng().integers(0, MAX_SEED))
        z = s.latents_from_seed(seed, n)
    images = to_uint8(s.infer({"latent": z}, {})["image"])
    headers = {"X-Model-Version": str(s.version), "X-Model-Device": s.device}
    if seed is not None:
        headers["X-Seed"] = str(seed)
    if fmt == "png":
        cols = native.integer(body, "columns", None, 1, limit)
        return Response(png_grid(images, cols), 200, mimetype="image/png", headers=headers)
    return json_response({"images": images.tolist(), "n": len(images), "seed": seed, "model": s.name,
                          "version": str(s.version), "device": s.device}, headers=headers)  # with its headers


def create_app(**kw):
    return runtime_app("gan", {"gan": GanServable}, api, **kw)

"""MNIST servable: image decoding as MNIST expects it, and the batched classifier."""
from __future__ import annotations

import base64
import binascii

import numpy as np
from PIL import Image

from services.runtime.config import LIMITS
from services.runtime.errors import ApiError
from services.runtime.images import raw_image
from services.runtime.servable import Servable, TensorSpec


class MnistServable(Servable):
    inputs = [TensorSpec("image", "FP32", (-1, 28, 28, 1), "white digit on black, values 0..1")]
    outputs = [TensorSpec("probabilities", "FP32", (-1, 10)), TensorSpec("logits", "FP32", (-1, 10))]

    def __init__(self, manifest, version_dir):
        super().__init__(manifest, version_dir)
        self.run = self.batcher("model", ["probabilities", "logits"])

    def warm_up(self):
        self.infer({"image": np.zeros((1, 28, 28, 1), np.float32)}, {})

    def infer(self, inputs, parameters):
        x = inputs["image"]
        if x.min() < 0 or x.max() > 1:
            raise ApiError("input 'image' values must lie in 0..1 (pixel / 255)", field="image", limit=[0, 1])
        return self.run({"image": np.ascontiguousarray(x, dtype=np.float32)})


# ------------------------------------------------------------------------------------------ preprocessing
def decode_item(item, field: str) -> np.ndarray:
    """A base64 PNG/JPEG (any size, colour, either background) or a 28x28 grid of 0-255 -> 28x28 float 0..1."""
    if isinstance(item, str):
        return image_to_mnist(_b64_image(item, field), field)
    if isinstance(item, list):
        try:
            arr = np.asarray(item, dtype=np.float64)
        except (ValueError, TypeError):
            raise ApiError(f"{field} must be a 28x28 grid of numbers 0-255 or a base64 image", field=field) from None
        if arr.shape != (28, 28):
            raise ApiError(f"{field} grid has shape {list(arr.shape)}; expected 28x28", field=field, limit=[28, 28])
        if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 255:
            raise ApiError(f"{field} values must be finite numbers in 0..255", field=field, limit=[0, 255])
        return (arr / 255.0).astype(np.float32)
    raise ApiError(f"{field} must be a base64 PNG/JPEG string or a 28x28 grid of 0-255 values", field=field)


def _b64_image(s: str, field: str) -> Image.Image:
    if s.startswith("data:"):
        s = s.split(",", 1)[-1]
    if len(s) > LIMITS["max_image_bytes"] * 4 // 3 + 4:
        raise ApiError(f"{field} is larger than {LIMITS['max_image_bytes']} bytes", field=field,
                       limit=LIMITS["max_image_bytes"])
    try:
        raw = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(f"{field} is not valid base64", field=field) from None
    return raw_image(raw, field)


def image_to_mnist(img: Image.Image, field: str = "image") -> np.ndarray:
    """Convert like the MNIST preprocessing: grey, white-on-black, digit fitted in 20x20, centred by mass."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        # transparent pixels become the background: take the colour opposite to the strokes' average
        alpha = np.asarray(rgba)[..., 3]
        strokes = np.asarray(rgba.convert("L"))[alpha > 0]
        if strokes.size and strokes.mean() > 127:
            bg = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(bg, rgba)
    grey = np.asarray(img.convert("L"), dtype=np.float32)
    if grey.size == 0:
        raise ApiError(f"{field} is an empty image", field=field)
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    if border.mean() > 127:  # dark digit on light paper: invert to MNIST's white on black
        grey = 255.0 - grey
    grey = grey - np.median(border if border.mean() <= 127 else 255.0 - border)
    grey = np.clip(grey, 0, 255)
    ink = grey > 0.2 * grey.max() if grey.max() > 0 else np.zeros_like(grey, bool)
    if not ink.any():
        return np.zeros((28, 28), np.float32)
    rows, cols = np.where(ink)
    crop = grey[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = crop.shape
    s = 20.0 / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    small = np.asarray(Image.fromarray(crop.astype(np.uint8)).resize((nw, nh), Image.Resampling.LANCZOS),
                       dtype=np.float32)
    canvas = np.zeros((28, 28), np.float32)
    top, left = (28 - nh) // 2, (28 - nw) // 2
    canvas[top:top + nh, left:left + nw] = small
    total = canvas.sum()
    if total > 0:  # shift the centre of mass to the centre, as MNIST was made
        cy = (canvas.sum(1) * np.arange(28)).sum() / total
        cx = (canvas.sum(0) * np.arange(28)).sum() / total
        dy, dx = int(round(13.5 - cy)), int(round(13.5 - cx))
        canvas = np.roll(np.roll(canvas, dy, axis=0), dx, axis=1)
    m = canvas.max()
    return (canvas / m if m > 0 else canvas).astype(np.float32)



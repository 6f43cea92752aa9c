"""Image files in requests (an upload, a raw body, base64, or a v2 BYTES tensor): checked against the limits and
decoded with Pillow. The MNIST service fits them to its digits; an imported image model (``--image-input``) to
its graph's input (``to_tensor``)."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from services.runtime.config import LIMITS
from services.runtime.errors import ApiError

Image.MAX_IMAGE_PIXELS = LIMITS["max_image_pixels"]

IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF")  # PNG, JPEG, WebP (RIFF....WEBP)


def raw_image(raw: bytes, field: str) -> Image.Image:
    """An image file's bytes (an upload, a raw body, or decoded base64) -> a loaded PIL image."""
    if len(raw) > LIMITS["max_image_bytes"]:
        raise ApiError(f"{field} is larger than {LIMITS['max_image_bytes']} bytes", field=field,
                       limit=LIMITS["max_image_bytes"])
    try:
        img = Image.open(io.BytesIO(raw))
        if img.format not in ("PNG", "JPEG", "GIF", "BMP", "WEBP"):
            raise ApiError(f"{field}: image format {img.format} is not supported (PNG, JPEG, WebP)", field=field)
        img.load()
    except ApiError:
        raise
    except Image.DecompressionBombError:
        raise ApiError(f"{field} has more than {LIMITS['max_image_pixels']} pixels", field=field,
                       limit=LIMITS["max_image_pixels"]) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ApiError(f"{field} is not a readable PNG, JPEG or WebP image", field=field) from None
    return img


# how an imported model's graph takes pixels 0..255 (``--image-scale``)
SCALES = {"unit": (1 / 255.0, 0.0), "byte": (1.0, 0.0), "signed": (1 / 127.5, -1.0)}


def to_tensor(files: np.ndarray, spec: dict, field: str) -> np.ndarray:
    """Encoded image files, one a row ([N] or [N, 1] BYTES) -> the graph's input: each resized to its height and
    width, grey or RGB as its channels, scaled, in its layout (NHWC or NCHW)."""
    height, width = spec["size"]
    mode = "L" if spec["channels"] == 1 else "RGB"
    scale, shift = SCALES[spec["scale"]]
    rows = []
    for i, raw in enumerate(files.reshape(files.shape[0], -1)[:, 0] if files.ndim > 1 else files):
        if isinstance(raw, str):
            raw = raw.encode("latin-1")
        if not isinstance(raw, (bytes, bytearray)):
            raise ApiError(f"input '{field}' row {i} is not an image file", field=field)
        try:
            img = raw_image(bytes(raw), f"input '{field}' row {i}")
        except ApiError as exc:  # the message names the row; the field, the input
            exc.field = field
            raise
        img = img.convert(mode).resize((width, height), Image.Resampling.BILINEAR)
        px = np.asarray(img, dtype=np.float32).reshape(height, width, spec["channels"])
        rows.append(px * scale + shift)
    batch = np.stack(rows)
    return batch.transpose(0, 3, 1, 2) if spec["layout"] == "NCHW" else batch

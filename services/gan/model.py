"""GAN servable: latent vectors (from seeds, given, or interpolated) -> batched generator -> 28x28 images."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from services.runtime.servable import Servable, TensorSpec


class GanServable(Servable):
    inputs = [TensorSpec("latent", "FP32", (-1, 100), "standard normal latent vectors")]
    outputs = [TensorSpec("image", "FP32", (-1, 28, 28, 1), "pixels in -1..1")]

    def __init__(self, manifest, version_dir):
        super().__init__(manifest, version_dir)
        self.latent_dim = int(manifest["preprocessing"]["latent_dim"])
        self.run = self.batcher("generator", ["image"])

    def warm_up(self):
        self.infer({"latent": np.zeros((1, self.latent_dim), np.float32)}, {})

    def infer(self, inputs, parameters):
        return self.run({"latent": np.ascontiguousarray(inputs["latent"], dtype=np.float32)})

    def latents_from_seed(self, seed: int, n: int) -> np.ndarray:
        return np.random.default_rng(seed).standard_normal((n, self.latent_dim)).astype(np.float32)

    def interpolate(self, seed_a: int, seed_b: int, steps: int) -> np.ndarray:
        """Spherical interpolation: stays on the shell where Gaussian latents live (linear paths fade)."""
        a, b = self.latents_from_seed(seed_a, 1)[0], self.latents_from_seed(seed_b, 1)[0]
        omega = np.arccos(np.clip(np.dot(a / np.linalg.norm(a), b / np.linalg.norm(b)), -1, 1))
        ts = np.linspace(0, 1, steps)
        if omega < 1e-6:
            return np.stack([(1 - t) * a + t * b for t in ts]).astype(np.float32)
        return np.stack([(np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)
                         for t in ts]).astype(np.float32)


def to_uint8(images: np.ndarray) -> np.ndarray:
    return np.clip(np.round((images[..., 0] + 1.0) * 127.5), 0, 255).astype(np.uint8)


def png_grid(images: np.ndarray, columns: int | None = None, scale: int = 2, pad: int = 2) -> bytes:
    """One PNG holding all images in a grid (white digits on black, like MNIST)."""
    n = len(images)
    cols = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    cell = 28 + pad
    canvas = np.zeros((rows * cell + pad, cols * cell + pad), np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        canvas[pad + r * cell: pad + r * cell + 28, pad + c * cell: pad + c * cell + 28] = im
    img = Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()

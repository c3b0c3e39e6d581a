"""Fast classical baselines: no model, milliseconds per image. For comparison and fast tests.

* ``colour-hist`` — 8x8x8 RGB histogram, square-rooted (Hellinger), cosine. 512-d.
* ``tiny``        — the image squashed to 32x32, raw pixels in [0, 1], L2. 3072-d.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from lookalike.encoders import register
from lookalike.encoders.base import Encoder
from lookalike.encoders.spec import EncoderSpec


class ColourHistogram(Encoder):
    name = "colour-hist"
    metric = "cosine"
    # Colour statistics need few pixels: decode JPEGs at a reduced scale and histogram 64x64.
    image_size = 64

    def __init__(self, bins: int = 8):
        self.bins = bins
        self.dim = bins**3

    def preprocess(self, image: Image.Image) -> np.ndarray:
        pixels = np.asarray(image.convert("RGB").resize((self.image_size, self.image_size), Image.BOX))
        q = (pixels.reshape(-1, 3).astype(np.int64) * self.bins) // 256
        codes = (q[:, 0] * self.bins + q[:, 1]) * self.bins + q[:, 2]
        return np.bincount(codes, minlength=self.dim).astype(np.float32) / len(codes)

    def encode_batch(self, batch: np.ndarray) -> np.ndarray:
        # The square root of a histogram that sums to 1 has unit length already (Hellinger).
        return np.sqrt(np.asarray(batch, np.float32))

    def fingerprint(self) -> str:
        return f"colour-hist/v1 bins={self.bins} size={self.image_size}"


class TinyImage(Encoder):
    name = "tiny"
    metric = "l2"
    image_size = 32

    def __init__(self):
        self.dim = 3 * self.image_size**2

    def preprocess(self, image: Image.Image) -> np.ndarray:
        small = image.convert("RGB").resize((self.image_size, self.image_size), Image.BOX)
        return (np.asarray(small, np.float32) / 255.0).reshape(-1)

    def encode_batch(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(batch, np.float32).reshape(len(batch), self.dim)

    def fingerprint(self) -> str:
        return f"tiny/v1 size={self.image_size}"


@register("colour-hist", "8x8x8 RGB colour histogram, cosine (fast baseline)")
def _colour_hist(spec: EncoderSpec, home=None, catalog=None, **options) -> ColourHistogram:
    if spec.name or spec.mode or spec.options:
        raise ValueError("colour-hist takes no name, mode or options")
    return ColourHistogram(**options)


@register("tiny", "32x32 thumbnail pixels, L2 (fast baseline)")
def _tiny(spec: EncoderSpec, home=None, catalog=None, **options) -> TinyImage:
    if spec.name or spec.mode or spec.options or options:
        raise ValueError("tiny takes no name, mode or options")
    return TinyImage()

"""Load any supported image into the same RGB form, at index and at query time.

Every failure becomes an ``ImageError`` whose ``reason`` is a short machine-readable code
(``missing``, ``empty``, ``not_an_image``, ``corrupt``, ``too_large``) so ingest reports and the
HTTP API can say exactly what was wrong with one item and carry on with the rest.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from lookalike.config import MAX_IMAGE_PIXELS

ImageSource = Union[str, os.PathLike, bytes, Image.Image]

# We enforce our own pixel cap below; Pillow's own check would raise a warning or an error
# only at 2x its default, so turn it off and check explicitly before decoding.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


class ImageError(Exception):
    """An image that cannot be used, with a reason code and a human message."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def open_image(source: ImageSource, max_pixels: int = MAX_IMAGE_PIXELS, draft_size: int | None = None) -> Image.Image:
    """Open ``source`` (path, bytes or PIL image) and return a fully decoded RGB image.

    ``draft_size`` lets JPEG decode at a reduced scale (Pillow ``draft``), a large speed-up when the
    encoder only needs e.g. 224 px; the result is never smaller than ``draft_size`` on its short side.
    """
    if isinstance(source, Image.Image):
        return to_rgb(source)
    if isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise ImageError("empty", "empty file (0 bytes)")
        fp = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.exists():
            raise ImageError("missing", f"file not found: {path}")
        if not path.is_file():
            raise ImageError("not_an_image", f"not a regular file: {path}")
        if path.stat().st_size == 0:
            raise ImageError("empty", "empty file (0 bytes)")
        fp = path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. palette-with-transparency notices
            with Image.open(fp) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageError(
                        "too_large",
                        f"{width}x{height} = {width * height:,} pixels exceeds the limit of {max_pixels:,}",
                    )
                if draft_size and img.format == "JPEG":
                    img.draft("RGB", (draft_size, draft_size))
                img.seek(0)  # GIF/TIFF: first frame
                img.load()
                return to_rgb(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not_an_image", "not a recognised image format") from None
    except Image.DecompressionBombError as exc:
        raise ImageError("too_large", str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError("corrupt", f"cannot decode image: {exc}") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Normalise orientation, bit depth, colour mode and transparency to 8-bit RGB.

    Transparent pixels are composited on white, which is how product shots are shown.
    """
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size and arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr * (255.0 / hi), 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def resize_square(img: Image.Image, size: int, mode: str = "pad") -> Image.Image:
    """Resize to ``size`` x ``size``: ``pad`` keeps the whole product (white borders), ``crop``
    fills the square (centre crop), ``stretch`` ignores the aspect ratio."""
    if mode == "stretch":
        return img.resize((size, size), Image.BILINEAR)
    if mode == "crop":
        return ImageOps.fit(img, (size, size), Image.BILINEAR)
    return ImageOps.pad(img, (size, size), Image.BILINEAR, color=(255, 255, 255))


def thumbnail(img: Image.Image, size: int) -> Image.Image:
    """A copy no larger than ``size`` on its long side."""
    out = img.copy()
    out.thumbnail((size, size), Image.BILINEAR)
    return out

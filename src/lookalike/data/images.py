"""Load any supported image into the same RGB form, at index and at query time.

:func:`open_image` is the one decode path: ingest, ``Catalog.search(image=...)`` / ``embed_images``
(CLI ``search --image``, Python API) and HTTP uploads all call it with the encoder's input size as
``draft_size``, so the same bytes give the same pixels, hence the same vector, everywhere.

Every Pillow mode comes out as the 8-bit sRGB picture an image viewer shows (:func:`to_rgb`):
EXIF orientation applied, embedded ICC profiles converted to sRGB (``PIL.ImageCms``, LittleCMS),
high-bit-depth greyscale scaled from its full range, transparency composited over white.
HEIC/HEIF is read through ``pillow-heif`` and AVIF through Pillow's own plugin (Pillow >= 11.3 built
with libavif, or ``pillow-avif-plugin``) when installed; otherwise those files fail with
``unsupported_format`` naming the format.

Which files are images is one decision for every path (:func:`image_format`, :func:`decoded_formats`):
every installed Pillow plugin but :data:`NOT_DECODED`; ingest, the HTTP uploads and ``search --image``
accept and refuse the same files for the same reasons.

Every failure becomes an ``ImageError`` whose ``reason`` is a short machine-readable code
(``missing``, ``empty``, ``not_an_image``, ``unsupported_format``, ``corrupt``, ``too_large``) so
ingest reports and the HTTP API can say exactly what was wrong with one item and carry on.
"""
from __future__ import annotations

import io
import math
import os
import warnings
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from PIL import ExifTags, Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError, features

from lookalike.config import MAX_IMAGE_PIXELS

try:  # optional plugin: registers HEIC/HEIF with Image.open
    from pillow_heif import register_heif_opener
except ImportError:  # pragma: no cover - depends on the environment
    register_heif_opener = None
if register_heif_opener is not None:
    register_heif_opener()
if not features.check("avif"):  # Pillow < 11.3 or built without libavif: the separate plugin, if any
    try:
        import pillow_avif  # noqa: F401  (registers AVIF on import)
    except ImportError:  # pragma: no cover - depends on the environment
        pass

ImageSource = Union[str, os.PathLike, bytes, Image.Image]

# We enforce our own pixel cap below; Pillow's own check would raise a warning or an error
# only at 2x its default, so turn it off and check explicitly before decoding.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}

_SRGB = ImageCms.createProfile("sRGB")


class ImageError(Exception):
    """An image that cannot be used, with a reason code and a human message."""

    def __init__(self, reason: str, message: str, format: str | None = None):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.format = format   # unsupported_format: the format's name (HEIC/HEIF, SVG, PDF, EPS …)


#: Pillow formats no path decodes (ingest, upload, CLI query): identify-only plugins (Pillow ships no
#: decoder: BUFR, GRIB, HDF5, MPEG; WMF/EMF off Windows) and EPS, which Pillow decodes by running
#: Ghostscript, an external interpreter, on the file. They are ``unsupported_format``, named.
NOT_DECODED = frozenset({"BUFR", "GRIB", "HDF5", "MPEG", "WMF", "EPS"})


def decoded_formats() -> tuple[str, ...]:
    """Pillow format ids every path reads: each installed Pillow plugin (pillow-heif's HEIF and AVIF
    included when installed) but :data:`NOT_DECODED`. The one list ingest, the HTTP uploads and
    ``search --image`` accept; computed per call, as plugins register when imported."""
    Image.init()
    return tuple(name for name in Image.OPEN if name not in NOT_DECODED)


def image_format(source: str | os.PathLike | bytes) -> str:
    """The Pillow format id (``JPEG``, ``PNG``, ``MPO``, ``HEIF``, ``TGA`` …) of the image in ``source``
    (a path or the bytes), read from its header only (no pixels decoded): the one decision of which
    files and uploads are images every path reads (:func:`decoded_formats`; the decoder itself,
    :func:`open_image`, applies the same list). Raises :class:`ImageError`: ``missing``, ``empty``,
    ``not_an_image``, ``unsupported_format`` (naming it: HEIC without pillow-heif, SVG, PDF, EPS …) or
    ``corrupt`` (starts like a readable format, but its header is damaged or cut short); OSError when a
    file cannot be opened (permissions, I/O: the caller's ``unreadable``)."""
    fp = _opened(source)
    with (fp if isinstance(fp, io.BytesIO) else fp.open("rb")) as f:   # opening a file: OSError propagates
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(f, formats=decoded_formats()) as img:
                    return img.format or "unknown"
        except UnidentifiedImageError:
            raise ImageError(*_unidentified(f)) from None
        except Image.DecompressionBombError as exc:
            raise ImageError("too_large", str(exc)) from None
        except Exception as exc:   # a plugin matched the first bytes, then choked on the header
            raise ImageError("corrupt", f"cannot decode image: {type(exc).__name__}: {exc}") from None


def _opened(source: str | os.PathLike | bytes | bytearray | memoryview) -> io.BytesIO | Path:
    """What Image.open reads for ``source``; ImageError ``missing`` / ``not_an_image`` (not a regular
    file) / ``empty`` first."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError("empty", "empty file (0 bytes)")
        return io.BytesIO(source)
    path = Path(source)
    if not path.exists():
        raise ImageError("missing", f"file not found: {path}")
    if not path.is_file():
        raise ImageError("not_an_image", f"not a regular file: {path}")
    if path.stat().st_size == 0:
        raise ImageError("empty", "empty file (0 bytes)")
    return path


def image_format_by_signature(head: bytes) -> str | None:
    """The name of an image format Pillow may lack a plugin for, or that is not an image Pillow
    reads, from a file's first bytes (HEIC/HEIF, AVIF, JPEG XL, SVG, PDF), else None."""
    if head.startswith(b"%PDF-"):
        return "PDF"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"):
            return "HEIC/HEIF"
        if brand in (b"avif", b"avis"):
            return "AVIF"
    if head.startswith(b"\xff\x0a") or head.startswith(b"\x00\x00\x00\x0cJXL \r\n\x87\n"):
        return "JPEG XL"
    text = head.lstrip().lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in head.lower()):
        return "SVG"
    return None


def open_image(source: ImageSource, max_pixels: int = MAX_IMAGE_PIXELS, draft_size: int | None = None) -> Image.Image:
    """Decode ``source`` (path, bytes or an already opened PIL image) to an 8-bit RGB image as a
    viewer shows it (:func:`to_rgb`). GIF/TIFF/HEIF: the first frame.

    ``draft_size`` lets JPEG decode at a reduced scale in the DCT domain (Pillow ``draft``: 1/2, 1/4
    or 1/8), a large speed-up when the encoder only needs e.g. 224 px; the result is never smaller
    than ``draft_size`` on its short side. Query paths must pass the same ``draft_size`` as ingest
    (the encoder's ``image_size``) to get identical pixels; a PIL image is already decoded and only
    normalised. Raises :class:`ImageError` (reasons in the module docstring); ``too_large`` when
    width x height exceeds ``max_pixels``, checked from the header before decoding.
    """
    if isinstance(source, Image.Image):
        return to_rgb(source)
    fp = _opened(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. palette-with-transparency notices
            with Image.open(fp, formats=decoded_formats()) as img:   # image_format's list: NOT_DECODED never runs
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageError(
                        "too_large",
                        f"{width}x{height} = {width * height:,} pixels exceeds the limit of {max_pixels:,}",
                    )
                if draft_size and img.format == "JPEG":
                    img.draft("RGB", (draft_size, draft_size))
                if img.tell() != 0:   # GIF/TIFF/APNG: the first frame (a plain seek(0) raises on SPIDER files)
                    img.seek(0)
                img.load()
                return to_rgb(img, copy=False)   # our own decoded image: no defensive copies
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(*_unidentified(fp)) from None
    except Image.DecompressionBombError as exc:
        raise ImageError("too_large", str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError, RuntimeError) as exc:  # pillow-heif raises RuntimeError
        raise ImageError("corrupt", f"cannot decode image: {exc}") from None
    except MemoryError:
        raise ImageError("too_large", "not enough memory to decode this image") from None
    except Exception as exc:  # Pillow's plugins raise struct.error, KeyError, IndexError, TypeError... on odd bytes
        raise ImageError("corrupt", f"cannot decode image: {type(exc).__name__}: {exc}") from None


def _unidentified(fp) -> tuple[str, str, str | None]:
    """(reason, message, format named) for bytes no Pillow plugin of :func:`decoded_formats` recognises."""
    if hasattr(fp, "read"):   # BytesIO or an open file
        fp.seek(0)
        head = fp.read(64)
    else:
        with open(fp, "rb") as f:
            head = f.read(64)
    known = image_format_by_signature(head)
    if known == "PDF":
        return "unsupported_format", "PDF document: not an image lookalike reads (export the picture as JPEG or PNG)", known
    if known and not plugin_installed(known):
        return "unsupported_format", f"{known} image: not supported by the installed Pillow plugins", known
    refused = _not_decoded_format(fp)
    if refused:
        return "unsupported_format", f"{refused} image: not decoded here (lookalike reads no {refused} files)", refused
    if known:   # a plugin for it is installed, yet it could not identify the file: cut short or damaged
        return "corrupt", f"cannot decode image: starts like a {known} file but its header is damaged or cut short", None
    damaged = damaged_image_format(head)
    if damaged:   # starts like an image Pillow reads, yet Pillow could not parse its header: cut short or damaged
        return "corrupt", f"cannot decode image: starts like a {damaged} file but its header is damaged or cut short", None
    return "not_an_image", "not a recognised image format", None


def _not_decoded_format(fp) -> str | None:
    """The :data:`NOT_DECODED` format ``fp`` is (those plugins only parse the header here), else None."""
    if hasattr(fp, "seek"):
        fp.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(fp, formats=sorted(NOT_DECODED & set(Image.OPEN))) as img:
                return img.format
    except Exception:   # noqa: BLE001 - not one of them, or a broken one: no name to give
        return None


#: leading bytes of formats Pillow reads (its plugins' own checks): a file that starts like one of these but that
#: Pillow cannot identify is a damaged image (``corrupt``), not some other kind of file (``not_an_image``)
_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
               (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"II+\x00", "BigTIFF"), (b"MM\x00+", "BigTIFF"))


#: image_format_by_signature's names -> the suffix a Pillow plugin registers when it reads that format
_PLUGIN_SUFFIX = {"HEIC/HEIF": ".heic", "AVIF": ".avif", "JPEG XL": ".jxl", "SVG": ".svg"}


def plugin_installed(name: str) -> bool:
    """Whether a Pillow plugin here reads format ``name`` (an :func:`image_format_by_signature` name)."""
    return _PLUGIN_SUFFIX.get(name) in Image.registered_extensions()


def damaged_image_format(head: bytes) -> str | None:
    """The name of the Pillow-readable format ``head`` (a file's first bytes) claims to be, else None:
    the common ones by their magic numbers, then any format of :func:`decoded_formats` whose plugin's
    own first-bytes check accepts ``head`` (a PSD, ICO, QOI, DDS… cut inside its header was
    ``not_an_image`` — a folder skipped it — instead of a ``corrupt`` image)."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    known = next((name for magic, name in _SIGNATURES if head.startswith(magic)), None)
    if known or not head:
        return known
    for name in decoded_formats():
        accept = Image.OPEN[name][1]
        try:
            if accept is not None and accept(head[:16]):   # what Image.open hands the check: 16 bytes
                return name
        except Exception:   # noqa: BLE001 - a plugin's check choking on odd bytes says nothing
            continue
    return None


def to_rgb(img: Image.Image, copy: bool = True) -> Image.Image:
    """Normalise orientation, bit depth, colour space and transparency to 8-bit sRGB ``RGB``.
    Always a new image, unless ``copy`` is False: then an RGB image with nothing to change comes
    back as it is (the decoder's own image; two full-size copies less per decode).

    * EXIF orientation applied (the transposes of ``ImageOps.exif_transpose``); a damaged EXIF block is
      ignored, as viewers do.
    * ``I;16*`` greyscale scaled from 0..65535; ``I`` (32-bit int) and ``F`` (float) from the
      smallest usual range that holds the data (0..1 for floats, 0..255, 0..65535, else the data's
      maximum), so bright pixels never clip to white; negatives clip to black.
    * An embedded ICC profile converted to sRGB (perceptual intent); a broken profile is ignored,
      as viewers do. CMYK without a profile: Pillow's naive conversion (Adobe inverted CMYK JPEGs
      are un-inverted by Pillow's decoder).
    * Transparency (``RGBA``, ``LA``, ``PA``, ``P``/``L``/``RGB`` with a ``transparency`` key)
      composited over white, which is how product shots are shown.
    """
    icc = img.info.get("icc_profile")
    source = img
    transpose = _ORIENTATION.get(_orientation(img))
    if transpose is not None:
        img = img.transpose(transpose)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        img = Image.fromarray(_to_uint8(img), "L")
    elif img.mode == "1":
        img = img.convert("L")
    elif img.mode in ("YCbCr", "HSV"):
        img = img.convert("RGB")
    elif img.mode == "LAB":
        img = ImageCms.applyTransform(img, ImageCms.buildTransform(ImageCms.createProfile("LAB"), _SRGB, "LAB", "RGB"))
        icc = None
    if img.mode in ("P", "PA") or (img.mode in ("L", "RGB") and "transparency" in img.info):
        img = img.convert("RGBA") if img.mode != "L" else img.convert("LA")
    if img.mode in ("La", "RGBa"):  # premultiplied alpha
        img = img.convert("RGBA")
    alpha = img.getchannel("A") if img.mode in ("RGBA", "LA") else None
    colour = img.convert(img.mode[:-1]) if alpha is not None else img
    if colour.mode not in ("L", "RGB", "CMYK"):
        colour = colour.convert("RGB")
    if icc:
        colour = _to_srgb(colour, icc)
    if colour.mode != "RGB":
        colour = colour.convert("RGB")
    if alpha is None:
        return colour.copy() if copy and colour is source else colour
    white = Image.new("RGB", colour.size, (255, 255, 255))
    return Image.composite(colour, white, alpha)


#: EXIF orientation -> the transpose that shows the picture upright (as ``ImageOps.exif_transpose``)
_ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                8: Image.Transpose.ROTATE_90}


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright). A damaged EXIF block counts as upright, as viewers show it:
    the pixels are fine, and ``ImageOps.exif_transpose`` would fail re-serialising that block (struct.error)."""
    try:
        value = img.getexif().get(ExifTags.Base.Orientation, 1)
        return int(value) if isinstance(value, (int, float)) else 1
    except Exception:   # noqa: BLE001 - any parse error of the optional metadata block
        return 1


def _to_uint8(img: Image.Image) -> np.ndarray:
    """High-bit-depth single-band pixels -> uint8 over their format's full range."""
    arr = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16"):
        top = 65535.0
    else:
        finite = arr[np.isfinite(arr)]
        peak = float(finite.max()) if finite.size else 0.0
        ranges = ((1.0,) if img.mode == "F" else ()) + (255.0, 65535.0)
        top = next((r for r in ranges if peak <= r), peak)
    arr = np.nan_to_num(arr, nan=0.0, posinf=top, neginf=0.0)
    return np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)


def _to_srgb(img: Image.Image, icc: bytes) -> Image.Image:
    """``img`` (L, RGB or CMYK) converted from its embedded profile to sRGB; unchanged when the
    profile is unreadable or does not match the mode."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(img, source, _SRGB, renderingIntent=ImageCms.Intent.PERCEPTUAL,
                                         outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
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


# -- box queries ---------------------------------------------------------------------------
MIN_BOX_SIDE = 8   # px: a box query narrower or shorter than this holds too little to embed


class BoxError(ValueError):
    """A query box that is malformed or does not fit the image; the message says why."""


def parse_box(text: str | Sequence[float]) -> tuple[int, int, int, int]:
    """``"x0,y0,x1,y1"`` (or four numbers) -> integer pixel box; BoxError when it is not four numbers
    with x0 < x1 and y0 < y1. Fractions are rounded outwards (floor the start, ceil the end)."""
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",")]
    else:
        parts = list(text)
    if len(parts) != 4:
        raise BoxError(f"a box is four numbers x0,y0,x1,y1 (pixels of the original image); got {text!r}")
    try:
        values = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise BoxError(f"a box is four numbers x0,y0,x1,y1; got {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise BoxError("box values must be finite numbers")
    x0, y0, x1, y1 = math.floor(values[0]), math.floor(values[1]), math.ceil(values[2]), math.ceil(values[3])
    if x1 <= x0 or y1 <= y0:
        raise BoxError(f"box x0,y0,x1,y1 needs x0 < x1 and y0 < y1; got {x0},{y0},{x1},{y1}")
    return x0, y0, x1, y1


def crop_box(image: Image.Image, box: str | Sequence[float]) -> Image.Image:
    """The part of ``image`` inside ``box`` (x0, y0, x1, y1; x1/y1 exclusive), in pixels of the image
    as a viewer shows it (EXIF orientation applied by :func:`open_image`, so a box drawn on the
    displayed photo crops the same pixels). BoxError when the box is malformed, starts outside the
    image, or leaves less than ``MIN_BOX_SIDE`` px on a side once clamped to the image."""
    x0, y0, x1, y1 = parse_box(box)
    w, h = image.size
    if x0 < 0 or y0 < 0 or x0 >= w or y0 >= h:
        raise BoxError(f"box {x0},{y0},{x1},{y1} starts outside the {w}x{h} image")
    x1, y1 = min(x1, w), min(y1, h)  # a drag past the edge ends at the edge
    if x1 - x0 < MIN_BOX_SIDE or y1 - y0 < MIN_BOX_SIDE:
        raise BoxError(f"box {x0},{y0},{x1},{y1} is smaller than {MIN_BOX_SIDE}x{MIN_BOX_SIDE} px inside the {w}x{h} image")
    return image.crop((x0, y0, x1, y1))

"""Colour of the product in a photo: a foreground-weighted Lab descriptor, the dominant colour and
the CIEDE2000 colour difference.

Product photos have backgrounds (beds, floors, walls, white studio paper). We estimate which pixels
belong to the product with two cheap priors: products sit near the centre, and colours that fill
the image border are background. Each pixel's weight is ``centre_prior * (1 - 0.9 * border_likeness)``.

* :func:`colour_descriptor` — a soft histogram over a fixed Lab grid (5 L x 7 a x 7 b = 245 bins,
  Gaussian assignment so near colours share bins), foreground-weighted, square-rooted and
  L2-normalised: the cosine of two descriptors is their Bhattacharyya coefficient.
* :func:`dominant_colour` — the Lab colour of the heaviest foreground colour cluster.
* :func:`ciede2000` — perceptual colour difference (about 2.3 = just noticeable).
* :func:`foreground_box` / :func:`crop_to_foreground` — the product's bounding box from the same
  estimate (the CNN encoders' ``crop=fg`` option: embed the product, not the bed it lies on).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

from lookalike.encoders.spec import EncoderSpec

DESCRIPTOR_VERSION = "colourdesc/v1"
THUMB = 48  # colour needs few pixels; small thumbnails keep this cheap in the ingest threads
_L = np.arange(10.0, 91.0, 20.0)
_AB = np.arange(-60.0, 61.0, 20.0)
GRID = np.stack(np.meshgrid(_L, _AB, _AB, indexing="ij"), axis=-1).reshape(-1, 3).astype(np.float32)
COLOUR_DIM = len(GRID)
_AXES = (_L.astype(np.float32), _AB.astype(np.float32), _AB.astype(np.float32))  # GRID is their product, l-a-b order
_SIGMA = 12.0  # softness of the bin assignment, in Lab units
_DOMINANT_RADIUS = 20.0  # pixels this close to the heaviest bin centre define the dominant colour


# -- colour spaces -----------------------------------------------------------------------------
def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB values in 0..1 -> linear light (the sRGB transfer function, IEC 61966-2-1)."""
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


_LINEAR_LUT = _srgb_to_linear(np.arange(256, dtype=np.float64) / 255.0)  # uint8 input: a table look-up


def rgb_to_lab(rgb) -> np.ndarray:
    """sRGB (uint8 or floats 0..255, shape (..., 3)) -> CIE Lab (D65), float64."""
    rgb = np.asarray(rgb)
    if rgb.dtype == np.uint8:
        linear = _LINEAR_LUT[rgb]
    else:
        linear = _srgb_to_linear(rgb.astype(np.float64) / 255.0)
    m = np.array([[0.4124564, 0.3575761, 0.1804375],
                  [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = linear @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


# float32 sRGB -> Lab for thumbnails: the same formula as rgb_to_lab, the white point folded into the
# matrix; within 2e-4 Lab units of the float64 one over the whole RGB cube (tests/encoders/test_colour_fast.py)
_LINEAR_LUT32 = _LINEAR_LUT.astype(np.float32)
_XYZ_FROM_LINEAR = (np.array([[0.4124564, 0.3575761, 0.1804375],
                              [0.2126729, 0.7151522, 0.0721750],
                              [0.0193339, 0.1191920, 0.9503041]])
                    / np.array([0.95047, 1.0, 1.08883])[:, None]).astype(np.float32)
_F_KNEE = np.float32((6 / 29) ** 3)
_F_SLOPE, _F_OFFSET = np.float32(1 / (3 * (6 / 29) ** 2)), np.float32(4 / 29)


def lab_planes(rgb: np.ndarray) -> np.ndarray:
    """uint8 sRGB pixels (..., 3) -> (3, P) float32 CIE Lab (D65), one contiguous row per channel
    (L, a, b; P = the number of pixels): :func:`rgb_to_lab` in float32, laid out so each channel's
    per-pixel work runs over one contiguous row."""
    linear = _LINEAR_LUT32[np.asarray(rgb, np.uint8).reshape(-1, 3)]          # (P, 3)
    xyz = _XYZ_FROM_LINEAR @ linear.T                                           # (3, P)
    # cube root as exp(log(x)/3): numpy's SIMD float32 exp and log are ~3x faster than its cbrt,
    # within 3e-7 relative; values under the knee take the linear branch below
    f = np.log(np.maximum(xyz, _F_KNEE))
    f *= np.float32(1 / 3)
    np.exp(f, out=f)
    dark = xyz <= _F_KNEE
    if dark.any():
        f[dark] = xyz[dark] * _F_SLOPE + _F_OFFSET
    lab = np.empty_like(f)
    np.multiply(f[1], np.float32(116), out=lab[0])
    lab[0] -= np.float32(16)
    np.subtract(f[0], f[1], out=lab[1])
    lab[1] *= np.float32(500)
    np.subtract(f[1], f[2], out=lab[2])
    lab[2] *= np.float32(200)
    return lab


def ciede2000(lab1, lab2) -> np.ndarray:
    """CIEDE2000 colour difference between Lab arrays (broadcasting over leading dimensions)."""
    lab1, lab2 = np.asarray(lab1, np.float64), np.asarray(lab2, np.float64)
    L1, a1, b1 = np.moveaxis(lab1, -1, 0)
    L2, a2, b2 = np.moveaxis(lab2, -1, 0)
    c_bar = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(c_bar**7 / (c_bar**7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    dLp, dCp = L2 - L1, c2p - c1p
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(c1p * c2p == 0, 0.0, dh)
    dHp = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh) / 2)
    Lp_bar, Cp_bar = (L1 + L2) / 2, (c1p + c2p) / 2
    hsum = h1p + h2p
    hp_bar = np.where(np.abs(h1p - h2p) > 180, np.where(hsum < 360, hsum + 360, hsum - 360), hsum) / 2
    hp_bar = np.where(c1p * c2p == 0, hsum, hp_bar)
    t = (1 - 0.17 * np.cos(np.radians(hp_bar - 30)) + 0.24 * np.cos(np.radians(2 * hp_bar))
         + 0.32 * np.cos(np.radians(3 * hp_bar + 6)) - 0.20 * np.cos(np.radians(4 * hp_bar - 63)))
    d_theta = 30 * np.exp(-(((hp_bar - 275) / 25) ** 2))
    r_c = 2 * np.sqrt(Cp_bar**7 / (Cp_bar**7 + 25.0**7))
    s_l = 1 + 0.015 * (Lp_bar - 50) ** 2 / np.sqrt(20 + (Lp_bar - 50) ** 2)
    s_c = 1 + 0.045 * Cp_bar
    s_h = 1 + 0.015 * Cp_bar * t
    r_t = -np.sin(np.radians(2 * d_theta)) * r_c
    return np.sqrt((dLp / s_l) ** 2 + (dCp / s_c) ** 2 + (dHp / s_h) ** 2 + r_t * (dCp / s_c) * (dHp / s_h))


# -- where the product is ------------------------------------------------------------------------
def rgb_thumbnail(image: Image.Image, size: int = THUMB) -> np.ndarray:
    """RGB image -> (size, size, 3) uint8 box-filtered thumbnail (aspect ratio not kept): the pixels
    every colour estimate of this module starts from."""
    return np.asarray((image if image.mode == "RGB" else image.convert("RGB")).resize((size, size), Image.BOX))


def lab_thumbnail(image: Image.Image, size: int = THUMB) -> np.ndarray:
    """RGB image -> (size, size, 3) float32 Lab of its box-filtered thumbnail (aspect ratio not kept)."""
    # float32 (lab_planes): a few times faster than float64 and far more precise than needed
    return np.ascontiguousarray(lab_planes(rgb_thumbnail(image, size)).T).reshape(size, size, 3)


def foreground_weights(lab: np.ndarray, border: int = 3, sigma: float = 12.0,
                       weighting: str = "foreground") -> np.ndarray:
    """(h, w, 3) Lab -> (h, w) weights in (0, 1]: centre prior times "unlike the border".

    ``weighting`` "centre" keeps only the centre prior, "uniform" weighs every pixel the same
    (both exist to measure what the foreground estimate is worth; see docs/encoders.md)."""
    h, w, _ = lab.shape
    if weighting == "uniform":
        return np.ones((h, w))
    centre = _centre_prior(h, w)
    if weighting == "centre":
        return centre.copy()
    return centre * (1 - 0.9 * border_likeness(lab, border, sigma))


@lru_cache(maxsize=16)
def _centre_prior(h: int, w: int) -> np.ndarray:
    """(h, w) float32 Gaussian centre prior (σ = 0.35 of each side), computed once per thumbnail size."""
    ys, xs = np.mgrid[0:h, 0:w]
    centre = np.exp(-(((ys - (h - 1) / 2) / (0.35 * h)) ** 2 + ((xs - (w - 1) / 2) / (0.35 * w)) ** 2) / 2)
    centre = centre.astype(np.float32)
    centre.setflags(write=False)
    return centre


def border_likeness(lab: np.ndarray, border: int = 3, sigma: float = 12.0, min_share: float = 0.0) -> np.ndarray:
    """(h, w, 3) Lab -> (h, w) in (0, 1]: how close each pixel's colour is to a colour of the image's
    ``border``-pixel frame, exp(-(ΔE/σ)²) with ΔE the Lab distance to the nearest of ~96 frame samples
    (1 = a background colour). The "unlike the border" half of :func:`foreground_weights`.

    ``min_share`` > 0 keeps only frame colours shared (within σ) by at least that fraction of the
    frame, so a product that touches the photo's edge does not make its own colour "background"."""
    h, w, _ = lab.shape
    if min_share <= 0:
        planes = np.ascontiguousarray(np.asarray(lab, np.float32).reshape(-1, 3).T)
        return _border_likeness_planes(planes, h, w, border=border, sigma=sigma).reshape(h, w)
    ring = np.ones((h, w), bool)
    ring[border:-border, border:-border] = False
    edge = lab[ring][:: max(1, ring.sum() // 96)]  # ~96 samples of the border colours
    if min_share > 0:
        e2 = (edge**2).sum(1)
        close = (e2[:, None] + e2[None] - 2.0 * edge @ edge.T) < sigma**2
        common = close.mean(axis=1) >= min_share
        edge = edge[common] if common.any() else edge
    flat = lab.reshape(-1, 3)
    # min_e |p - e|² = |p|² + min_e (|e|² - 2 p·e): one (n, 4) @ (4, m) product, then the row minimum
    ones = np.ones((len(flat), 1), flat.dtype)
    cross = np.hstack([flat, ones]) @ np.vstack([-2.0 * edge.T, (edge**2).sum(1)[None]]).astype(flat.dtype)
    d2 = (flat**2).sum(1) + cross.min(axis=1)
    nearest = np.sqrt(np.maximum(d2, 0.0)).reshape(h, w)
    return np.exp(-((nearest / sigma) ** 2))


def foreground_box(image: Image.Image, mass: float = 0.96, margin: float = 0.08,
                   square: bool = True) -> tuple[int, int, int, int]:
    """Where the product is: a box ``(left, top, right, bottom)`` in pixels of ``image``.

    From the same "unlike the border colours" estimate as :func:`foreground_weights` (without the
    centre prior, so an off-centre product is found), on a 48-px Lab thumbnail: the box holds the
    central ``mass`` share of the foreground weight along each axis (robust to a few stray pixels
    of a textured background), grown by ``margin`` of its size on every side and, with ``square``,
    to a square around its centre (so a later square centre crop cuts nothing), clamped to the
    image. The whole image when no foreground stands out (under 2 % of the weight, e.g. a photo
    filled by the product or a plain image)."""
    width, height = image.size
    lab = lab_thumbnail(image)
    weights = 1.0 - border_likeness(lab)
    whole = (0, 0, width, height)
    if weights.sum() < 0.02 * weights.size:
        return whole
    lo, hi = (1 - mass) / 2, 1 - (1 - mass) / 2
    side = lab.shape[0]

    def span(profile: np.ndarray) -> tuple[float, float]:
        cdf = np.cumsum(profile) / profile.sum()
        return float(np.searchsorted(cdf, lo)), float(np.searchsorted(cdf, hi) + 1)

    x0, x1 = span(weights.sum(axis=0))
    y0, y1 = span(weights.sum(axis=1))
    x0, x1, y0, y1 = x0 * width / side, x1 * width / side, y0 * height / side, y1 * height / side
    grow_x, grow_y = margin * (x1 - x0), margin * (y1 - y0)
    x0, x1, y0, y1 = x0 - grow_x, x1 + grow_x, y0 - grow_y, y1 + grow_y
    if square:
        half = max(x1 - x0, y1 - y0) / 2
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        x0, x1, y0, y1 = cx - half, cx + half, cy - half, cy + half
    # shift a box that overhangs one edge back inside before clamping (keeps it square when it fits)
    x0, x1 = x0 - min(0.0, x0) - max(0.0, x1 - width), x1 - min(0.0, x0) - max(0.0, x1 - width)
    y0, y1 = y0 - min(0.0, y0) - max(0.0, y1 - height), y1 - min(0.0, y0) - max(0.0, y1 - height)
    box = (max(0, int(round(x0))), max(0, int(round(y0))), min(width, int(round(x1))), min(height, int(round(y1))))
    if box[2] - box[0] < 8 or box[3] - box[1] < 8:
        return whole
    return box


def crop_to_foreground(image: Image.Image) -> Image.Image:
    """``image`` cut to :func:`foreground_box` (the encoders' ``crop=fg`` option)."""
    box = foreground_box(image)
    return image if box == (0, 0, *image.size) else image.crop(box)


# -- descriptors ---------------------------------------------------------------------------------
def colour_descriptor(image: Image.Image, weighting: str = "foreground") -> np.ndarray:
    """245-d float32: sqrt of the foreground-weighted soft Lab histogram, L2-normalised (the colour
    part of the colour-fused encoders; the dominant colour is not computed)."""
    rgb = rgb_thumbnail(image)
    return _summary(lab_planes(rgb), rgb.shape[0], rgb.shape[1], weighting, rgb, dominant=False)[0]


def dominant_colour(image: Image.Image, weighting: str = "foreground") -> np.ndarray:
    """Lab (3,) of the product's main colour: the grid cell with the most foreground weight,
    refined to the weighted mean of the pixels within 20 Lab units of it."""
    return colour_summary(image, weighting)[1]


def colour_summary(image: Image.Image | None, weighting: str = "foreground",
                   lab: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(descriptor (245,) float32, dominant Lab colour (3,)) of one image (or of its (h, w, 3) ``lab``
    thumbnail, :func:`lab_thumbnail`). The descriptor is the direct computation's (every pixel
    against all 245 bin centres) within 1e-5 (tests/encoders/test_colour_fast.py)."""
    if lab is not None:
        h, w, _ = lab.shape
        return _summary(np.ascontiguousarray(np.asarray(lab, np.float32).reshape(-1, 3).T), h, w, weighting)
    rgb = rgb_thumbnail(image)
    return _summary(lab_planes(rgb), rgb.shape[0], rgb.shape[1], weighting, rgb)


def colour_summaries(labs: np.ndarray, weighting: str = "foreground") -> tuple[np.ndarray, np.ndarray]:
    """(n, h, w, 3) Lab thumbnails (:func:`lab_thumbnail`) -> (descriptors (n, 245) float32, dominant
    Lab colours (n, 3)): :func:`colour_summary` of each."""
    labs = np.asarray(labs, np.float32)
    n, h, w, _ = labs.shape
    descriptors, dominants = np.empty((n, COLOUR_DIM), np.float32), np.empty((n, 3))
    for i in range(n):
        descriptors[i], dominants[i] = _summary(np.ascontiguousarray(labs[i].reshape(-1, 3).T), h, w, weighting)
    return descriptors, dominants


_HALF_INV = np.float32(0.5 / _SIGMA**2)
_AXIS_CENTRES = tuple(c[:, None] for c in _AXES)   # (k, 1) per axis: broadcast against a (P,) row


def _summary(lab: np.ndarray, h: int, w: int, weighting: str = "foreground", rgb: np.ndarray | None = None,
             dominant: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """(3, P) float32 Lab planes of an h x w thumbnail (:func:`lab_planes`) -> (descriptor (245,)
    float32, dominant Lab colour (3,) or None without ``dominant``). ``rgb``: the thumbnail's uint8
    pixels, when known (frame colours are then deduplicated exactly, by their RGB value).

    The Gaussian bin assignment is separable over the grid's three axes,
    ``exp(-|p-c|²/2σ²) = exp(-ΔL²/2σ²)·exp(-Δa²/2σ²)·exp(-Δb²/2σ²)``, and so is its per-pixel
    normalisation; the weighted histogram is then a (35, P) @ (P, 7) product instead of a (P, 245)
    distance matrix and 245 exponentials per pixel. Every array is channel-major (a row of P pixels
    per bin or channel), so each step is a long contiguous numpy loop; one image at a time keeps the
    border distance matrix (frame samples x P) in the CPU cache."""
    if weighting == "foreground":
        weights = _centre_prior(h, w).reshape(-1) * (1 - 0.9 * _border_likeness_planes(lab, h, w, rgb))
    else:
        weights = np.asarray(foreground_weights(lab.T.reshape(h, w, 3), weighting=weighting), np.float32).reshape(-1)
    factors, nearest = [], []
    for axis, centres in enumerate(_AXIS_CENTRES):
        d2 = lab[axis] - centres                                                      # (k, P)
        d2 *= d2
        if dominant:
            nearest.append(d2.argmin(axis=0))
        # exp(-(d² - min d²)/2σ²): the nearest centre gets 1, so nothing underflows
        d2 -= d2.min(axis=0)
        d2 *= -_HALF_INV
        g = np.exp(d2, out=d2)
        g /= g.sum(axis=0)
        factors.append(g)
    g_l, g_a, g_b = factors
    g_l *= weights
    la = (g_l[:, None, :] * g_a[None]).reshape(-1, lab.shape[1])                        # (35, P), l-a order
    hist = (la @ g_b.T).reshape(-1)                                                     # l, a, b order
    np.sqrt(np.maximum(hist, 0.0, out=hist), out=hist)
    descriptor = (hist / max(float(np.linalg.norm(hist)), 1e-12)).astype(np.float32)
    if not dominant:
        return descriptor, None
    cells = (nearest[0] * len(_AB) + nearest[1]) * len(_AB) + nearest[2]               # nearest grid cell per pixel
    best = int(np.bincount(cells, weights=weights, minlength=COLOUR_DIM).argmax())
    near = (((lab - GRID[best][:, None]) ** 2).sum(0) <= _DOMINANT_RADIUS**2) * weights
    total = near.sum()
    return descriptor, (lab @ near) / total if total > 0 else GRID[best].astype(np.float64)


_FRAMES: dict[tuple[int, int, int], np.ndarray] = {}


def _frame_samples(h: int, w: int, border: int = 3) -> np.ndarray:
    """Flat indices of ~96 pixels of the ``border``-pixel frame of an h x w thumbnail (every k-th)."""
    key = (h, w, border)
    if key not in _FRAMES:
        ring = np.ones((h, w), bool)
        ring[border:-border, border:-border] = False
        _FRAMES[key] = np.flatnonzero(ring.ravel())[:: max(1, int(ring.sum()) // 96)]
    return _FRAMES[key]


def _border_likeness_planes(lab: np.ndarray, h: int, w: int, rgb: np.ndarray | None = None,
                            border: int = 3, sigma: float = 12.0) -> np.ndarray:
    """:func:`border_likeness` (``min_share`` 0) of (3, P) Lab planes -> (P,) float32. Frame samples
    of the same RGB value (a studio background) are one sample: the same minimum, less work."""
    index = _frame_samples(h, w, border)
    if rgb is not None:
        frame = rgb.reshape(-1, 3)[index].astype(np.int32)
        _, first = np.unique((frame[:, 0] << 16) | (frame[:, 1] << 8) | frame[:, 2], return_index=True)
        index = index[first]
    edge = lab[:, index].T                                                              # (m, 3)
    # min_e |p - e|² = |p|² + min_e (|e|² - 2 p·e): one (m, 4) @ (4, P) product, then the column minimum
    rhs = np.empty((len(edge), 4), np.float32)
    rhs[:, :3] = -2.0 * edge
    rhs[:, 3] = (edge**2).sum(1)
    lhs = np.empty((4, lab.shape[1]), np.float32)
    lhs[:3] = lab
    lhs[3] = 1.0
    d2 = (lab**2).sum(0) + (rhs @ lhs).min(axis=0)
    np.maximum(d2, 0.0, out=d2)
    d2 *= np.float32(-1.0 / sigma**2)
    return np.exp(d2, out=d2)


def dominant_colour_distance(dominant: np.ndarray, neighbours: np.ndarray) -> float:
    """Mean CIEDE2000 between each query's dominant colour (n, 3) and those of its neighbours
    (positions (n, k), -1 = none): a label-free measure of how well results keep the colour."""
    valid = neighbours >= 0
    diffs = ciede2000(dominant[:, None, :], dominant[np.clip(neighbours, 0, None)])
    return float(diffs[valid].mean()) if valid.any() else float("nan")


# -- fused vectors: CNN part ⊕ colour part ---------------------------------------------------------
def fuse_parts(cnn: np.ndarray, colour: np.ndarray | None, weight: float) -> np.ndarray:
    """``sqrt(1-w)·cnn ⊕ sqrt(w)·colour`` (each part (n, ·) normalised to unit rows first), the
    vector of the colour-fused encoders (``effnet-lite0-colour:W``): the cosine of two is
    ``(1-w)·cos_cnn + w·cos_colour``. ``weight`` 0 returns the unit CNN part alone."""
    cnn = _unit(cnn)
    if weight <= 0:
        return cnn
    if colour is None:
        raise ValueError("a colour weight above 0 needs the colour part")
    return np.concatenate([np.sqrt(1 - weight) * cnn, np.sqrt(weight) * _unit(colour)], axis=1).astype(np.float32)


def split_fused(vectors: np.ndarray, weight: float, colour_dim: int = COLOUR_DIM) -> tuple[np.ndarray, np.ndarray | None]:
    """The inverse of :func:`fuse_parts`: (unit CNN part, unit colour part or None when ``weight``
    is 0) of vectors fused at ``weight`` — so another weight costs no re-embedding."""
    vectors = np.asarray(vectors, np.float32)
    if weight <= 0:
        return _unit(vectors), None
    return _unit(vectors[:, :-colour_dim]), _unit(vectors[:, -colour_dim:])


FUSED_DEFAULT_WEIGHT = 0.2   # effnet-lite0-colour without a weight (lookalike.encoders.pretrained)


def fused_weight(spec: "str | EncoderSpec") -> float:
    """The colour weight ``w`` of vectors from encoder ``spec`` when they are :func:`fuse_parts`
    vectors (``effnet-lite0-colour[:W]``, ``effnet-lite0,colour=W``), else 0.0 — read from the
    spec alone, so explaining a score never loads the model."""
    try:
        spec = EncoderSpec.parse(spec)
    except ValueError:
        return 0.0
    if spec.kind not in ("effnet-lite0", "effnet-lite0-colour"):
        return 0.0
    weight = FUSED_DEFAULT_WEIGHT if spec.kind == "effnet-lite0-colour" else 0.0
    for value in (spec.name, spec.options.get("colour"), spec.options.get("color")):
        try:
            weight = float(value) if value is not None else weight
        except ValueError:  # a name that is a weights file
            continue
    return weight if 0.0 < weight < 1.0 else 0.0


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

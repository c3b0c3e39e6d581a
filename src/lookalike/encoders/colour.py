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
"""
from __future__ import annotations

import numpy as np
from PIL import Image

DESCRIPTOR_VERSION = "colourdesc/v1"
THUMB = 48  # colour needs few pixels; small thumbnails keep this cheap in the ingest threads
_L = np.arange(10.0, 91.0, 20.0)
_AB = np.arange(-60.0, 61.0, 20.0)
GRID = np.stack(np.meshgrid(_L, _AB, _AB, indexing="ij"), axis=-1).reshape(-1, 3).astype(np.float32)
COLOUR_DIM = len(GRID)
_GRID_SQ = (GRID**2).sum(1)
_SIGMA = 12.0  # softness of the bin assignment, in Lab units
_DOMINANT_RADIUS = 20.0  # pixels this close to the heaviest bin centre define the dominant colour


# -- colour spaces -----------------------------------------------------------------------------
def rgb_to_lab(rgb) -> np.ndarray:
    """sRGB (uint8 or floats 0..255, shape (..., 3)) -> CIE Lab (D65)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375],
                  [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = linear @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


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
def _lab_thumbnail(image: Image.Image, size: int = THUMB) -> np.ndarray:
    small = image.convert("RGB").resize((size, size), Image.BOX)
    # float32 from here on: a few times faster than float64 and far more precise than needed
    return rgb_to_lab(np.asarray(small)).astype(np.float32)


def foreground_weights(lab: np.ndarray, border: int = 3, sigma: float = 12.0,
                       weighting: str = "foreground") -> np.ndarray:
    """(h, w, 3) Lab -> (h, w) weights in (0, 1]: centre prior times "unlike the border".

    ``weighting`` "centre" keeps only the centre prior, "uniform" weighs every pixel the same
    (both exist to measure what the foreground estimate is worth; see docs/encoders.md)."""
    h, w, _ = lab.shape
    if weighting == "uniform":
        return np.ones((h, w))
    ys, xs = np.mgrid[0:h, 0:w]
    centre = np.exp(-(((ys - (h - 1) / 2) / (0.35 * h)) ** 2 + ((xs - (w - 1) / 2) / (0.35 * w)) ** 2) / 2)
    centre = centre.astype(np.float32)
    if weighting == "centre":
        return centre
    ring = np.ones((h, w), bool)
    ring[border:-border, border:-border] = False
    edge = lab[ring][:: max(1, ring.sum() // 96)]  # ~96 samples of the border colours
    flat = lab.reshape(-1, 3)
    d2 = (flat**2).sum(1)[:, None] + (edge**2).sum(1)[None] - 2.0 * flat @ edge.T
    nearest = np.sqrt(np.maximum(d2.min(axis=1), 0.0)).reshape(h, w)
    border_likeness = np.exp(-((nearest / sigma) ** 2))
    return centre * (1 - 0.9 * border_likeness)


# -- descriptors ---------------------------------------------------------------------------------
def _grid_distances(pixels: np.ndarray) -> np.ndarray:
    """Squared Lab distances (n, 245) from pixels to the grid centres, as one matrix product."""
    d2 = (pixels**2).sum(1)[:, None] + _GRID_SQ[None] - 2.0 * pixels @ GRID.T
    return np.maximum(d2, 0.0)


def colour_descriptor(image: Image.Image, weighting: str = "foreground") -> np.ndarray:
    """245-d float32: sqrt of the foreground-weighted soft Lab histogram, L2-normalised."""
    return colour_summary(image, weighting)[0]


def dominant_colour(image: Image.Image, weighting: str = "foreground") -> np.ndarray:
    """Lab (3,) of the product's main colour: the grid cell with the most foreground weight,
    refined to the weighted mean of the pixels within 20 Lab units of it."""
    return colour_summary(image, weighting)[1]


def colour_summary(image: Image.Image, weighting: str = "foreground",
                   lab: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(descriptor, dominant Lab colour) from one pass over the thumbnail."""
    lab = _lab_thumbnail(image) if lab is None else lab
    weights = foreground_weights(lab, weighting=weighting).reshape(-1)
    pixels = lab.reshape(-1, 3)
    d2 = _grid_distances(pixels)
    soft = np.exp(-(d2 - d2.min(axis=1, keepdims=True)) * np.float32(0.5 / _SIGMA**2))
    soft /= soft.sum(axis=1, keepdims=True)
    hist = np.sqrt((soft * weights[:, None]).sum(axis=0))
    descriptor = (hist / max(np.linalg.norm(hist), 1e-12)).astype(np.float32)

    best = int(np.bincount(d2.argmin(axis=1), weights=weights, minlength=COLOUR_DIM).argmax())
    near = d2[:, best] <= _DOMINANT_RADIUS**2
    if near.any() and weights[near].sum() > 0:
        dominant = (pixels[near] * weights[near, None]).sum(0) / weights[near].sum()
    else:
        dominant = GRID[best]
    return descriptor, dominant


def dominant_colour_distance(dominant: np.ndarray, neighbours: np.ndarray) -> float:
    """Mean CIEDE2000 between each query's dominant colour (n, 3) and those of its neighbours
    (positions (n, k), -1 = none): a label-free measure of how well results keep the colour."""
    valid = neighbours >= 0
    diffs = ciede2000(dominant[:, None, :], dominant[np.clip(neighbours, 0, None)])
    return float(diffs[valid].mean()) if valid.any() else float("nan")

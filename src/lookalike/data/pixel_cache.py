"""A catalog's images as one (n, S, S, 3) uint8 array: the training data of trainable encoders.

Decoding a few thousand JPEGs takes longer than an epoch of a small autoencoder, so the array is
cached under ``<catalog>/cache/pixels-<S>/`` and reused while the catalog's items (ids and image
hashes) are unchanged. Images that fail to load are left out and reported, never fatal.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from lookalike.data.artifacts import digest, read_cache, write_cache
from lookalike.data.images import ImageError, open_image, resize_square


@dataclass
class CatalogPixels:
    ids: list[str]
    labels: list[str | None]
    pixels: np.ndarray                      # (n, S, S, 3) uint8, aligned with ids
    errors: list[tuple[str, str]] = field(default_factory=list)   # (id, message) of skipped items
    splits: list[str | None] = field(default_factory=list)        # metadata "split" when present


# (PIL RGB image, size) -> (size, size, 3) uint8: how a trainable encoder squares a photo
Transform = Callable[[Image.Image, int], np.ndarray]


def load_one(path, size: int, transform: Transform | None = None) -> np.ndarray:
    """One image file -> (size, size, 3) uint8: padded to a square on white, or ``transform(image,
    size)`` (decoded at twice ``size`` then, so a crop of part of the photo keeps its detail)."""
    if transform is not None:
        return np.asarray(transform(open_image(path, draft_size=2 * size), size), dtype=np.uint8)
    return np.asarray(resize_square(open_image(path, draft_size=size), size, "pad"), dtype=np.uint8)


def load_pixels(paths: Sequence, size: int, workers: int = 2, progress: bool = True,
                transform: Transform | None = None) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
    """Decode ``paths`` in threads. Returns (pixels of the good ones, their positions, errors)."""
    def work(item):
        i, path = item
        try:
            return i, load_one(path, size, transform), None
        except ImageError as exc:
            return i, None, exc.message

    good, positions, errors = [], [], []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, arr, err in tqdm(pool.map(work, enumerate(paths)), total=len(paths), desc=f"load {size}px",
                                unit="img", disable=not progress, leave=False):
            if err is None:
                good.append(arr)
                positions.append(i)
            else:
                errors.append((i, err))
    pixels = np.stack(good) if good else np.zeros((0, size, size, 3), np.uint8)
    return pixels, positions, errors


def catalog_pixels(cat, size: int, progress: bool = True, workers: int = 2, transform: Transform | None = None,
                   transform_key: str = "") -> CatalogPixels:
    """Every item of ``cat`` at ``size`` px, cached while the catalog's items are unchanged. With a
    ``transform`` (e.g. :func:`lookalike.encoders.autoencoder.foreground_square`) the cache is
    ``pixels-<size>-<transform_key>``; give a key that changes when the transform's output would."""
    if transform is not None and not transform_key:
        raise ValueError("a pixel transform needs a transform_key naming it (the cache folder)")
    items = cat.items()
    stamp = digest(size, *([transform_key] if transform is not None else []), (f"{it.id}\t{it.sha256}" for it in items))
    folder = f"pixels-{size}" + (f"-{transform_key}" if transform is not None else "")
    path = Path(cat.dir) / "cache" / folder / "pixels.npz"
    cached = read_cache(path, stamp)
    if cached is not None:
        meta = cached.meta
        return CatalogPixels(meta["ids"], meta["labels"], cached.arrays["pixels"],
                             [tuple(e) for e in meta["errors"]], meta["splits"])
    pixels, positions, errors = load_pixels([it.path for it in items], size, workers, progress, transform)
    kept = [items[i] for i in positions]
    result = CatalogPixels([it.id for it in kept], [it.label for it in kept], pixels,
                           [(items[i].id, msg) for i, msg in errors],
                           [(it.metadata or {}).get("split") for it in kept])
    write_cache(path, stamp, {"pixels": pixels}, {"ids": result.ids, "labels": result.labels,
                                                  "errors": result.errors, "splits": result.splits})
    return result

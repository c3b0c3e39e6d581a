"""The 2-D catalog map as a PNG: thumbnails at their projected coordinates, framed in a colour per
label or cluster, with a legend. The projection itself is computed in ``lookalike.explore.projection``."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from lookalike.viz.tiles import font, tile

UNLABELLED = "(none)"   # key of items without a label/cluster: drawn grey


def palette(keys: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """A distinct RGB colour per key (tab10/tab20, then hsv for more), most common keys first;
    ``UNLABELLED`` is grey."""
    # matplotlib takes ~1.6 s to import: loaded when a chart is drawn, not at CLI start
    import matplotlib

    order = sorted(set(keys), key=lambda k: (-list(keys).count(k), k))
    # tab10 is the most distinct; tab20 adds lighter twins; beyond 20 spread hues evenly
    name = "tab10" if len(order) <= 10 else ("tab20" if len(order) <= 20 else "hsv")
    cmap, n = matplotlib.colormaps[name], max(len(order), 1)
    colours = {}
    for i, key in enumerate(order):
        rgba = cmap(i if name != "hsv" else i / n)
        colours[key] = tuple(int(255 * c) for c in rgba[:3])
    colours.pop(UNLABELLED, None)
    if UNLABELLED in order:
        colours[UNLABELLED] = (150, 150, 150)
    return colours


def render(coords01: np.ndarray, paths: Sequence[str], keys: Sequence[str], size: int = 4000, thumb: int = 56,
           border: int = 3, title: str = "", seed: int = 0, progress: Callable | None = None) -> Image.Image:
    """Thumbnails at their (n, 2) [0, 1] coordinates on a ``size`` x ``size`` white canvas, each
    framed in its key's colour, with a legend. Drawn in random order (``seed``) so no class always
    ends up on top; ``progress(1)`` is called per thumbnail."""
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    colours = palette(keys)
    margin = thumb // 2 + border + 4
    usable = size - 2 * margin
    for row in np.random.default_rng(seed).permutation(len(paths)):
        x, y = (margin + coords01[row] * usable).astype(int)
        framed = Image.new("RGB", (thumb + 2 * border, thumb + 2 * border), colours[keys[row]])
        framed.paste(tile(paths[row], thumb), (border, border))
        canvas.paste(framed, (int(x) - framed.width // 2, int(y) - framed.height // 2))
        if progress:
            progress(1)
    _legend(canvas, colours, keys, title, font(max(14, size // 150)))
    return canvas


def _legend(canvas: Image.Image, colours: dict, keys: Sequence[str], title: str, text_font) -> None:
    draw = ImageDraw.Draw(canvas)
    counts = {k: list(keys).count(k) for k in colours}
    line = int(text_font.size * 1.5) if hasattr(text_font, "size") else 18
    entries = list(colours.items())[:40]
    width = max([len(title)] + [len(f"{k} ({counts[k]})") for k, _ in entries]) * line // 2 + 3 * line
    height = (len(entries) + 1) * line + line
    draw.rectangle([8, 8, 8 + width, 8 + height], fill=(255, 255, 255), outline=(120, 120, 120))
    draw.text((8 + line // 2, 8 + line // 3), title, fill=(0, 0, 0), font=text_font)
    for i, (key, colour) in enumerate(entries, start=1):
        top = 8 + line // 3 + i * line
        draw.rectangle([8 + line // 2, top, 8 + line // 2 + line - 6, top + line - 6], fill=colour)
        draw.text((8 + 2 * line, top), f"{key} ({counts[key]})", fill=(0, 0, 0), font=text_font)

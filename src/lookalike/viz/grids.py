"""Grids of images: search results (query + ranked hits), duplicate groups, and arrays of generated
images (latent traversals and interpolations)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from lookalike.viz.tiles import TILE, captioned_grid, font, save_png

CAPTION = 44


def result_grid(query_image, results: Sequence, out: str | Path, title: str = "query", columns: int = 6,
                size: int = TILE, query_label: str | None = None) -> Path:
    """Write a grid: the query first (blue frame), then each result with rank, id, score and label.

    ``results`` are ranked hits with ``rank``, ``id``, ``score``, ``label`` and ``path`` (e.g.
    ``lookalike.search.SearchResult``); ``query_image`` is a path or PIL image. Returns ``out``.
    """
    cells = [(query_image, [title[:24], f"query  {query_label or ''}"[:24]])]
    for r in results:
        label = f"{r.label}" if r.label else ""
        cells.append((r.path, [f"#{r.rank} {r.id[:20]}", f"{r.score:.3f}  {label[:14]}"]))
    return save_png(captioned_grid(cells, columns, size, CAPTION, framed=(0,)), out)


def group_grid(paths: Sequence, captions: Sequence[str], out: str | Path, size: int = TILE) -> Path:
    """One group of images (e.g. duplicates): rows of up to 6 thumbnails, a one-line caption
    (at most 28 characters) under each. Returns ``out``."""
    cells = [(path, [text[:28]]) for path, text in zip(paths, captions)]
    return save_png(captioned_grid(cells, 6, size, caption_height=22, font_size=11, fill=(0, 0, 0), indent=0), out)


def array_grid(cells: np.ndarray, out: str | Path, row_labels: Sequence[str], scale: int = 2) -> Path:
    """(rows, cols, S, S, 3) uint8 images -> one PNG, each enlarged ``scale`` times (nearest
    neighbour), with a 28-pixel label column on the left when any of ``row_labels`` is non-empty."""
    rows, cols, s = cells.shape[0], cells.shape[1], cells.shape[2]
    margin = 28 if any(row_labels) else 0
    grid = Image.new("RGB", (margin + cols * s * scale, rows * s * scale), "white")
    draw, text_font = ImageDraw.Draw(grid), font(10)
    for r in range(rows):
        for c in range(cols):
            cell = Image.fromarray(cells[r, c]).resize((s * scale, s * scale), Image.NEAREST)
            grid.paste(cell, (margin + c * s * scale, r * s * scale))
        if row_labels[r]:
            draw.text((3, r * s * scale + s * scale // 2 - 6), row_labels[r], fill="black", font=text_font)
    return save_png(grid, out)

"""PNG figures people look at: search result grids (query + results with ids, scores, labels)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from lookalike.data.images import ImageError, open_image, resize_square

TILE = 160
CAPTION = 44
PAD = 8
QUERY_COLOUR = (37, 99, 235)


def _font(size: int = 12) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def tile(source, size: int = TILE) -> Image.Image:
    """A square thumbnail, or a grey placeholder if the image cannot be read any more."""
    try:
        return resize_square(open_image(source, draft_size=size), size)
    except ImageError:
        return Image.new("RGB", (size, size), (200, 200, 200))


def result_grid(query_image, results: Sequence, out: str | Path, title: str = "query", columns: int = 6,
                size: int = TILE, query_label: str | None = None) -> Path:
    """Write a grid: the query first (blue frame), then each result with rank, id, score and label."""
    cells = [(query_image, [title[:24], f"query  {query_label or ''}"[:24]], True)]
    for r in results:
        label = f"{r.label}" if r.label else ""
        cells.append((r.path, [f"#{r.rank} {r.id[:20]}", f"{r.score:.3f}  {label[:14]}"], False))
    columns = max(1, min(columns, len(cells)))
    rows = (len(cells) + columns - 1) // columns
    canvas = Image.new("RGB", (columns * (size + PAD) + PAD, rows * (size + CAPTION + PAD) + PAD), "white")
    draw, font = ImageDraw.Draw(canvas), _font()
    for n, (source, lines, is_query) in enumerate(cells):
        x = PAD + (n % columns) * (size + PAD)
        y = PAD + (n // columns) * (size + CAPTION + PAD)
        canvas.paste(tile(source, size), (x, y))
        if is_query:
            draw.rectangle([x - 3, y - 3, x + size + 2, y + size + 2], outline=QUERY_COLOUR, width=4)
        for i, line in enumerate(lines):
            draw.text((x + 2, y + size + 4 + i * 16), line, fill=(20, 20, 20), font=font)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out

"""What every PNG renderer shares: the font, square thumbnail tiles, captions and a captioned grid.

Renderers (``grids``, ``map``, ``shop``) build on these so thumbnails, placeholders and caption
text look the same in every figure. Inputs are image paths or PIL images (read through
``lookalike.data.images``, so unreadable files become grey placeholders instead of errors).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from lookalike.data.artifacts import save_image
from lookalike.data.images import ImageError, open_image, resize_square

TILE = 160                      # default tile side, pixels
PAD = 8                         # gap between tiles and around the grid, pixels
LINE = 16                       # caption line height, pixels
TEXT = (20, 20, 20)
PLACEHOLDER = (200, 200, 200)   # unreadable image
QUERY_COLOUR = (37, 99, 235)    # frame of the query tile


def font(size: int = 12) -> ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` pixels (the fixed-size bitmap font on Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def tile(source, size: int = TILE) -> Image.Image:
    """A ``size`` x ``size`` RGB thumbnail of an image path or PIL image (centre-cropped square),
    or a grey placeholder if the image cannot be read any more."""
    try:
        return resize_square(open_image(source, draft_size=size), size)
    except ImageError:
        return Image.new("RGB", (size, size), PLACEHOLDER)


def caption(draw: ImageDraw.ImageDraw, xy: tuple[int, int], lines: Sequence[str], text_font=None,
            fill=TEXT, line_height: int = LINE) -> None:
    """Draw ``lines`` of text downwards from ``xy`` (top-left), ``line_height`` pixels apart."""
    text_font = text_font or font()
    for i, line in enumerate(lines):
        draw.text((xy[0], xy[1] + i * line_height), line, fill=fill, font=text_font)


def captioned_grid(cells: Sequence[tuple[object, Sequence[str]]], columns: int = 6, size: int = TILE,
                   caption_height: int = 44, font_size: int = 12, fill=TEXT, indent: int = 2,
                   framed: Sequence[int] = ()) -> Image.Image:
    """Tiles in rows of ``columns``, each with its caption lines below it; cells are
    (image path or PIL image, lines). Cells whose position is in ``framed`` get a blue frame
    (the query); captions start ``indent`` pixels right of the tile. Returns the RGB canvas: width ``columns * (size + PAD) + PAD``, height
    ``rows * (size + caption_height + PAD) + PAD``."""
    columns = max(1, min(columns, len(cells)))
    rows = (len(cells) + columns - 1) // columns
    canvas = Image.new("RGB", (columns * (size + PAD) + PAD, rows * (size + caption_height + PAD) + PAD), "white")
    draw, text_font = ImageDraw.Draw(canvas), font(font_size)
    for n, (source, lines) in enumerate(cells):
        x = PAD + (n % columns) * (size + PAD)
        y = PAD + (n // columns) * (size + caption_height + PAD)
        canvas.paste(tile(source, size), (x, y))
        if n in framed:
            draw.rectangle([x - 3, y - 3, x + size + 2, y + size + 2], outline=QUERY_COLOUR, width=4)
        caption(draw, (x + indent, y + size + 4), lines, text_font, fill)
    return canvas


def save_png(image: Image.Image, out: str | Path, **options) -> Path:
    """Save ``image`` as PNG at ``out``, atomically (parent folders created); returns the path."""
    return save_image(out, image, "PNG", **options)

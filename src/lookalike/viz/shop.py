"""The shop-the-look PNG: the photo with its garment boxes, and a strip of result thumbnails per region."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from lookalike.viz.tiles import font as text_font, save_png, tile

COLOURS = {"top": (220, 38, 38), "bottom": (37, 99, 235), "footwear": (22, 163, 74), "onepiece": (192, 38, 211),
           "outerwear": (234, 88, 12), "head": (202, 138, 4), "hands": (13, 148, 136)}
PERSON_COLOUR = (120, 120, 120)
PHOTO_HEIGHT = 560
THUMB = 112
CAPTION = 30
PAD = 10
HEADER = 20


def render_shop(photo: Image.Image, result, out: str | Path) -> Path:
    """Write the annotated PNG for a :class:`~lookalike.shop.pipeline.ShopResult` and return its path."""
    scale = PHOTO_HEIGHT / photo.height
    shown = photo.resize((max(1, round(photo.width * scale)), PHOTO_HEIGHT), Image.BILINEAR)
    draw, font = ImageDraw.Draw(shown), text_font(13)
    rows = []  # (colour, title, results or a reason)
    for n, person in enumerate(result.people):
        who = f"person {n + 1}: " if len(result.people) > 1 else ""
        if len(result.people) > 1:
            _box(draw, person.box, scale, PERSON_COLOUR, f"person {n + 1}", font, width=1)
        for region in person.regions:
            seen = getattr(region, "category", None)
            _box(draw, region.box, scale, COLOURS.get(region.name, (0, 0, 0)),
                 f"{region.name}: {seen}" if seen else region.name, font)
            cats = ", ".join(region.categories) if region.categories else "whole catalog"
            probe = f"looks like {seen} p={region.confidence:.2f}; " if seen else ""
            rows.append((COLOURS.get(region.name), f"{who}{region.name} ({probe}vis {region.visibility:.2f}; {cats})",
                         region.results))
        for skipped in person.skipped:
            rows.append(((110, 110, 110), f"{who}{skipped['name']}: skipped - {skipped['reason']}", None))
        filters = ", ".join(f"{a['column']}={a['value']}" for a in person.attributes)
        if filters:
            rows.append(((90, 90, 90), f"{who}filtered by {filters}", None))
    k = max([len(r[2]) for r in rows if r[2]] + [1])
    strip_width = PAD + k * (THUMB + PAD)
    row_height = [HEADER + THUMB + CAPTION + PAD if r[2] is not None else HEADER + 4 for r in rows]
    canvas = Image.new("RGB", (shown.width + PAD * 2 + strip_width, max(PHOTO_HEIGHT, sum(row_height)) + PAD * 2),
                       "white")
    canvas.paste(shown, (PAD, PAD))
    draw = ImageDraw.Draw(canvas)
    x0, y = shown.width + PAD * 2, PAD
    for (colour, title, results), height in zip(rows, row_height):
        draw.text((x0, y), title[:110], fill=colour, font=font)
        for i, hit in enumerate(results or []):
            x = x0 + i * (THUMB + PAD)
            canvas.paste(tile(hit.path, THUMB), (x, y + HEADER))
            draw.rectangle([x - 1, y + HEADER - 1, x + THUMB, y + HEADER + THUMB], outline=colour)
            draw.text((x, y + HEADER + THUMB + 2), f"{hit.score:.3f} {str(hit.label or '')[:12]}",
                      fill=(30, 30, 30), font=text_font(11))
        y += height
    return save_png(canvas, out)


def _box(draw: ImageDraw.ImageDraw, box, scale: float, colour, label: str, font, width: int = 3) -> None:
    x0, y0, x1, y1 = (v * scale for v in box)
    draw.rectangle([x0, y0, x1, y1], outline=colour, width=width)
    text_box = draw.textbbox((x0 + 3, y0 + 2), label, font=font)
    draw.rectangle(text_box, fill=colour)
    draw.text((x0 + 3, y0 + 2), label, fill="white", font=font)

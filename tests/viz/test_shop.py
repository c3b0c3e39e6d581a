"""The shop-the-look figure: the photo scaled to a fixed height with each garment box in its region's
colour, and per region a row of its hits' thumbnails in rank order."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from PIL import Image

from lookalike.viz.shop import COLOURS, PAD, PHOTO_HEIGHT, render_shop

from fakes import centre_colour, outfit_photo, same_colour, tile_boxes

HIT_COLOURS = [(230, 160, 20), (120, 40, 160), (20, 150, 160), (90, 60, 30)]


def result_with(tmp_path, regions: dict[str, tuple[list, int]]):
    """A ShopResult-shaped object: one person, region name -> (box, number of hits)."""
    paths = []
    for i, colour in enumerate(HIT_COLOURS):
        paths.append(tmp_path / f"hit{i}.png")
        Image.new("RGB", (50, 50), colour).save(paths[-1])
    found = [SimpleNamespace(name=name, box=box, categories=[name], visibility=0.9,
                             results=[SimpleNamespace(path=paths[i], score=0.9 - i / 10, label=name) for i in range(n)])
             for name, (box, n) in regions.items()]
    person = SimpleNamespace(box=[0, 0, 200, 400], regions=found, skipped=[{"name": "footwear", "reason": "feet not visible"}],
                             attributes=[])
    return SimpleNamespace(people=[person])


def test_boxes_on_the_scaled_photo_and_a_row_of_thumbnails_per_region(tmp_path):
    top, bottom = [59, 56, 141, 198], [82, 162, 118, 351]
    out = render_shop(outfit_photo(), result_with(tmp_path, {"top": (top, 4), "bottom": (bottom, 2)}), tmp_path / "look.png")
    image = np.asarray(Image.open(out).convert("RGB"))
    scale = PHOTO_HEIGHT / 400
    shown_width = round(200 * scale)
    assert image.shape[0] >= PHOTO_HEIGHT + 2 * PAD and image.shape[1] > shown_width + 2 * PAD
    # the photo, scaled: the red top's middle sits where the outfit photo has it
    assert same_colour(image[PAD + round(130 * scale), PAD + round(100 * scale)], (200, 30, 30), 10)
    # each garment box: its left edge, halfway down, in the region's colour
    for name, (x0, y0, x1, y1) in (("top", top), ("bottom", bottom)):
        edge = image[PAD + round((y0 + y1) / 2 * scale), PAD + round(x0 * scale) + 1]
        assert same_colour(edge, COLOURS[name], 10), (name, edge)
    # right of the photo: 4 thumbnails for the top, 2 for the bottom, in rank order; footwear skipped
    strip = Image.open(out).crop((shown_width + 2 * PAD, 0, image.shape[1], image.shape[0]))
    rows: dict[int, list] = {}
    for box in tile_boxes(strip):
        rows.setdefault(box[1], []).append(box)
    assert [len(rows[y]) for y in sorted(rows)] == [4, 2]
    for y in rows:
        for box, colour in zip(rows[y], HIT_COLOURS):
            assert same_colour(centre_colour(strip, box), colour, 3)

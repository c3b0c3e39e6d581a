"""Box queries: parse_box / crop_box crop exactly the pixels asked for (EXIF orientation applied
first), and Catalog.search(image=..., box=...) searches with just that part."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lookalike.data.images import MIN_BOX_SIDE, BoxError, crop_box, open_image, parse_box


def quadrants(width: int = 120, height: int = 80) -> Image.Image:
    """Red top-left, green top-right, blue bottom-left, white bottom-right."""
    a = np.full((height, width, 3), 255, np.uint8)
    a[: height // 2, : width // 2] = (255, 0, 0)
    a[: height // 2, width // 2:] = (0, 255, 0)
    a[height // 2:, : width // 2] = (0, 0, 255)
    return Image.fromarray(a)


def test_parse_box_accepts_four_numbers_and_rounds_outwards():
    assert parse_box("1,2,30,40") == (1, 2, 30, 40)
    assert parse_box(" 1.6, 2.2 ,29.1,39.9") == (1, 2, 30, 40)
    assert parse_box([0, 0, 10, 10]) == (0, 0, 10, 10)
    for bad, message in (("1,2,3", "four numbers"), ("a,b,c,d", "four numbers"), ("1,2,3,4,5", "four numbers"),
                         ("10,0,5,20", "x0 < x1"), ("0,20,10,20", "y0 < y1"), ("0,0,nan,5", "finite"),
                         ("", "four numbers")):
        with pytest.raises(BoxError, match=message):
            parse_box(bad)


def test_crop_box_takes_exactly_the_box_and_refuses_boxes_off_the_image():
    image = quadrants()
    crop = crop_box(image, "60,0,120,40")
    assert crop.size == (60, 40)
    assert np.all(np.asarray(crop) == (0, 255, 0))  # the green quadrant and nothing else
    edge = crop_box(image, "100,60,500,900")  # a drag past the edge ends at the edge
    assert edge.size == (20, 20) and np.all(np.asarray(edge) == 255)
    with pytest.raises(BoxError, match="outside"):
        crop_box(image, "-5,0,20,20")
    with pytest.raises(BoxError, match="outside"):
        crop_box(image, "120,0,130,20")
    with pytest.raises(BoxError, match="smaller than"):
        crop_box(image, f"0,0,{MIN_BOX_SIDE - 1},30")
    with pytest.raises(BoxError, match="smaller than"):
        crop_box(image, "115,0,200,30")  # 5 px left inside the image


def test_box_is_in_pixels_of_the_photo_as_shown_exif_rotated():
    # stored 120 x 80 landscape with EXIF orientation 6 (rotate 90° clockwise to view): a viewer shows
    # 80 x 120 portrait with red top-right, green bottom-right, blue top-left, white bottom-left
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    quadrants().save(buffer, "PNG", exif=exif)
    shown = open_image(buffer.getvalue())
    assert shown.size == (80, 120)
    colours = {name: np.asarray(crop_box(shown, box)).reshape(-1, 3).mean(axis=0).round()
               for name, box in {"top-right": "40,0,80,60", "bottom-right": "40,60,80,120",
                                 "top-left": "0,0,40,60", "bottom-left": "0,60,40,120"}.items()}
    assert tuple(colours["top-right"]) == (255, 0, 0) and tuple(colours["bottom-right"]) == (0, 255, 0)
    assert tuple(colours["top-left"]) == (0, 0, 255) and tuple(colours["bottom-left"]) == (255, 255, 255)


def test_catalog_search_with_a_box_searches_that_part(shapes_catalog, shapes_folder, tmp_path):
    red = Image.open(shapes_folder / "circle-red" / "circle-red-0.png").convert("RGB")
    blue = Image.open(shapes_folder / "square-blue" / "square-blue-1.png").convert("RGB")
    photo = Image.new("RGB", (red.width + blue.width, max(red.height, blue.height)), "white")
    photo.paste(red, (0, 0))
    photo.paste(blue, (red.width, 0))
    path = tmp_path / "two.png"
    photo.save(path)
    right = f"{red.width},0,{red.width + blue.width},{blue.height}"
    hits = shapes_catalog.search(image=path, box=right, k=3)
    assert hits[0].id.endswith("square-blue-1") and hits[0].score > 0.999
    assert shapes_catalog.search(image=path, box=f"0,0,{red.width},{red.height}", k=1)[0].id.endswith("circle-red-0")
    same = shapes_catalog.search(image=blue, k=3)
    assert [h.id for h in hits] == [h.id for h in same]
    with pytest.raises(BoxError):
        shapes_catalog.search(image=path, box="0,0,5000,x")
    with pytest.raises(ValueError, match="with image"):
        shapes_catalog.search(item=hits[0].id, box=right)

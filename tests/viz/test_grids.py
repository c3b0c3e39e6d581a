"""Grid figures: result grids (query + ranked hits), duplicate groups and arrays of generated images,
checked by what they show: how many tiles, in what layout, each tile showing its own image."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from lookalike.viz.grids import array_grid, group_grid, result_grid
from lookalike.viz.tiles import PLACEHOLDER, QUERY_COLOUR

from fakes import centre_colour, same_colour, tile_boxes

# clearly different solid colours, none close to white, the placeholder grey or the query frame blue
COLOURS = [(200, 30, 30), (30, 160, 60), (230, 160, 20), (120, 40, 160), (20, 150, 160), (90, 60, 30),
           (230, 90, 160), (60, 60, 60), (150, 200, 40), (160, 20, 90)]


def solid(tmp_path, n: int, size=(64, 64)) -> list:
    paths = []
    for i in range(n):
        paths.append(tmp_path / f"c{i}.png")
        Image.new("RGB", size, COLOURS[i]).save(paths[-1])
    return paths


def hits(paths) -> list:
    return [SimpleNamespace(rank=n, id=f"item-{n}", score=1 - n / 10, label=f"label-{n}", path=p)
            for n, p in enumerate(paths, start=1)]


def rows_of(tiles) -> list[list]:
    rows: dict[int, list] = {}
    for box in tiles:
        rows.setdefault(box[1], []).append(box)
    return [rows[y] for y in sorted(rows)]


def test_result_grid_shows_the_query_then_each_hit_in_rank_order(tmp_path):
    query, *results = solid(tmp_path, 9)
    out = result_grid(query, hits(results), tmp_path / "grid.png", columns=4, size=80)
    tiles = tile_boxes(out)
    assert [len(r) for r in rows_of(tiles)] == [4, 4, 1]   # 9 cells in rows of 4
    for box, colour in zip(tiles, COLOURS):
        assert same_colour(centre_colour(out, box), colour, 3), (box, colour)
    image = Image.open(out).convert("RGB")
    x0, y0, x1, y1 = tiles[0]
    assert same_colour(image.getpixel((x0 + 1, (y0 + y1) // 2)), QUERY_COLOUR, 3)      # the query is framed
    bx0, by0, _, by1 = tiles[1]
    assert not same_colour(image.getpixel((bx0 + 1, (by0 + by1) // 2)), QUERY_COLOUR, 60)  # a hit is not
    # each tile has its caption (rank, id, score) in the white band below it
    for x0, _, x1, y1 in tiles:
        band = np.asarray(image.crop((x0, y1, x1, y1 + 30)).convert("L"))
        assert (band < 128).sum() > 30


def test_result_grid_of_a_query_alone_and_an_unreadable_hit(tmp_path):
    (query,) = solid(tmp_path, 1)
    gone = hits([tmp_path / "deleted.png"])
    out = result_grid(query, gone, tmp_path / "grid.png")
    tiles = tile_boxes(out)
    assert len(tiles) == 2 and Image.open(out).width < 2 * 200          # two columns, not six
    assert same_colour(centre_colour(out, tiles[1]), PLACEHOLDER, 2)     # a grey placeholder, no error


def test_group_grid_wraps_after_six(tmp_path):
    paths = solid(tmp_path, 8, size=(80, 60))   # wide images are padded into square tiles
    out = group_grid(paths, [f"copy {i}" for i in range(8)], tmp_path / "group.png", size=64)
    tiles = tile_boxes(out)
    assert [len(r) for r in rows_of(tiles)] == [6, 2]
    for box, colour in zip(tiles, COLOURS):
        assert same_colour(centre_colour(out, box), colour, 3)


@pytest.mark.parametrize("labels", [["a", "b"], ["", ""]])
def test_array_grid_enlarges_each_cell_in_place(tmp_path, labels):
    rows, cols, s, scale = 2, 3, 4, 5
    cells = np.zeros((rows, cols, s, s, 3), np.uint8)
    for r in range(rows):
        for c in range(cols):
            cells[r, c] = COLOURS[r * cols + c]
    image = np.asarray(Image.open(array_grid(cells, tmp_path / "a.png", labels, scale=scale)).convert("RGB"))
    margin = 28 if any(labels) else 0   # the label column
    assert image.shape == (rows * s * scale, margin + cols * s * scale, 3)
    for r in range(rows):
        for c in range(cols):
            block = image[r * s * scale:(r + 1) * s * scale, margin + c * s * scale:margin + (c + 1) * s * scale]
            assert (block == COLOURS[r * cols + c]).all(), (r, c)   # nearest-neighbour: exact colours
    if margin:
        assert (image[:, :margin] < 128).any()   # the row labels are drawn

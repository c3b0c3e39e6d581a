"""The thumbnail map: projections, a PNG of the requested size, JSON with one point per item."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lookalike.explore.projection import normalise, project
from lookalike.viz.map import palette


# t-SNE takes 20-45 s here (the CLI map test runs it by default), UMAP ~100 s with its JIT
@pytest.mark.parametrize("method", ["pca", pytest.param("tsne", marks=pytest.mark.slow),
                                    pytest.param("umap", marks=pytest.mark.slow)])
def test_project_gives_two_coordinates_per_item_and_keeps_groups_apart(method):
    if method == "umap":
        pytest.importorskip("umap")
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(30, 20)) + 8 * np.eye(20)[i] for i in range(2)]).astype(np.float32)
    coords = project(x, method, metric="l2")
    assert coords.shape == (60, 2) and np.isfinite(coords).all()
    a, b = coords[:30].mean(0), coords[30:].mean(0)
    spread = max(coords[:30].std(0).max(), coords[30:].std(0).max())
    assert np.linalg.norm(a - b) > 2 * spread


def test_project_handles_tiny_catalogs():
    assert project(np.ones((2, 5), np.float32), "tsne").shape == (2, 2)


def test_normalise_fits_the_unit_square_and_keeps_aspect():
    coords = normalise(np.array([[0, 0], [10, 5], [5, 2]], np.float32))
    assert coords.min() >= 0 and coords.max() <= 1
    assert coords[1, 0] - coords[0, 0] == pytest.approx(1.0)
    assert coords[1, 1] - coords[0, 1] == pytest.approx(0.5)


def test_palette_gives_distinct_colours_and_grey_for_unlabelled():
    colours = palette(["a", "b", "b", "(none)"])
    assert len(set(colours.values())) == 3 and colours["(none)"] == (150, 150, 150)


def test_cli_map_writes_png_of_requested_size_and_json_per_item(home, shapes_folder):
    from lookalike import Catalog
    from lookalike.cli import app
    from lookalike.explore.projection import load_map

    runner = CliRunner()
    assert runner.invoke(app, ["index", str(shapes_folder), "--catalog", "m", "--encoder", "colour-hist"]).exit_code == 0
    result = runner.invoke(app, ["map", "--catalog", "m", "--method", "pca", "--size", "640", "--thumb", "32", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    stored = json.loads(open(doc["json"]).read())
    assert len(stored["points"]) == 54 == len({p["id"] for p in stored["points"]})
    assert all(0 <= p["x"] <= 1 and 0 <= p["y"] <= 1 for p in stored["points"])
    assert_thumbnails_where_the_points_are(doc["png"], stored["points"], size=640, thumb=32)
    assert load_map(Catalog.open("m"))["method"] == "pca"
    # colouring by cluster needs clusters first, then records them per point
    missing = runner.invoke(app, ["map", "--catalog", "m", "--colour-by", "cluster"])
    assert missing.exit_code == 1 and "lookalike cluster" in missing.output
    assert runner.invoke(app, ["cluster", "--catalog", "m", "--k", "3"]).exit_code == 0
    by_cluster = runner.invoke(app, ["map", "--catalog", "m", "--method", "tsne", "--colour-by", "cluster",
                                     "--size", "500", "--json"])
    assert by_cluster.exit_code == 0, by_cluster.output
    points = load_map(Catalog.open("m"), method="tsne")["points"]
    assert {p["cluster"] for p in points} == {0, 1, 2}


def assert_thumbnails_where_the_points_are(png, points, size, thumb, border=3):
    """The map is ``size`` square with a legend (white box, grey outline) in the top-left corner;
    every point outside the legend has a thumbnail (framed in its label's colour) centred where its
    [0, 1] coordinates put it, inside a margin of half a framed thumbnail plus 4 px; the frame colour
    of every label shows."""
    image = np.asarray(Image.open(png).convert("RGB"), np.int16)
    assert image.shape == (size, size, 3)
    ys, xs = np.nonzero((image == 120).all(axis=2))
    assert len(ys) and ys.min() < size // 4 and xs.min() < size // 4  # the legend's outline, top left
    legend = (xs.min(), ys.min(), xs.max(), ys.max())
    margin = thumb // 2 + border + 4
    usable = size - 2 * margin
    shown = 0
    for p in points:
        x, y = int(margin + p["x"] * usable), int(margin + p["y"] * usable)
        if legend[0] <= x <= legend[2] and legend[1] <= y <= legend[3]:
            continue
        assert (image[y - 2:y + 3, x - 2:x + 3] < 245).any(), p  # covered by a thumbnail, not white canvas
        shown += 1
    assert shown > len(points) // 2
    colours = palette([p["label"] for p in points])
    assert len(colours) == 9
    for label, colour in colours.items():
        assert (np.abs(image - np.array(colour)).max(axis=2) <= 2).sum() > 100, label
    corners = image[[0, 0, -1, -1], [-1, 0, 0, -1]]
    assert (corners == 255).all()  # nothing drawn into the margin's corners

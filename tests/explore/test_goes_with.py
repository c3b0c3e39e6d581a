"""Goes-with: every method returns only target-category items; the centroid shift does what the
paper says; a map learned from pairs beats it when pairs follow a rule; colour is measured."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from lookalike.explore import goes_with as gw

from fakes import centre_colour, same_colour, tile_boxes
def synthetic(n_per=30, dim=12, seed=0):
    """Two categories; item i of "tops" goes with item i of "bottoms" via a fixed rotation."""
    rng = np.random.default_rng(seed)
    tops = rng.normal(size=(n_per, dim)) + 3 * np.eye(dim)[0]
    rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    bottoms = tops @ rotation + 0.05 * rng.normal(size=(n_per, dim))
    vectors = np.vstack([tops, bottoms]).astype(np.float32)
    categories = ["tops"] * n_per + ["bottoms"] * n_per
    colour = np.abs(rng.normal(size=(2 * n_per, 8))).astype(np.float32)
    colour /= np.linalg.norm(colour, axis=1, keepdims=True)
    dominant = rng.uniform([20, -40, -40], [80, 40, 40], size=(2 * n_per, 3)).astype(np.float32)
    data = gw.GoesWithData(ids=[f"i{k}" for k in range(2 * n_per)], vectors=vectors, categories=categories,
                           metric="l2", colour=colour, dominant=dominant)
    pairs = [(k, n_per + k) for k in range(n_per)]
    return data, pairs


@pytest.mark.parametrize("method", ["centroid", "colour", "learned"])
def test_results_are_all_in_the_target_category(method):
    data, pairs = synthetic()
    learned = gw.LearnedMap().fit(data.vectors, pairs) if method == "learned" else None
    for query in (0, 5, 40):
        target = "bottoms" if data.categories[query] == "tops" else "tops"
        results = gw.recommend(data, query, target, k=7, method=method, learned=learned)
        assert len(results) == 7 and [h.rank for h in results] == list(range(1, 8))
        assert {data.categories[data.row_of[h.id]] for h in results} == {target} == {h.label for h in results}
        scores = [h.score for h in results]
        assert scores == sorted(scores, reverse=True)
        assert [h.distance for h in results] == sorted(h.distance for h in results)


def test_centroid_shift_moves_the_query_by_the_difference_of_means():
    # tops at x=0 (mean y=1), bottoms at x=10 (mean y=6): shift = (10, 5)
    vectors = np.array([[0, 0], [0, 2], [10, 5], [10, 6], [10, 7]], np.float32)
    data = gw.GoesWithData(ids=list("abcde"), vectors=vectors, categories=["t", "t", "b", "b", "b"], metric="l2")
    assert [h.id for h in gw.recommend(data, 0, "b", k=1)] == ["c"]   # (0,0) + shift = (10,5)
    [hit] = gw.recommend(data, 1, "b", k=1)
    assert hit.id == "e"                                               # (0,2) + shift = (10,7)
    # l2 scores and distances come from lookalike.index.distances: the shifted query lands on e
    assert hit.distance == pytest.approx(0.0, abs=1e-3) and hit.score == pytest.approx(1.0, abs=1e-3)
    # (plain nearest neighbour of (0,2) would be (10,5): the shift is what picks (10,7))


def test_learned_map_finds_partners_the_centroid_shift_misses():
    data, pairs = synthetic()
    rows = {r["method"]: r["hit_rate@5"] for r in gw.pair_hit_rate(data, pairs, ["centroid", "learned"], k=5)}
    assert rows["learned"] > rows["centroid"] + 0.3


def test_colour_consistency_has_a_random_baseline_and_colour_method_wins():
    data, _ = synthetic()
    table = gw.colour_consistency(data, ["centroid", "colour"], k=5, n_queries=20)
    by = {r["method"]: r for r in table}
    assert by["random (all target items)"]["queries"] == 20
    assert by["colour"]["colour_similarity"] > by["random (all target items)"]["colour_similarity"]
    assert all(r["delta_e"] > 0 for r in table)
    assert 0 < by["colour"]["coverage"] <= 1 and by["random (all target items)"]["coverage"] == 1.0


def test_bad_requests_raise_clear_errors():
    data, _ = synthetic()
    with pytest.raises(KeyError):
        gw.recommend(data, 0, "hats")
    with pytest.raises(ValueError, match="pairs"):
        gw.recommend(data, 0, "bottoms", method="learned")
    with pytest.raises(ValueError, match="unknown method"):
        gw.recommend(data, 0, "bottoms", method="magic")


def test_read_pairs_skips_header_and_reports_unknown_ids(tmp_path):
    data, _ = synthetic()
    csv = tmp_path / "pairs.csv"
    csv.write_text("a,b\ni0,i30\ni1,missing\nonly-one\n")
    pairs, problems = gw.read_pairs(csv, data)
    assert pairs == [(0, 30)]
    assert any("missing" in p for p in problems) and any("two item ids" in p for p in problems)


def test_cli_goes_with_recommends_evaluates_and_writes_a_grid(home, shapes_folder, tmp_path):
    from lookalike.cli import app

    runner = CliRunner()
    assert runner.invoke(app, ["index", str(shapes_folder), "--catalog", "gw", "--encoder", "colour-hist"]).exit_code == 0
    item = "circle-red/circle-red-0"
    result = runner.invoke(app, ["goes-with", "--catalog", "gw", "--item", item, "--category", "square-blue",
                                 "-k", "4", "--method", "colour", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [r["category"] for r in doc["results"]["results"]] == ["square-blue"] * 4
    # the grid: the red circle, then the four blue squares, each tile showing its own image
    grid = doc["results"]["grid"]
    tiles = tile_boxes(grid)
    assert len(tiles) == 5, tiles
    for box, path in zip(tiles, [shapes_folder / f"{item}.png"] + [r["path"] for r in doc["results"]["results"]]):
        assert same_colour(centre_colour(grid, box), centre_colour(path)), path
    assert same_colour(centre_colour(grid, tiles[0]), (220, 40, 40), 40)
    assert all(same_colour(centre_colour(grid, box), (40, 70, 220), 40) for box in tiles[1:])
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("\n".join(f"circle-{c}/circle-{c}-{i},square-{c}/square-{c}-{i}"
                               for c in ("red", "green", "blue") for i in range(6)))
    evaluated = runner.invoke(app, ["goes-with", "--catalog", "gw", "--evaluate", "12", "--pairs", str(pairs),
                                    "-k", "5", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout)
    assert [r["method"] for r in report["colour_consistency"]][0].startswith("random")
    assert {r["method"] for r in report["pairs"]} == {"centroid", "colour", "learned"}
    # the map fitted on the pairs was saved: --method learned works later without --pairs
    served = runner.invoke(app, ["goes-with", "--catalog", "gw", "--item", item, "--category", "square-red",
                                 "-k", "3", "--method", "learned", "--no-grid", "--json"])
    assert served.exit_code == 0, served.output
    assert [r["category"] for r in json.loads(served.stdout)["results"]["results"]] == ["square-red"] * 3
    bad = runner.invoke(app, ["goes-with", "--catalog", "gw", "--item", item, "--category", "hats"])
    assert bad.exit_code == 1 and "unknown category" in bad.output


def test_categories_fall_back_to_clusters(home, shapes_folder):
    from lookalike.cli import app

    runner = CliRunner()
    assert runner.invoke(app, ["index", str(shapes_folder), "--catalog", "gc", "--encoder", "colour-hist"]).exit_code == 0
    # a column the catalog does not have is a mistake, not a request for clusters
    typo = runner.invoke(app, ["goes-with", "--catalog", "gc", "--item", "circle-red/circle-red-0",
                               "--category", "cluster-0", "--category-column", "style"])
    assert typo.exit_code == 2 and "unknown column 'style'" in typo.output and "label" in typo.output
    missing = runner.invoke(app, ["goes-with", "--catalog", "gc", "--item", "circle-red/circle-red-0",
                                  "--category", "cluster-0", "--category-column", ""])
    assert missing.exit_code == 1 and "lookalike cluster" in missing.output
    assert runner.invoke(app, ["cluster", "--catalog", "gc", "--k", "3"]).exit_code == 0
    result = runner.invoke(app, ["goes-with", "--catalog", "gc", "--item", "circle-red/circle-red-0",
                                 "--category", "cluster-1", "--category-column", "", "--no-grid", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["category_source"].startswith("clusters") and doc["categories"] == ["cluster-0", "cluster-1", "cluster-2"]
    assert {r["category"] for r in doc["results"]["results"]} == {"cluster-1"}
    unknown = runner.invoke(app, ["goes-with", "--catalog", "gc", "--item", "nope", "--category", "cluster-1",
                                  "--category-column", ""])
    assert unknown.exit_code == 1 and "unknown item" in unknown.output

"""The pipeline through Catalog.search on vector catalogs whose scores are known exactly:
query [1, 0] scores item i (vector [s_i, sqrt(1 - s_i²)]) at s_i."""
from __future__ import annotations

import numpy as np
import pytest

from lookalike.catalog import FilterError, UnknownColumn
from lookalike.search.boosts import make_rules
from lookalike.search.pipeline import candidate_depth, is_exact
from lookalike.search.results import SearchResult

from fakes import vector_catalog

Q = [1.0, 0.0]


def unit(scores) -> np.ndarray:
    s = np.asarray(scores, np.float64)
    return np.stack([s, np.sqrt(1 - s ** 2)], 1).astype(np.float32)


def ids(results) -> list[int]:
    return [int(r.id.split("-")[1]) for r in results]


def test_candidate_depth():
    assert candidate_depth(10, 10_000) == 200 and candidate_depth(50, 10_000) == 500
    assert candidate_depth(10, 30) == 30 and candidate_depth(1, 0) == 1


def test_is_exact_counts_unpinned_unburied_hits_at_the_bound():
    hits = [SearchResult(i + 1, str(i), s, 0, None) for i, s in enumerate([0.9, 0.8, 0.7])]
    assert is_exact(hits, 2, 0.8, make_rules())
    assert not is_exact(hits, 3, 0.8, make_rules())
    assert not is_exact(hits, 2, 0.8, make_rules(bury=["1"]))
    pinned_first = [hits[2], hits[0], hits[1]]
    assert is_exact(pinned_first, 2, 0.85, make_rules(pin=["2"]))   # one pin + one sure hit
    assert not is_exact(pinned_first, 2, 0.95, make_rules(pin=["2"]))


def test_boost_reaches_past_the_first_candidate_list(tmp_path):
    # 600 items scoring 0.99 .. 0.39; only the 500th is in stock: +1.0 lifts it from rank 500 to 1,
    # past the first 200 candidates, so the pipeline must deepen to find it.
    n = 600
    scores = 0.99 - np.arange(n) * 0.001
    meta = [{"in_stock": "1" if i == 499 else "0"} for i in range(n)]
    cat = vector_catalog(tmp_path, "deep", unit(scores), ["x"] * n, metadata=meta)
    results = cat.search(vector=Q, k=3, boosts=["in_stock=1:+1.0"])
    assert ids(results) == [499, 0, 1]
    assert results[0].score == pytest.approx(scores[499] + 1.0, abs=1e-5)
    assert results[0].score_parts["boost:in_stock=1"] == 1.0
    assert results[1].score_parts == {"visual": pytest.approx(0.99, abs=1e-5)}
    demoted = cat.search(vector=Q, k=3, boosts=["in_stock=0:-0.5"])
    assert ids(demoted) == [499, 0, 1]


def test_filters_are_exact_and_validated(tmp_path):
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    meta = [{"price": "10"}, {"price": "60"}, {"price": "30"}, {"price": "45"}, {"colour": "red"}]
    cat = vector_catalog(tmp_path, "f", unit(scores), ["x"] * 5, metadata=meta)
    assert ids(cat.search(vector=Q, k=10, filters=["20<=price<=50"])) == [2, 3]
    assert ids(cat.search(vector=Q, k=10, filters=["price missing"])) == [4]
    assert ids(cat.search(vector=Q, k=1, filters=["price>=30"], where={"label": "x"})) == [1]
    with pytest.raises(UnknownColumn, match="colour, price"):
        cat.search(vector=Q, filters=["size<3"])
    with pytest.raises(FilterError, match="numeric columns are: price"):
        cat.search(vector=Q, filters=["colour<3"])
    with pytest.raises(FilterError):
        cat.search(vector=Q, boosts=["price<cheap:0.1"])
    with pytest.raises(UnknownColumn):
        cat.search(vector=Q, boosts=["stock=1:0.1"])


def test_pins_and_burials(tmp_path):
    cat = vector_catalog(tmp_path, "p", unit([0.9, 0.8, 0.7, 0.6, 0.5]), ["x"] * 5)
    results = cat.search(vector=Q, k=3, pin=["item-4"], bury=["item-0"])
    assert ids(results) == [4, 1, 2]
    assert results[0].score == pytest.approx(0.5, abs=1e-6) and results[0].score_parts["pin"] == 1.0
    assert ids(cat.search(vector=Q, k=5, bury=["item-0"])) == [1, 2, 3, 4, 0]
    assert ids(cat.search(vector=Q, k=2, pin=["item-3"], filters=["label=y"])) == []  # a pin obeys filters


def test_group_by_counts_products_and_excludes_the_query_product(tmp_path):
    # products: A = 0, 2, 5; B = 1, 3; C = 4; item 6 has none; query product Q = 7, 8
    scores = [0.95, 0.9, 0.85, 0.8, 0.75, 0.3, 0.2, 0.99, 0.97]
    products = ["A", "B", "A", "B", "C", "A", "", "Q", "Q"]
    colours = ["red", "blue", "navy", "green", "red", "black", "white", "red", "red"]
    meta = [{"product_id": p, "colour": c} for p, c in zip(products, colours)]
    cat = vector_catalog(tmp_path, "g", unit(scores), ["x"] * 9, metadata=meta)
    results = cat.search(vector=Q, k=3, group_by="product_id", variant="colour")
    assert ids(results) == [7, 0, 1]
    assert [r.group for r in results] == [["item-8"], ["item-2", "item-5"], ["item-3"]]
    assert [r.matched_variant for r in results] == ["red", "red", "blue"]
    by_item = cat.search(item="item-7", k=10, group_by="product_id")
    assert ids(by_item) == [0, 1, 4, 6]                      # 4 products; none of Q
    assert by_item[0].group == ["item-2", "item-5"]
    plain = cat.search(item="item-7", k=2)
    assert ids(plain) == [8, 0]                              # without grouping only the item is excluded
    filtered = cat.search(vector=Q, k=2, group_by="product_id", filters=["colour!=red"])
    assert ids(filtered) == [1, 2] and filtered[1].group == ["item-5"]   # A's best non-red image is 2
    with pytest.raises(UnknownColumn):
        cat.search(vector=Q, group_by="style")


def test_grouping_deepens_until_k_products(tmp_path):
    # 300 images of product P score highest, then 3 single-image products: k=3 needs depth > 300.
    n = 303
    scores = 0.99 - np.arange(n) * 0.001
    meta = [{"product_id": "P" if i < 300 else f"S{i}"} for i in range(n)]
    cat = vector_catalog(tmp_path, "deep-g", unit(scores), ["x"] * n, metadata=meta)
    results = cat.search(vector=Q, k=3, group_by="product_id")
    assert ids(results) == [0, 300, 301] and len(results[0].group) == 299


def test_fused_weight_reads_the_spec():
    from lookalike.encoders.colour import fused_weight

    assert fused_weight("effnet-lite0-colour") == 0.2
    assert fused_weight("effnet-lite0-colour:0.3") == 0.3
    assert fused_weight("effnet-lite0,colour=0.4") == 0.4
    assert fused_weight("effnet-lite0") == 0.0 and fused_weight("colour-hist") == 0.0
    assert fused_weight("vae:shoes@loglik") == 0.0 and fused_weight("not a spec,,") == 0.0


def test_visual_score_splits_into_shape_and_colour(tmp_path):
    from lookalike.encoders.colour import COLOUR_DIM, fuse_parts

    rng = np.random.default_rng(0)
    cnn, colour = rng.normal(size=(6, 16)), rng.random((6, COLOUR_DIM))
    vectors = fuse_parts(cnn, colour, 0.3)
    cat = vector_catalog(tmp_path, "fused", vectors, ["x"] * 6, encoder="effnet-lite0-colour:0.3")
    results = cat.search(item="item-0", k=3, expansion="none")  # plain cosines (re-ranked: test_expansion)
    unit = lambda x: x / np.linalg.norm(x)   # noqa: E731
    for r in results:
        i = int(r.id.split("-")[1])
        parts = r.score_parts
        assert parts["visual.shape"] == pytest.approx(0.7 * unit(cnn[0]) @ unit(cnn[i]), abs=1e-5)
        assert parts["visual.colour"] == pytest.approx(0.3 * unit(colour[0]) @ unit(colour[i]), abs=1e-5)
        assert parts["visual.shape"] + parts["visual.colour"] == pytest.approx(r.score, abs=1e-5)
    plain = vector_catalog(tmp_path, "plain", vectors, ["x"] * 6, encoder="tiny")
    assert set(plain.search(item="item-0", k=1)[0].score_parts) == {"visual"}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 5.0, -1.5, "0.5x"])
def test_min_score_outside_the_score_range_is_a_value_error(tmp_path, bad):
    """`--min-score nan` kept every hit (NaN compares False), 5 or inf answered "no results"."""
    cat = vector_catalog(tmp_path, "m", unit([0.9, 0.8, 0.7]), ["x"] * 3)
    with pytest.raises(ValueError, match="min_score"):
        cat.search(item="item-0", k=2, min_score=bad)
    assert ids(cat.search(item="item-0", k=2, min_score=np.float32(-1.0))) == [1, 2]

"""The pipeline against a brute-force oracle on 20,000 random items: filters stay exact in recall,
boosts and grouping reorder a deeper list yet return exactly the true top k."""
from __future__ import annotations

import numpy as np
import pytest

from fakes import vector_catalog

N, DIM, K = 20_000, 16, 10
COLOURS = ["red", "blue", "green", "black", "white"]


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(N, DIM)).astype(np.float32)
    price = rng.uniform(1, 200, N).round(2)
    colour = rng.integers(0, len(COLOURS), N)
    stock = rng.integers(0, 2, N)
    product = np.cumsum(rng.random(N) < 0.35)          # runs of ~3 consecutive items per product
    meta = [{"price": f"{p:.2f}", "colour": COLOURS[c], "in_stock": str(s), "product_id": f"p{g}"}
            for p, c, s, g in zip(price, colour, stock, product)]
    cat = vector_catalog(tmp_path_factory.mktemp("big"), "big", vectors, ["x"] * N, metadata=meta)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return cat, unit, price, colour, stock, product, rng.normal(size=(4, DIM)).astype(np.float32)


def oracle(unit, query, mask, bonus=0.0, groups=None):
    scores = unit @ (query / np.linalg.norm(query)) + bonus
    order = [int(i) for i in np.argsort(-scores, kind="stable") if mask[i]]
    if groups is not None:
        seen, kept = set(), []
        for i in order:
            if groups[i] not in seen:
                seen.add(groups[i])
                kept.append(i)
        order = kept
    return [f"item-{i}" for i in order[:K]]


def test_filtered_search_is_exact(big):
    cat, unit, price, colour, stock, product, queries = big
    mask = (price < 50) & np.isin(colour, [0, 1])
    for q in queries:
        got = [r.id for r in cat.search(vector=q, k=K, filters=["price<50", "colour in red,blue"], expansion="none")]
        assert got == oracle(unit, q, mask)


def test_boosted_search_is_exact(big):
    cat, unit, price, colour, stock, product, queries = big
    for q in queries:
        got = cat.search(vector=q, k=K, boosts=["in_stock=1:+0.6"], expansion="none")
        assert [r.id for r in got] == oracle(unit, q, np.ones(N, bool), bonus=0.6 * stock)
        assert all(r.score == pytest.approx(r.score_parts["visual"] + r.score_parts.get("boost:in_stock=1", 0), abs=1e-6)
                   for r in got)


def test_grouped_filtered_boosted_search_is_exact(big):
    cat, unit, price, colour, stock, product, queries = big
    mask = price >= 20
    for q in queries:
        got = cat.search(vector=q, k=K, filters=["price>=20"], boosts=["colour=green:+0.3"], group_by="product_id",
                         expansion="none")
        assert [r.id for r in got] == oracle(unit, q, mask, bonus=0.3 * (colour == 2), groups=product)
        assert len({r.metadata["product_id"] for r in got}) == K
        for r in got:   # every other item of the product that passes the filter is listed
            g = product[int(r.id.split("-")[1])]
            assert sorted(r.group) == sorted(f"item-{i}" for i in np.flatnonzero((product == g) & mask)
                                             if f"item-{i}" != r.id)

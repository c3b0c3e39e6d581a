"""The precomputed similar-items table (lookalike.search.similar) answers exactly as live search."""
from __future__ import annotations

import numpy as np
import pytest

from fakes import vector_catalog
from lookalike.encoders.colour import COLOUR_DIM, fuse_parts
from lookalike.index import faiss_backend
from lookalike.search import expansion as expansion_module
from lookalike.search.similar import DEPTH, SimilarTable, supports

ENCODER = "effnet-lite0-colour:0.3"   # a fused encoder: the default αQE + DBA re-ranking and the colour split


def clustered(n: int, seed: int, dim: int = 24) -> np.ndarray:
    """Colour-fused unit vectors of ``n`` items in a dozen clusters (neighbours are close, ties rare)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, dim))
    cnn = centres[rng.integers(12, size=n)] + 0.4 * rng.normal(size=(n, dim))
    colour = rng.random((n, COLOUR_DIM)) ** 3
    return fuse_parts(cnn, colour, 0.3).astype(np.float32)


def shop_catalog(home, n: int, seed: int = 0, name: str = "shop"):
    rows = [{"product_id": f"p{i // 3}", "in_stock": i % 2} for i in range(n)]
    return vector_catalog(home, name, clustered(n, seed), ["x"] * n, encoder=ENCODER, metadata=rows)


def live(cat, item: str, k: int, **options):
    """The live search of the default item query (naming the default re-ranking skips the table)."""
    return cat.search(item=item, k=k, expansion=cat.expansion_for(ENCODER), **options)


def assert_same(a, b):
    assert [(h.rank, h.id, h.label, h.path, h.metadata) for h in a] == [(h.rank, h.id, h.label, h.path, h.metadata)
                                                                        for h in b]
    assert [h.score for h in a] == [h.score for h in b] and [h.distance for h in a] == [h.distance for h in b]
    for x, y in zip(a, b):
        assert x.score_parts.keys() == y.score_parts.keys()
        np.testing.assert_allclose([x.score_parts[p] for p in x.score_parts], [y.score_parts[p] for p in x.score_parts],
                                   atol=1e-6)


def check_every_item(cat, ks=(1, 5, 12), every: int = 10):
    """Every item at the table's depth, every ``every``-th also at each of ``ks``."""
    for i, item in enumerate(cat.items()):
        for k in (DEPTH, *(ks if i % every == 0 else ())):
            table = cat.similar_from_table(item.id, k)
            assert table is not None, (item.id, k)
            assert_same(table, live(cat, item.id, k))
            assert_same(cat.search(item=item.id, k=k), table)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_table_equals_live_search(home, monkeypatch, kind):
    if kind == "hnsw":   # a graph index (and no DBA: its catalog is "large")
        monkeypatch.setattr(faiss_backend, "HNSW_THRESHOLD", 100)
        monkeypatch.setattr(expansion_module, "MAX_DBA_ITEMS", 100)
    cat = shop_catalog(home, 160)
    assert cat.similar_from_table("item-0", 5) is None   # nothing built yet
    assert cat.build_similar(progress=False)
    check_every_item(cat)
    # min_score cuts as live search does; deeper than the table, other options: live search answers
    assert_same(cat.similar_from_table("item-3", 12, min_score=0.9), live(cat, "item-3", 12, min_score=0.9))
    assert cat.similar_from_table("item-3", DEPTH + 1) is None
    assert len(cat.search(item="item-3", k=DEPTH + 1)) == DEPTH + 1
    grouped = cat.search(item="item-3", k=5, group_by="product_id")
    assert all(h.metadata["product_id"] != "p1" for h in grouped)
    with pytest.raises(KeyError):
        cat.similar_from_table("no-such-item", 5)


def test_table_after_writes_and_removals(home):
    cat = shop_catalog(home, 120)
    cat.use_similar(refresh=False)
    assert cat.build_similar()
    cat.add_embedded([{"id": f"new-{i}", "path": "/nowhere/new.jpg", "label": "x"} for i in range(6)],
                     clustered(6, seed=9), ENCODER, fingerprint="fp")
    cat.remove(["item-5", "item-7"])
    # stale: never read; the live search answers (and sees the new items)
    assert cat.similar_from_table("item-0", 12) is None
    hits = cat.search(item="item-0", k=12)
    assert "item-5" not in {h.id for h in hits}
    assert_same(hits, live(cat, "item-0", 12))
    assert cat.build_similar()
    check_every_item(cat, every=20)
    assert cat.similar_from_table("new-2", 12) is not None


def test_background_refresh_and_switch(home):
    cat = shop_catalog(home, 80)
    cat.use_similar(refresh=True)
    cat.warm()   # builds the table
    assert cat.similar_from_table("item-1", 10) is not None
    cat.update_metadata("item-2", {"in_stock": 5})   # metadata: hits read it live, the table stays fresh
    assert cat.similar_from_table("item-1", 10) is not None
    assert cat.search(item="item-2", k=3)[0].id != "item-2"
    cat.remove(["item-3"])   # a vector write makes it stale
    assert cat.similar_from_table("item-1", 10) is None
    cat.search(item="item-1", k=10)   # live, and starts the rebuild in a thread
    cat._similar._building.join(timeout=60)
    cat.search(item="item-1", k=10)
    assert_same(cat.similar_from_table("item-1", 10), live(cat, "item-1", 10))
    cat.use_similar(False)
    assert cat.similar_from_table("item-1", 10) is None


def test_table_files(home, tmp_path):
    cat = shop_catalog(home, 60)
    cat.build_similar()
    folders = list((cat.dir / "cache").glob("*/similar/*/stamp.json"))
    assert len(folders) == 1
    table = SimilarTable.load(folders[0].parent)
    assert table.hits.shape == (60, DEPTH) and table.hits.dtype == np.int64
    assert table.distances.dtype == np.float32 and table.colour.shape == (60, DEPTH)
    assert (table.hits[:, :59] >= 0).all() and (table.hits[:, 59:] == -1).all()   # 59 others, then padding
    assert np.all(np.diff(table.distances[:, :59], axis=1) >= 0)
    assert table.lookup(10**9, 5) is None and table.lookup(int(table.rowids[0]), DEPTH + 1) is None
    # a rebuild for a new data version replaces the old folder
    cat.remove(["item-1"])
    cat.build_similar()
    assert len(list((cat.dir / "cache").glob("*/similar/*/stamp.json"))) == 1


def test_supports_only_nested_indexes():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(3000, 16)).astype(np.float32)
    flat = faiss_backend.FaissIndex(16, kind="flat")
    flat.add(np.arange(3000), vectors)
    hnsw = faiss_backend.FaissIndex(16, kind="hnsw", ef_search=32)
    hnsw.add(np.arange(3000), vectors)
    ivf = faiss_backend.FaissIndex(16, kind="ivfpq")
    ivf.add(np.arange(3000), vectors)
    assert supports(flat) and not supports(hnsw, depth=64) and supports(hnsw, depth=31) and not supports(ivf)
    # what makes a table exact: HNSW's top j is the first j rows of its top k at one breadth
    _, deep = hnsw.search(vectors[:50], 32)
    for j in (1, 5, 11):
        _, shallow = hnsw.search(vectors[:50], j)
        np.testing.assert_array_equal(shallow, deep[:, :j])

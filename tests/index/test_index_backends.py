"""Conformance tests every index backend passes: faiss (flat, HNSW, HNSW-fp16) and milvus-lite."""
from __future__ import annotations

import numpy as np
import pytest

import lookalike.index.faiss_backend as faiss_backend
from lookalike.index import load_index, make_index

DIM = 32

BACKENDS = {
    "faiss-flat": ("faiss", {"kind": "flat"}),
    "faiss-hnsw": ("faiss", {"kind": "hnsw"}),
    "faiss-hnsw-fp16": ("faiss", {"kind": "hnsw-fp16"}),
    "milvus-lite": ("milvus", {}),
}


def _milvus_available() -> bool:
    try:
        import milvus_lite  # noqa: F401
        import pymilvus  # noqa: F401
    except Exception:
        return False
    return True


@pytest.fixture(params=list(BACKENDS))
def backend(request, tmp_path, monkeypatch):
    name, params = BACKENDS[request.param]
    if name == "milvus":
        if not _milvus_available():
            pytest.skip("pymilvus / milvus-lite not installed (pip install lookalike[milvus])")
        monkeypatch.delenv("LOOKALIKE_MILVUS_URI", raising=False)  # always the embedded milvus-lite
    return lambda metric="cosine": make_index(name, DIM, metric, **params)


def clustered(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, DIM))
    return (centres[rng.integers(0, 12, n)] + 0.4 * rng.normal(size=(n, DIM))).astype(np.float32)


def exact(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int, metric: str):
    if metric == "cosine":
        v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        dist = 1 - q @ v.T
    else:
        dist = np.linalg.norm(queries[:, None, :] - vectors[None], axis=2)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, order, 1), ids[order]


VECTORS = clustered(400)
IDS = np.arange(400, dtype=np.int64) * 10 + 7           # ids are not positions
QUERIES = clustered(15, seed=1)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_same_top_k_as_exact_search(backend, metric):
    index = backend(metric)
    index.add(IDS, VECTORS)
    assert len(index) == 400
    dist, ids = index.search(QUERIES, 10)
    true_dist, true_ids = exact(VECTORS, IDS, QUERIES, 10, metric)
    assert ids.shape == dist.shape == (15, 10)
    assert (ids == true_ids).mean() >= 0.98           # ties aside, the same neighbours in order
    np.testing.assert_allclose(dist, true_dist, atol=2e-3 * (1 if metric == "cosine" else 10))
    assert np.all(np.diff(dist, axis=1) >= -1e-5)      # sorted closest first


def test_add_replace_and_remove(backend):
    index = backend()
    index.add(IDS[:200], VECTORS[:200])
    index.add(IDS[200:], VECTORS[200:])                # incremental add
    assert len(index) == 400
    moved = VECTORS[300] * -1                          # re-adding an id replaces its vector
    index.add(IDS[:1], moved[None])
    assert len(index) == 400
    dist, ids = index.search(moved[None], 1)
    assert ids[0, 0] == IDS[0] and dist[0, 0] == pytest.approx(0, abs=1e-3)
    assert index.remove(IDS[:50]) == 50
    assert index.remove(np.array([123456789])) == 0    # unknown ids are ignored
    assert len(index) == 350
    _, ids = index.search(VECTORS[:50], 5)
    assert not np.isin(ids, IDS[:50]).any()
    _, ids = index.search(VECTORS[60:61], 1)
    assert ids[0, 0] == IDS[60]


def test_persistence_after_reopen(backend, tmp_path):
    index = backend()
    index.add(IDS, VECTORS)
    before = index.search(QUERIES, 5)
    index.save(tmp_path / "idx")
    del index
    reopened = load_index(tmp_path / "idx")
    assert len(reopened) == 400
    after = reopened.search(QUERIES, 5)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_allclose(before[0], after[0], atol=1e-5)
    reopened.add(np.array([99999]), QUERIES[:1])       # still writable, and saves again in place
    reopened.save(tmp_path / "idx")
    again = load_index(tmp_path / "idx")
    assert len(again) == 401
    assert again.search(QUERIES[:1], 1)[1][0, 0] == 99999


def test_filters_return_k_matching_hits(backend):
    index = backend()
    index.add(IDS, VECTORS)
    allowed = IDS[::7]                                  # 58 of 400
    dist, ids = index.search(QUERIES, 10, allowed_ids=allowed)
    assert np.isin(ids, allowed).all()                  # every slot filled, all from the filter
    _, true_ids = exact(VECTORS[::7], allowed, QUERIES, 10, "cosine")
    assert (ids == true_ids).mean() >= 0.98
    few = IDS[[3, 30, 300]]                             # fewer matches than k: padded
    dist, ids = index.search(QUERIES[:2], 5, allowed_ids=few)
    assert sorted(ids[0, :3]) == sorted(few) and (ids[:, 3:] == -1).all()
    assert np.isinf(dist[:, 3:]).all()
    dist, ids = index.search(QUERIES[:2], 5, allowed_ids=np.array([], np.int64))
    assert (ids == -1).all()


def test_k_larger_than_catalog_is_padded(backend):
    index = backend()
    index.add(IDS[:3], VECTORS[:3])
    dist, ids = index.search(QUERIES[:1], 5)
    assert sorted(ids[0, :3]) == sorted(IDS[:3]) and (ids[0, 3:] == -1).all()


def test_empty_index_searches_to_padding(backend):
    dist, ids = backend().search(QUERIES[:2], 3)
    assert (ids == -1).all() and np.isinf(dist).all()


# -- faiss specifics ----------------------------------------------------------------------

def test_faiss_auto_kind_follows_size(monkeypatch):
    monkeypatch.setattr(faiss_backend, "HNSW_THRESHOLD", 100)
    monkeypatch.setattr(faiss_backend, "IVFPQ_THRESHOLD", 300)
    monkeypatch.setattr(faiss_backend, "IVFPQ_MIN", 300)
    index = make_index("faiss", DIM, "cosine")
    index.add(IDS[:50], VECTORS[:50])
    assert index.describe().startswith("faiss flat")
    index.add(IDS[50:200], VECTORS[50:200])            # crosses the HNSW threshold: rebuilt
    assert index.describe().startswith("faiss hnsw ")
    index.add(IDS[200:], VECTORS[200:])
    assert index.describe().startswith("faiss ivfpq")
    _, ids = index.search(QUERIES, 10)
    _, truth = exact(VECTORS, IDS, QUERIES, 10, "cosine")
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)]) >= 0.9
    assert make_index("faiss", DIM, "l1", kind="hnsw").resolved_kind(10**6) == "flat"   # no L1 graphs


def test_faiss_large_filter_uses_the_graph_and_stays_correct(monkeypatch):
    monkeypatch.setattr(faiss_backend, "SUBSET_EXACT_MAX", 10)   # force the approximate filtered path
    index = make_index("faiss", DIM, "cosine", kind="hnsw")
    index.add(IDS, VECTORS)
    allowed = IDS[::3]
    _, ids = index.search(QUERIES, 10, allowed_ids=allowed)
    assert np.isin(ids, allowed).all()
    _, true_ids = exact(VECTORS[::3], allowed, QUERIES, 10, "cosine")
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, true_ids)]) >= 0.95


def test_faiss_ivfpq_recall_and_filters():
    vectors, ids = clustered(3000, seed=3), np.arange(3000, dtype=np.int64)
    index = make_index("faiss", DIM, "cosine", kind="ivfpq")
    index.add(ids, vectors)
    assert index.describe().startswith("faiss ivfpq")
    _, found = index.search(QUERIES, 10)
    _, truth = exact(vectors, ids, QUERIES, 10, "cosine")
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)]) >= 0.9
    allowed = ids[ids % 2 == 0]
    _, found = index.search(QUERIES, 10, allowed_ids=allowed)
    assert np.isin(found, allowed).all()


def test_faiss_ivfpq_falls_back_to_exact_when_too_small():
    index = make_index("faiss", DIM, "cosine", kind="ivfpq")
    index.add(IDS, VECTORS)
    assert index.describe().startswith("faiss flat")


# -- milvus specifics ---------------------------------------------------------------------

@pytest.fixture
def milvus(monkeypatch):
    if not _milvus_available():
        pytest.skip("pymilvus / milvus-lite not installed")
    monkeypatch.delenv("LOOKALIKE_MILVUS_URI", raising=False)
    from lookalike.index.milvus_backend import MilvusIndex
    return MilvusIndex


def test_milvus_metadata_filters_map_to_expressions(milvus):
    from lookalike.index.milvus_backend import where_to_expr

    assert where_to_expr({"label": "shoes", "size": [1, 2]}) == 'label == "shoes" and size in [1, 2]'
    with pytest.raises(ValueError):
        where_to_expr({"label; drop": "x"})
    index = milvus(DIM, "cosine")
    labels = [{"label": "even" if i % 2 == 0 else "odd", "price": int(i)} for i in range(400)]
    index.add(IDS, VECTORS, metadata=labels)
    _, ids = index.search(QUERIES, 10, where={"label": "even"})
    assert np.isin(ids, IDS[::2]).all()
    _, ids = index.search(QUERIES, 10, expr="price < 100", allowed_ids=IDS[::3])
    assert np.isin(ids[ids >= 0], IDS[:100:3]).all() and (ids >= 0).all()


def test_milvus_rejects_l1_and_keeps_lite_files_local(milvus, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="cosine and l2"):
        milvus(DIM, "l1")
    index = milvus(DIM, "l2")
    index.add(IDS[:10], VECTORS[:10])
    index.save(tmp_path / "idx")
    assert (tmp_path / "idx" / "milvus.db").exists()
    index.close()
    monkeypatch.setenv("LOOKALIKE_MILVUS_URI", "http://unreachable.invalid:19530")
    reopened = load_index(tmp_path / "idx")             # a saved lite index stays lite
    assert len(reopened) == 10


def test_catalog_search_through_milvus_matches_faiss(milvus, tmp_path):
    """End to end: Catalog(backend="milvus") builds, saves and reloads its index like faiss does."""
    from lookalike import Catalog
    from lookalike.data.store import NewItem

    cat = Catalog.create("mv", home=tmp_path)
    items = [NewItem(f"item-{i}", f"/nowhere/{i}.jpg", "even" if i % 2 == 0 else "odd", {}, f"{i:064x}", 8, 8)
             for i in range(120)]
    cat.store.write_batch(items, VECTORS[:120], "tiny", "fp", "cosine")
    cat.set_default_encoder("tiny")
    faiss_hits = [r.id for r in cat.search(item="item-3", k=5)]
    with_milvus = Catalog.open("mv", home=tmp_path, backend="milvus")
    assert [r.id for r in with_milvus.search(item="item-3", k=5)] == faiss_hits
    filtered = with_milvus.search(item="item-3", k=5, where={"label": "odd"})
    assert len(filtered) == 5 and all(r.label == "odd" for r in filtered)
    reopened = Catalog.open("mv", home=tmp_path, backend="milvus")      # loads the saved milvus-lite file
    assert [r.id for r in reopened.search(item="item-3", k=5)] == faiss_hits

"""What is particular to each backend: faiss's kind choice, filtered graph search and IVF-PQ; Milvus's
metadata filters, files and catalog use. The contract every backend meets is test_index_contract.py."""
from __future__ import annotations

import numpy as np
import pytest

import lookalike.index.faiss_backend as faiss_backend
from lookalike.index import load_index, make_index
from lookalike.index.distances import exact_knn

from fakes import vector_catalog

DIM = 32


def clustered(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, DIM))
    return (centres[rng.integers(0, 12, n)] + 0.4 * rng.normal(size=(n, DIM))).astype(np.float32)


def exact(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int, metric: str):
    """(distances, ids) of the exact top k (tests/index/test_distances.py checks exact_knn against numpy)."""
    dist, pos = exact_knn(queries, vectors, k, metric)
    return dist, ids[pos]


VECTORS = clustered(400)
IDS = np.arange(400, dtype=np.int64) * 10 + 7           # ids are not positions
QUERIES = clustered(15, seed=1)


# -- faiss specifics ----------------------------------------------------------------------

def test_faiss_auto_kind_follows_size(monkeypatch):
    monkeypatch.setattr(faiss_backend, "HNSW_THRESHOLD", 100)
    monkeypatch.setattr(faiss_backend, "REDUCED_THRESHOLD", 300)
    monkeypatch.setattr(faiss_backend, "IVFPQ_MIN", 300)
    monkeypatch.setattr(faiss_backend, "HNSW_THRESHOLD", 100)
    index = make_index("faiss", DIM, "cosine", pca_dim=16)
    index.add(IDS[:50], VECTORS[:50])
    assert index.describe().startswith("faiss flat")
    index.add(IDS[50:200], VECTORS[50:200])            # crosses the HNSW threshold: rebuilt
    assert index.describe().startswith("faiss hnsw ")
    index.add(IDS[200:], VECTORS[200:])
    assert index.describe().startswith("faiss reduced")
    _, ids = index.search(QUERIES, 10)
    _, truth = exact(VECTORS, IDS, QUERIES, 10, "cosine")
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)]) >= 0.9
    assert make_index("faiss", DIM, "l1", kind="hnsw").resolved_kind(10**6) == "flat"   # no L1 graphs


def test_faiss_large_filter_uses_the_graph_and_stays_correct(monkeypatch):
    monkeypatch.setattr(faiss_backend, "SUBSET_EXACT_MAX", 10)   # force the approximate filtered path
    index = make_index("faiss", DIM, "cosine", kind="hnsw", filter_policy="threshold")
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
def milvus(milvus_lite):
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
    monkeypatch.delenv("LOOKALIKE_MILVUS_URI")          # no shared database: the index's own file
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

    cat = vector_catalog(tmp_path, "mv", VECTORS[:120], ["even" if i % 2 == 0 else "odd" for i in range(120)])
    faiss_hits = [r.id for r in cat.search(item="item-3", k=5)]
    with_milvus = Catalog.open("mv", home=tmp_path, backend="milvus")
    assert [r.id for r in with_milvus.search(item="item-3", k=5)] == faiss_hits
    filtered = with_milvus.search(item="item-3", k=5, where={"label": "odd"})
    assert len(filtered) == 5 and all(r.label == "odd" for r in filtered)
    reopened = Catalog.open("mv", home=tmp_path, backend="milvus")      # loads the saved milvus-lite file
    assert [r.id for r in reopened.search(item="item-3", k=5)] == faiss_hits

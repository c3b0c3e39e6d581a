"""The IndexBackend contract, for every backend and every metric it serves: faiss (flat, HNSW,
HNSW-fp16), milvus-lite (when installed) and the log-likelihood ``scored`` index.

Each backend is checked against the one exact kNN (``lookalike.index.distances.exact_knn``):
shapes and dtypes, distances ascending, padding with id -1 (distance inf) when fewer than k items
qualify, remove, the ``allowed_ids`` filter, save -> load giving identical results, and ``len``.
"""
from __future__ import annotations

import numpy as np
import pytest

from lookalike.index import load_index, make_index
from lookalike.index.distances import exact_knn

DIM = 32
N = 300

# name -> (backend, params, metrics it serves, exact?)
BACKENDS = {
    "faiss-flat": ("faiss", {"kind": "flat"}, ("cosine", "l2", "l1"), True),
    "faiss-hnsw": ("faiss", {"kind": "hnsw"}, ("cosine", "l2"), False),
    "faiss-hnsw-fp16": ("faiss", {"kind": "hnsw-fp16"}, ("cosine", "l2"), False),
    "milvus-lite": ("milvus", {}, ("cosine", "l2"), False),
    "scored": ("scored", {}, ("loglik", "loglik-sym"), True),
}
CASES = [pytest.param((name, metric), id=f"{name}-{metric}")
         for name, (_, _, metrics, _) in BACKENDS.items() for metric in metrics]


def _data(metric: str, n: int, seed: int) -> np.ndarray:
    """Clustered vectors; for the log-likelihood metrics rows of [µ (DIM/2), log σ² (DIM/2)]."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(12, DIM))
    x = centres[rng.integers(0, 12, n)] + 0.4 * rng.normal(size=(n, DIM))
    if metric.startswith("loglik"):
        x[:, DIM // 2:] = 0.3 * rng.normal(size=(n, DIM // 2))  # log σ² around 0
    return x.astype(np.float32)


IDS = np.arange(N, dtype=np.int64) * 10 + 7             # ids are not positions


@pytest.fixture(params=CASES)
def case(request):
    """(make an empty index, metric, vectors, queries, exact?) for one backend and metric."""
    name, metric = request.param
    backend, params, _, exact = BACKENDS[name]
    if backend == "milvus":
        request.getfixturevalue("milvus_lite")  # skips without it; always the embedded milvus-lite
    return (lambda: make_index(backend, DIM, metric, **params)), metric, _data(metric, N, 0), _data(metric, 12, 1), exact


def _check_shape_and_order(dist: np.ndarray, ids: np.ndarray, nq: int, k: int) -> None:
    assert dist.shape == ids.shape == (nq, k)
    assert dist.dtype == np.float32 and ids.dtype == np.int64
    for d_row, i_row in zip(dist, ids):
        found = i_row >= 0
        assert not (~found[:-1] & found[1:]).any()            # padding only at the end
        assert np.all(np.diff(d_row[found]) >= -1e-5)         # closest first
        assert np.isinf(d_row[~found]).all()


def test_search_matches_the_exact_knn(case):
    make, metric, vectors, queries, exact = case
    index = make()
    assert len(index) == 0 and index.metric == metric
    index.add(IDS, vectors)
    assert len(index) == N
    dist, ids = index.search(queries, 10)
    _check_shape_and_order(dist, ids, len(queries), 10)
    true_dist, true_pos = exact_knn(queries, vectors, 10, metric)
    if exact:
        np.testing.assert_array_equal(ids, IDS[true_pos])
        np.testing.assert_allclose(dist, true_dist, rtol=1e-4, atol=1e-4)
    else:  # approximate structures: the same neighbours, ties and graph misses aside
        assert (ids == IDS[true_pos]).mean() >= 0.95
        np.testing.assert_allclose(dist, true_dist, atol=2e-3 * (1 if metric == "cosine" else 10))


def test_k_beyond_the_items_is_padded(case):
    make, metric, vectors, queries, _ = case
    index = make()
    dist, ids = index.search(queries[:2], 3)                  # empty index: padding only
    _check_shape_and_order(dist, ids, 2, 3)
    assert (ids == -1).all()
    index.add(IDS[:3], vectors[:3])
    dist, ids = index.search(queries[:2], 5)
    _check_shape_and_order(dist, ids, 2, 5)
    assert all(sorted(row[:3]) == sorted(IDS[:3]) for row in ids) and (ids[:, 3:] == -1).all()


def test_re_add_replaces_and_remove_forgets(case):
    make, metric, vectors, queries, _ = case
    index = make()
    index.add(IDS, vectors)
    index.add(IDS[:1], vectors[N - 1:])                        # re-adding an id replaces its vector
    assert len(index) == N
    dist, ids = index.search(vectors[N - 1:], 2)
    assert set(ids[0]) == {IDS[0], IDS[N - 1]}
    if not metric.startswith("loglik"):   # a vector is at distance 0 from itself (fp16 storage rounds)
        np.testing.assert_allclose(dist[0], 0.0, atol=1e-3 * (1 if metric == "cosine" else 10))
    assert index.remove(IDS[:50]) == 50
    assert index.remove(np.array([123456789])) == 0            # unknown ids are ignored
    assert len(index) == N - 50
    _, ids = index.search(queries, 10)
    assert not np.isin(ids, IDS[:50]).any() and np.isin(ids, IDS[50:]).all()


def test_allowed_ids_filter(case):
    make, metric, vectors, queries, exact = case
    index = make()
    index.add(IDS, vectors)
    subset = np.arange(0, N, 7)                                 # 43 of 300
    dist, ids = index.search(queries, 10, allowed_ids=IDS[subset])
    _check_shape_and_order(dist, ids, len(queries), 10)
    assert np.isin(ids, IDS[subset]).all()                      # every slot filled from the filter
    _, true_pos = exact_knn(queries, vectors[subset], 10, metric)
    agreement = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, IDS[subset][true_pos])])
    assert agreement == 1.0 if exact else agreement >= 0.95
    dist, ids = index.search(queries[:2], 5, allowed_ids=IDS[[3, 30, 200]])   # fewer than k match
    _check_shape_and_order(dist, ids, 2, 5)
    assert all(sorted(row[:3]) == sorted(IDS[[3, 30, 200]]) for row in ids) and (ids[:, 3:] == -1).all()
    _, ids = index.search(queries[:2], 5, allowed_ids=np.array([], np.int64))
    assert (ids == -1).all()


def test_save_then_load_gives_identical_results(case, tmp_path):
    make, metric, vectors, queries, _ = case
    index = make()
    index.add(IDS, vectors)
    before = index.search(queries, 10)
    filtered = index.search(queries, 5, allowed_ids=IDS[::3])
    index.save(tmp_path / "idx")
    del index
    loaded = load_index(tmp_path / "idx")
    assert len(loaded) == N and loaded.metric == metric
    after = loaded.search(queries, 10)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_allclose(before[0], after[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(filtered[1], loaded.search(queries, 5, allowed_ids=IDS[::3])[1])
    loaded.add(np.array([99999]), queries[:1])                 # still writable, and saves again in place
    loaded.save(tmp_path / "idx")
    again = load_index(tmp_path / "idx")
    assert len(again) == N + 1 and again.search(queries[:1], 1)[1][0, 0] == 99999

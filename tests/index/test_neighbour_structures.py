"""lookalike.index range search (``range_pairs``, ``hamming_pairs``) and the pre-assigned IVF,
each checked against a brute-force numpy oracle."""
from __future__ import annotations

import numpy as np
import pytest

from lookalike.index.distances import exact_knn, hamming_pairs, l2_normalize, range_pairs
from lookalike.index.ivf import PreassignedIVF


def _oracle_distances(x: np.ndarray, metric: str) -> np.ndarray:
    x = x.astype(np.float64)
    if metric == "cosine":
        u = x / np.linalg.norm(x, axis=1, keepdims=True)
        return 1.0 - u @ u.T
    return np.sqrt(((x[:, None, :] - x[None]) ** 2).sum(-1))


@pytest.mark.parametrize("metric,radius", [("cosine", 0.15), ("l2", 2.5)])
def test_range_pairs_match_brute_force(metric, radius):
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(10, 8)) * 3
    x = (centres[rng.integers(0, 10, 200)] + rng.normal(size=(200, 8)) * 0.4).astype(np.float32)
    dist = _oracle_distances(x, metric)
    i, j = np.triu_indices(len(x), k=1)
    # pairs within float32 rounding of the radius could fall either way: leave them out of the check
    clear = np.abs(dist[i, j] - radius) > 1e-4
    expected = {(a, b) for a, b, d in zip(i[clear], j[clear], dist[i, j][clear]) if d < radius}
    pairs = range_pairs(x, radius, metric)
    got = {(a, b) for a, b, _ in pairs}
    assert expected and len(expected) < len(i) // 2          # the radius splits the pairs
    assert {p for p in got if clear[np.flatnonzero((i == p[0]) & (j == p[1]))[0]]} == expected
    assert all(a < b for a, b in got) and len(got) == len(pairs)
    assert [a for a, _, _ in pairs] == sorted(a for a, _, _ in pairs)
    for a, b, d in pairs:
        assert d == pytest.approx(dist[a, b], abs=1e-4)


def test_range_pairs_reject_metrics_without_a_range_search():
    with pytest.raises(ValueError, match="cosine and l2"):
        range_pairs(np.eye(3, dtype=np.float32), 0.1, "l1")


def test_hamming_pairs_match_brute_force_and_include_the_limit():
    rng = np.random.default_rng(5)
    base = rng.integers(0, 256, (20, 8), dtype=np.uint8)
    # near copies: copy i differs from base code i in exactly i % 6 bits
    flips = np.array([np.packbits(np.arange(64) < i % 6) for i in range(20)], np.uint8)
    codes = np.vstack([base, base ^ flips])
    bits = np.unpackbits(codes, axis=1).astype(np.int64)
    hamming = (bits[:, None, :] != bits[None]).sum(-1)
    for max_bits in (0, 3, 5):
        expected = sorted((a, b, float(hamming[a, b])) for a in range(len(codes)) for b in range(a + 1, len(codes))
                          if hamming[a, b] <= max_bits)
        assert sorted(hamming_pairs(codes, max_bits)) == expected
        assert (0, 20) in {(a, b) for a, b, _ in hamming_pairs(codes, max_bits)}     # identical codes
        assert any(d == max_bits for _, _, d in hamming_pairs(codes, max_bits))   # the limit itself is kept


def _clustered(metric, n=400, dim=16, k=6, seed=2):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(k, dim)) * 4
    x = (means[rng.integers(0, k, n)] + rng.normal(size=(n, dim))).astype(np.float32)
    unit = l2_normalize(x) if metric == "cosine" else x
    assignments = ((unit[:, None, :] - unit[rng.choice(n, k, replace=False)][None]) ** 2).sum(-1).argmin(1)
    centroids = np.stack([unit[assignments == c].mean(0) for c in range(k)]).astype(np.float32)
    assignments = ((unit[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)   # nearest centroid
    return x, unit, assignments, centroids


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_ivf_probing_every_cluster_is_exact_search(metric):
    x, _, assignments, centroids = _clustered(metric)
    queries = x[:40] + 0.05
    ivf = PreassignedIVF(x, centroids, assignments, metric)
    d, pos = ivf.search(queries, 7, probe=len(centroids))
    exact_d, exact_pos = exact_knn(queries, x, 7, metric)
    assert np.array_equal(pos, exact_pos)
    assert np.allclose(d, exact_d, atol=1e-5)


def test_ivf_probe_one_is_brute_force_within_the_nearest_cluster():
    x, unit, assignments, centroids = _clustered("l2")
    ivf = PreassignedIVF(x, centroids, assignments, "l2")
    queries = x[:25] + 0.05
    d, pos = ivf.search(queries, 5, probe=1)
    nearest = ((queries[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    for q, cluster, got_d, got_pos in zip(queries, nearest, d, pos):
        members = np.flatnonzero(assignments == cluster)
        oracle = np.sqrt(((x[members] - q) ** 2).sum(-1))
        order = np.argsort(oracle, kind="stable")[:5]
        assert np.array_equal(got_pos, members[order])
        assert np.allclose(got_d, oracle[order], atol=1e-4)
    assert np.array_equal(ivf.scanned(queries, 1), np.bincount(assignments, minlength=len(centroids))[nearest])
    assert np.array_equal(ivf.scanned(queries, len(centroids)), np.full(len(queries), len(x)))


def test_ivf_pads_when_the_probed_clusters_hold_fewer_than_k():
    x, _, assignments, centroids = _clustered("cosine", n=60, k=6)
    ivf = PreassignedIVF(x, centroids, assignments, "cosine")
    d, pos = ivf.search(x[:3], 60, probe=1)
    assert (pos == -1).any() and np.isinf(d[pos == -1]).all() and np.isfinite(d[pos >= 0]).all()

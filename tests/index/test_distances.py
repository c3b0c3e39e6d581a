"""lookalike.index.distances: unit vectors, raw -> distance -> score per metric, the VAE
log-likelihoods (hand-computed examples) and the one exact kNN."""
from __future__ import annotations

import numpy as np
import pytest

from lookalike.index.distances import (
    METRICS,
    SCORED_METRICS,
    VECTOR_METRICS,
    distance_to_raw,
    distance_to_score,
    exact_knn,
    faiss_metric,
    l2_normalize,
    loglik_scores,
    prepare,
    raw_to_distance,
)


def test_l2_normalize_gives_unit_rows_and_keeps_zero_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [-2.0, 0.0]])
    out = l2_normalize(x)
    assert out.dtype == np.float32 and out.shape == (3, 2)
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [-1.0, 0.0]], atol=1e-7)
    np.testing.assert_allclose(l2_normalize(np.array([0.0, 5.0])), [0.0, 1.0])  # one vector: last axis
    assert prepare(x, "l2").dtype == np.float32 and prepare(x, "l2")[0, 0] == 3.0
    np.testing.assert_allclose(np.linalg.norm(prepare(x, "cosine")[[0, 2]], axis=1), 1.0, atol=1e-6)


def test_raw_values_become_distances_with_known_values():
    np.testing.assert_allclose(raw_to_distance([1.0, 0.5, -1.0, 1.0000001], "cosine"), [0.0, 0.5, 2.0, 0.0])
    np.testing.assert_allclose(raw_to_distance([9.0, 0.0, -1e-7], "l2"), [3.0, 0.0, 0.0])  # squared -> Euclidean
    np.testing.assert_allclose(raw_to_distance([2.5], "l1"), [2.5])
    np.testing.assert_allclose(raw_to_distance([3.0], "ip"), [-3.0])
    np.testing.assert_allclose(raw_to_distance([-2.3], "loglik"), [2.3], rtol=1e-6)
    assert raw_to_distance([1.0], "cosine").dtype == np.float32


@pytest.mark.parametrize("metric", METRICS)
def test_distance_to_raw_inverts_raw_to_distance(metric):
    distances = np.array([0.0, 0.12, 0.5, 1.5], np.float32)
    np.testing.assert_allclose(raw_to_distance(distance_to_raw(distances, metric), metric), distances, atol=1e-6)
    assert distance_to_raw([0.12], "cosine")[0] == pytest.approx(0.88)   # a similarity floor
    assert distance_to_raw([3.0], "l2")[0] == pytest.approx(9.0)         # a squared distance


def test_distances_become_scores_with_known_values():
    np.testing.assert_allclose(distance_to_score([0.0, 0.25, 2.0], "cosine"), [1.0, 0.75, -1.0])
    np.testing.assert_allclose(distance_to_score([0.0, 1.0, 3.0], "l2"), [1.0, 0.5, 0.25])
    np.testing.assert_allclose(distance_to_score([0.0, 1.0, 3.0], "l1"), [1.0, 0.5, 0.25])
    np.testing.assert_allclose(distance_to_score([-3.0], "ip"), [3.0])
    np.testing.assert_allclose(distance_to_score([2.5], "loglik-sym"), [-2.5])
    with pytest.raises(ValueError, match="unknown metric"):
        distance_to_score([0.0], "hamming")


@pytest.mark.parametrize("metric", METRICS)
def test_score_falls_strictly_as_distance_grows(metric):
    distances = np.array([0.0, 0.01, 0.5, 1.0, 2.0, 10.0, 1e4])
    if metric in SCORED_METRICS + ("ip",):
        distances = np.concatenate([-distances[::-1], distances[1:]])  # these distances may be negative
    scores = distance_to_score(distances, metric)
    assert np.all(np.diff(scores) < 0)


@pytest.mark.parametrize("metric", VECTOR_METRICS + ("ip",))
def test_faiss_raw_values_match_numpy_definitions(metric):
    import faiss

    rng = np.random.default_rng(0)
    q, x = rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=(7, 5)).astype(np.float32)
    raw, pos = faiss.knn(prepare(q, metric), prepare(x, metric), 7, faiss_metric(metric))
    got = np.take_along_axis(raw_to_distance(raw, metric), np.argsort(pos, axis=1), 1)
    expected = {"cosine": 1 - l2_normalize(q) @ l2_normalize(x).T,
                "l2": np.linalg.norm(q[:, None] - x[None], axis=2),
                "l1": np.abs(q[:, None] - x[None]).sum(2),
                "ip": -(q @ x.T)}[metric]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


# -- exact kNN ------------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", VECTOR_METRICS + ("ip",))
def test_exact_knn_agrees_with_brute_force_numpy(metric):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 6))
    q = rng.normal(size=(5, 6))
    distances, indices = exact_knn(q, x, 4, metric, batch=2)   # several blocks
    assert distances.shape == indices.shape == (5, 4)
    assert distances.dtype == np.float32 and indices.dtype == np.int64
    full = {"cosine": 1 - l2_normalize(q) @ l2_normalize(x).T, "l2": np.linalg.norm(q[:, None] - x[None], axis=2),
            "l1": np.abs(q[:, None] - x[None]).sum(2), "ip": -(q @ x.T)}[metric]
    np.testing.assert_array_equal(indices, np.argsort(full, axis=1, kind="stable")[:, :4])
    np.testing.assert_allclose(distances, np.sort(full, axis=1)[:, :4], rtol=1e-4, atol=1e-4)
    assert np.all(np.diff(distances, axis=1) >= 0)


@pytest.mark.parametrize("metric", METRICS)
def test_exact_knn_leave_one_out_and_padding(metric):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 4)).astype(np.float32)
    if metric in SCORED_METRICS:
        x[:, 2:] = rng.normal(scale=0.3, size=(5, 2))  # [µ, log σ²]
    distances, indices = exact_knn(x, x, 7, metric, exclude=np.arange(5))
    assert indices.shape == (5, 7)
    for q, row in enumerate(indices):
        assert q not in row and sorted(row[:4]) == sorted(set(range(5)) - {q})
    assert (indices[:, 4:] == -1).all() and np.isinf(distances[:, 4:]).all()
    # -1 excludes nothing; an empty gallery answers padding only
    _, all_rows = exact_knn(x[:1], x, 5, metric, exclude=np.array([-1]))
    assert sorted(all_rows[0]) == [0, 1, 2, 3, 4]
    d0, i0 = exact_knn(x[:2], x[:0], 3, metric)
    assert (i0 == -1).all() and np.isinf(d0).all()
    with pytest.raises(ValueError, match="one position per query"):
        exact_knn(x, x, 2, metric, exclude=np.arange(2))


# Three items in d=2, stored as [µ1, µ2, log σ1², log σ2²]; the query's mean is the origin.
ITEMS = np.array([
    [1.0, 0.0, 0.0, 0.0],                            # A: distance 1, σ² = 1
    [0.5, 0.0, np.log(0.01), np.log(0.01)],          # B: distance 0.5 but very sure of itself (σ² = 0.01)
    [2.0, 0.0, np.log(4.0), np.log(4.0)],            # C: distance 2, broad (σ² = 4)
], np.float32)
QUERY = np.array([[0.0, 0.0, 0.0, 0.0]], np.float32)  # µ_q = 0, σ_q² = 1


def test_loglik_matches_a_hand_computed_example():
    # log N(0 | µ_i, σ_i²) = -1/2 [Σ (0-µ)²/σ² + Σ log σ² + 2 log 2π], log 2π = 1.837877
    # A: -1/2 [1 + 0 + 3.675754]               = -2.337877
    # B: -1/2 [0.25/0.01 - 9.210340 + 3.675754] = -9.732707
    # C: -1/2 [4/4 + 2.772589 + 3.675754]       = -3.724171
    scores = loglik_scores(QUERY, ITEMS)
    np.testing.assert_allclose(scores[0], [-2.337877, -9.732707, -3.724171], atol=1e-4)
    # Euclidean ranks B, A, C; the likelihood ranks A, C, B (B's narrow posterior rejects the query).
    assert list(np.argsort(-scores[0])) == [0, 2, 1]
    # A query given as µ only (a latent point) scores the same.
    np.testing.assert_allclose(loglik_scores(QUERY[:, :2], ITEMS), scores, atol=1e-6)


def test_symmetric_loglik_matches_a_hand_computed_example():
    # log N(0 | µ_i, σ_q² + σ_i²) with σ_q² = 1:
    # A: var 2:    -1/2 [0.5 + 1.386294 + 3.675754]          = -2.781024
    # B: var 1.01: -1/2 [0.247525 + 0.019901 + 3.675754]     = -1.971590
    # C: var 5:    -1/2 [0.8 + 3.218876 + 3.675754]          = -3.847315
    scores = loglik_scores(QUERY, ITEMS, symmetric=True)
    np.testing.assert_allclose(scores[0], [-2.781024, -1.971590, -3.847315], atol=1e-4)
    assert list(np.argsort(-scores[0])) == [1, 0, 2]
    # symmetric: swapping the roles of query and item gives the same score
    both = loglik_scores(ITEMS, ITEMS, symmetric=True)
    np.testing.assert_allclose(both, both.T, atol=1e-5)


def test_loglik_batched_equals_direct_formula():
    rng = np.random.default_rng(0)
    items = np.concatenate([rng.normal(size=(50, 3)), rng.normal(scale=0.5, size=(50, 3))], 1).astype(np.float32)
    queries = items[:7]
    mu, logvar = items[:, :3], items[:, 3:]
    direct = np.array([[-0.5 * np.sum((q[:3] - m) ** 2 / np.exp(lv) + lv + np.log(2 * np.pi))
                        for m, lv in zip(mu, logvar)] for q in queries])
    np.testing.assert_allclose(loglik_scores(queries, items), direct, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError):
        loglik_scores(np.zeros((1, 5)), items)


def test_exact_knn_log_likelihood_ranks_like_the_scores():
    distances, indices = exact_knn(QUERY, ITEMS, 3, "loglik")
    assert indices.tolist() == [[0, 2, 1]]                      # A, C, B (see above)
    np.testing.assert_allclose(-distances[0], [-2.337877, -3.724171, -9.732707], atol=1e-4)
    assert exact_knn(QUERY, ITEMS, 3, "loglik-sym")[1].tolist() == [[1, 0, 2]]
    # leave-one-out within a pool (what evaluation asks for): positions index the pool
    pool = np.array([0, 2])
    _, found = exact_knn(ITEMS[pool], ITEMS[pool], 5, "loglik-sym", exclude=np.arange(2))
    assert np.where(found >= 0, pool[found], -1).tolist() == [[2, -1, -1, -1, -1], [0, -1, -1, -1, -1]]


def test_metric_maths_lives_only_in_the_distances_module():
    """Rule 4 of docs/architecture.md: raw -> distance -> score, unit vectors and exact kNN exist once.
    A copy elsewhere in src/ (a faiss metric table, a 1/(1+d) score, a second normaliser or a
    faiss.knn call) fails here; use lookalike.index.distances instead."""
    from pathlib import Path

    import lookalike.index.distances as distances

    package = Path(distances.__file__).resolve().parents[1]
    copies = ("faiss.METRIC_", "faiss.knn(", "def l2_normalize", "def loglik_scores", "1.0 / (1.0 +", "1 / (1 +",
              "def distance_to_score", "def _to_distance")
    found = [f"{path.relative_to(package)}:{n}: {line.strip()}"
             for path in sorted(package.rglob("*.py")) if path != Path(distances.__file__).resolve()
             for n, line in enumerate(path.read_text().splitlines(), start=1) if any(c in line for c in copies)]
    assert found == []
    assert "faiss.METRIC_L1" in Path(distances.__file__).read_text()  # the scan reads real source

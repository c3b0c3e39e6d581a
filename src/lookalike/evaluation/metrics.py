"""Retrieval metrics on relevance matrices: pure numpy, no search, no labels.

Each function takes a 0/1 relevance matrix (queries x ranks: 1 where the hit at that rank is
relevant; a 1-D list is one query) and, where needed, the number of relevant items per query, and
returns one float64 value per query. Ranks past the retrieved ones count as misses (zero-padded).

* ``P@k``   relevant retrieved in the top k / k
* ``R@k``   relevant retrieved in the top k / all relevant items for that query
* ``mAP@k`` mean of AP@k = sum_{i<=k} P@i * rel_i / min(k, n_relevant)
* ``NDCG@k`` binary gains, DCG = sum rel_i / log2(i + 1), normalised by the ideal ranking
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

METRICS = ("P", "R", "mAP", "NDCG")


def _as_matrix(relevance) -> np.ndarray:
    return np.atleast_2d(np.asarray(relevance, dtype=np.float64))


def _cut(rel: np.ndarray, k: int) -> np.ndarray:
    """The first k columns, zero-padded when fewer ranks were retrieved than k."""
    if rel.shape[1] >= k:
        return rel[:, :k]
    return np.pad(rel, ((0, 0), (0, k - rel.shape[1])))


def precision_at_k(relevance, k: int) -> np.ndarray:
    """Per query: relevant items in the top k divided by k."""
    return _cut(_as_matrix(relevance), k).sum(axis=1) / k


def recall_at_k(relevance, k: int, n_relevant) -> np.ndarray:
    """Per query: relevant items in the top k divided by all relevant items for that query."""
    n_relevant = np.asarray(n_relevant, dtype=np.float64).reshape(-1)
    return _cut(_as_matrix(relevance), k).sum(axis=1) / np.maximum(n_relevant, 1)


def average_precision_at_k(relevance, k: int, n_relevant) -> np.ndarray:
    """Per query: AP@k = sum_{i<=k} P@i * rel_i / min(k, n_relevant)."""
    rel = _cut(_as_matrix(relevance), k)
    n_relevant = np.asarray(n_relevant, dtype=np.float64).reshape(-1)
    precision_at_i = np.cumsum(rel, axis=1) / np.arange(1, k + 1)
    return (precision_at_i * rel).sum(axis=1) / np.maximum(np.minimum(k, n_relevant), 1)


def ndcg_at_k(relevance, k: int, n_relevant) -> np.ndarray:
    """Per query: binary-gain NDCG@k; the ideal ranking puts min(k, n_relevant) hits first."""
    rel = _cut(_as_matrix(relevance), k)
    n_relevant = np.asarray(n_relevant, dtype=np.int64).reshape(-1)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (rel * discounts).sum(axis=1)
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[np.clip(n_relevant, 0, k)]
    return np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1), 0.0)


def metrics_at_k(relevance, n_relevant, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """All metrics at every k, per query: {"P@1": array, "R@1": ..., "mAP@10": ..., ...}."""
    out: dict[str, np.ndarray] = {}
    for k in ks:
        out[f"P@{k}"] = precision_at_k(relevance, k)
        out[f"R@{k}"] = recall_at_k(relevance, k, n_relevant)
        out[f"mAP@{k}"] = average_precision_at_k(relevance, k, n_relevant)
        out[f"NDCG@{k}"] = ndcg_at_k(relevance, k, n_relevant)
    return out


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (n_a, d) and (n_b, d):
    ‖µ_a − µ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^½), the FID formula (Heusel et al., "GANs trained by
    a two time-scale update rule converge to a local Nash equilibrium", NeurIPS 2017) on whatever
    features are given. 0 for identical sets; ValueError with fewer than 2 rows or unequal d.

    Tr((Σ_a Σ_b)^½) is computed as the sum of the square roots of the eigenvalues of the symmetric
    Σ_a^½ Σ_b Σ_a^½ (same spectrum), which stays real and stable when the covariances are singular
    (fewer samples than dimensions)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"need two (n >= 2, d) feature sets of the same d, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = np.sqrt(np.clip(middle, 0, None)).sum()
    return float(max(0.0, ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root))

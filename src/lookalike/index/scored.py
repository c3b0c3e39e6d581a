"""Exact search under scores faiss cannot compute: VAE log-likelihoods.

A VAE item is stored as [µ_i, log σ_i²] (2·d values). Two scores rank items for a query:

* ``loglik``      log N(µ_q | µ_i, diag σ_i²) — how likely the query's mean is under item i's
                  posterior (asymmetric: a broad, uncertain item posterior forgives more).
* ``loglik-sym``  log N(µ_q | µ_i, diag(σ_q² + σ_i²)) = log ∫ N(x|µ_q,σ_q²) N(x|µ_i,σ_i²) dx, the
                  expected-likelihood kernel: symmetric, and uses the query's uncertainty too.

Queries may carry only µ (d values, e.g. a point picked in the latent explorer); ``loglik-sym``
then treats the query as a point (σ_q = 0), which equals ``loglik``.

``ScoredIndex`` serves these metrics behind the ordinary ``IndexBackend`` interface (brute force in
numpy, batched; distance = -score so lower is still closer), and :func:`scored_neighbours` gives
``evaluate`` its leave-one-out neighbours.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from lookalike.index.base import IndexBackend

_LOG_2PI = float(np.log(2 * np.pi))
# Rows of the (batch x items x d) tensor the symmetric score materialises at once.
_SYM_BATCH_ELEMENTS = 8_000_000


def _split_query(queries: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray | None]:
    queries = np.atleast_2d(np.asarray(queries, np.float64))
    if queries.shape[1] == d:
        return queries, None
    if queries.shape[1] == 2 * d:
        return queries[:, :d], queries[:, d:]
    raise ValueError(f"queries must have {d} (µ) or {2 * d} (µ, log σ²) values, got {queries.shape[1]}")


def loglik_scores(queries: np.ndarray, items: np.ndarray, symmetric: bool = False) -> np.ndarray:
    """(q, d or 2d) queries x (n, 2d) items [µ, log σ²] -> (q, n) log-likelihoods (higher = closer)."""
    items = np.asarray(items, np.float64)
    if items.ndim != 2 or items.shape[1] % 2:
        raise ValueError("items must be (n, 2d) rows of [µ, log σ²]")
    d = items.shape[1] // 2
    mu_i, logvar_i = items[:, :d], items[:, d:]
    mu_q, logvar_q = _split_query(queries, d)
    if not symmetric or logvar_q is None:
        # Σ_j (µq - µi)² / σi² expanded into matrix products: O(q·n·d) BLAS, no (q, n, d) tensor.
        w = np.exp(-logvar_i)
        mahal = (mu_q**2) @ w.T - 2 * mu_q @ (mu_i * w).T + (mu_i**2 * w).sum(1)
        return (-0.5 * (np.maximum(mahal, 0) + logvar_i.sum(1) + d * _LOG_2PI)).astype(np.float32)
    var_i = np.exp(logvar_i)
    out = np.empty((len(mu_q), len(mu_i)), np.float32)
    step = max(1, _SYM_BATCH_ELEMENTS // max(1, len(mu_i) * d))
    for s in range(0, len(mu_q), step):
        var = np.exp(logvar_q[s:s + step, None, :]) + var_i[None]
        diff2 = (mu_q[s:s + step, None, :] - mu_i[None]) ** 2
        out[s:s + step] = -0.5 * (diff2 / var + np.log(var) + _LOG_2PI).sum(-1)
    return out


SCORERS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "loglik": lambda q, x: loglik_scores(q, x, symmetric=False),
    "loglik-sym": lambda q, x: loglik_scores(q, x, symmetric=True),
}
SCORED_METRICS = tuple(SCORERS)
_QUERY_BATCH = 512


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column positions of the k highest scores per row, best first."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else \
        np.tile(np.arange(scores.shape[1]), (len(scores), 1))
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


class ScoredIndex(IndexBackend):
    """Brute-force index for a metric in :data:`SCORERS` (exact; fine to ~10^5 items)."""

    backend = "scored"

    def __init__(self, dim: int, metric: str = "loglik", **_ignored):
        if metric not in SCORERS:
            raise ValueError(f"unknown scored metric {metric!r}; choose one of {', '.join(SCORERS)}")
        self.dim, self.metric = int(dim), metric
        self._ids = np.zeros(0, np.int64)
        self._vectors = np.zeros((0, self.dim), np.float32)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, np.int64).ravel()
        vectors = np.asarray(vectors, np.float32).reshape(-1, self.dim)
        keep = ~np.isin(self._ids, ids)
        self._ids = np.concatenate([self._ids[keep], ids])
        self._vectors = np.concatenate([self._vectors[keep], vectors])

    def remove(self, ids: np.ndarray) -> int:
        gone = np.isin(self._ids, np.asarray(ids, np.int64))
        self._ids, self._vectors = self._ids[~gone], self._vectors[~gone]
        return int(gone.sum())

    def search(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None):
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        ids, vectors = self._ids, self._vectors
        if allowed_ids is not None:
            mask = np.isin(ids, np.asarray(allowed_ids, np.int64))
            ids, vectors = ids[mask], vectors[mask]
        distances = np.full((len(queries), k), np.inf, np.float32)
        found = np.full((len(queries), k), -1, np.int64)
        if len(ids) == 0:
            return distances, found
        for s in range(0, len(queries), _QUERY_BATCH):
            scores = SCORERS[self.metric](queries[s:s + _QUERY_BATCH], vectors)
            top = _top_k(scores, k)
            distances[s:s + len(top), :top.shape[1]] = -np.take_along_axis(scores, top, 1)
            found[s:s + len(top), :top.shape[1]] = ids[top]
        return distances, found

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / "vectors.tmp.npz"
        np.savez(tmp, ids=self._ids, vectors=self._vectors)
        os.replace(tmp, path / "vectors.npz")
        (path / "meta.json").write_text(json.dumps({"backend": self.backend, "dim": self.dim, "metric": self.metric}))

    @classmethod
    def load(cls, path: Path) -> "ScoredIndex":
        meta = json.loads((Path(path) / "meta.json").read_text())
        index = cls(meta["dim"], meta["metric"])
        with np.load(Path(path) / "vectors.npz") as data:
            index._ids, index._vectors = data["ids"], data["vectors"]
        return index

    def __len__(self) -> int:
        return len(self._ids)


def scored_neighbours(vectors: np.ndarray, k: int, metric: str, pool: np.ndarray | None = None) -> np.ndarray:
    """Leave-one-out kNN under a scored metric, shaped like ``evaluate.nearest_neighbours``: row q
    holds positions (into ``vectors``) of the k best items for ``pool[q]`` among ``pool``, never itself."""
    vectors = np.asarray(vectors, np.float32)
    pool = np.arange(len(vectors)) if pool is None else np.asarray(pool, np.int64)
    gallery = vectors[pool]
    result = np.full((len(pool), k), -1, np.int64)
    for s in range(0, len(pool), _QUERY_BATCH):
        scores = SCORERS[metric](gallery[s:s + _QUERY_BATCH], gallery)
        rows = np.arange(len(scores))
        scores[rows, s + rows] = -np.inf  # the query never retrieves itself
        top = _top_k(scores, min(k, len(pool) - 1)) if len(pool) > 1 else np.zeros((len(scores), 0), np.int64)
        result[s:s + len(top), :top.shape[1]] = pool[top]
    return result

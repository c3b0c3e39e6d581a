"""Exact search under scores faiss cannot compute: VAE log-likelihoods.

A VAE item is stored as [µ_i, log σ_i²] (2·d values). Two scores rank items for a query:

* ``loglik``      log N(µ_q | µ_i, diag σ_i²) — how likely the query's mean is under item i's
                  posterior (asymmetric: a broad, uncertain item posterior forgives more).
* ``loglik-sym``  log N(µ_q | µ_i, diag(σ_q² + σ_i²)) = log ∫ N(x|µ_q,σ_q²) N(x|µ_i,σ_i²) dx, the
                  expected-likelihood kernel: symmetric, and uses the query's uncertainty too.

Queries may carry only µ (d values, e.g. a point picked in the latent explorer); ``loglik-sym``
then treats the query as a point (σ_q = 0), which equals ``loglik``.

``ScoredIndex`` serves these metrics behind the ordinary ``IndexBackend`` interface (brute force in
numpy via ``lookalike.index.distances.exact_knn``, which defines the scores; distance = -score so
lower is still closer).
"""
from __future__ import annotations

import json
from pathlib import Path
import numpy as np

from lookalike.data.artifacts import save_npz, write_json
from lookalike.index.base import IndexBackend
from lookalike.index.distances import SCORED_METRICS, SCORERS, exact_knn

__all__ = ["ScoredIndex", "SCORED_METRICS"]


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
        distances, rows = exact_knn(queries, vectors, k, self.metric)
        return distances, np.where(rows >= 0, ids[np.clip(rows, 0, None)] if len(ids) else -1, -1)

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_npz(path / "vectors.npz", ids=self._ids, vectors=self._vectors)
        write_json(path / "meta.json", {"backend": self.backend, "dim": self.dim, "metric": self.metric})

    @classmethod
    def load(cls, path: Path) -> "ScoredIndex":
        meta = json.loads((Path(path) / "meta.json").read_text())
        index = cls(meta["dim"], meta["metric"])
        with np.load(Path(path) / "vectors.npz") as data:
            index._ids, index._vectors = data["ids"], data["vectors"]
        return index

    def __len__(self) -> int:
        return len(self._ids)

"""The index-backend interface: add / remove / search / save / load over int64 ids.

Backends return *distances* (lower is closer) whatever the metric, so callers compare backends
directly: cosine -> 1 - cos(q, x) (vectors are L2-normalised on the way in), l2 -> Euclidean
distance (not squared), l1 -> Manhattan distance; ``lookalike.index.distances`` converts raw values
and turns distances into scores. Missing results are padded with id -1 (distance inf).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from lookalike.index.distances import VECTOR_METRICS as METRICS


class IndexBackend(ABC):
    #: short name used by ``--backend`` ("faiss", "milvus", ...)
    backend: str

    def __init__(self, dim: int, metric: str = "cosine"):
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
        self.dim = int(dim)
        self.metric = metric

    @abstractmethod
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add (n,) int64 ids with their (n, dim) vectors. Re-adding an id replaces it."""

    @abstractmethod
    def remove(self, ids: np.ndarray) -> int:
        """Remove ids; return how many were present."""

    @abstractmethod
    def search(
        self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(nq, dim) queries -> (distances, ids), each (nq, k). ``allowed_ids`` restricts the search
        to those ids *inside* the index (a filter that still returns k hits when k exist)."""

    @abstractmethod
    def save(self, path: Path) -> None:
        """Persist atomically under ``path`` (a directory)."""

    @classmethod
    @abstractmethod
    def load(cls, path: Path) -> "IndexBackend":
        ...

    @classmethod
    def discard(cls, path: Path) -> None:
        """Release what the index saved at ``path`` keeps outside that directory (a collection on a
        database server) before the directory is deleted. File-based backends keep nothing outside."""

    @abstractmethod
    def __len__(self) -> int:
        ...

    def describe(self) -> str:
        return f"{self.backend} ({self.metric}, {len(self)} vectors)"

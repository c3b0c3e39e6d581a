"""Index backends by name: ``make_index("faiss", dim, metric)``, ``load_index(path)``.

The interface: :class:`~lookalike.index.base.IndexBackend` (add / remove / search / save / load
over int64 ids, distances ascending) and :mod:`lookalike.index.distances` (``l2_normalize``, raw
value -> distance -> score per metric, ``exact_knn``, ``range_pairs`` / ``hamming_pairs`` range
search) and :mod:`lookalike.index.ivf` (``PreassignedIVF``: search restricted to given clusters).
Backends: ``faiss`` (:mod:`~lookalike.index.faiss_backend`: flat, HNSW, IVF-PQ, chosen by size; embedded),
``milvus`` (:mod:`~lookalike.index.milvus_backend`: Milvus Lite or a server) and ``scored``
(:mod:`~lookalike.index.scored`: exact numpy index for the VAE log-likelihood metrics).
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

from lookalike.index.base import METRICS, IndexBackend
# Metrics no vector database computes (VAE log-likelihoods): always served by the exact numpy index.
from lookalike.index.distances import SCORED_METRICS

_BACKENDS = {
    "faiss": ("lookalike.index.faiss_backend", "FaissIndex"),
    "milvus": ("lookalike.index.milvus_backend", "MilvusIndex"),
    "scored": ("lookalike.index.scored", "ScoredIndex"),
}


def backend_class(name: str) -> type[IndexBackend]:
    if name not in _BACKENDS:
        raise KeyError(f"unknown index backend {name!r}; available: {', '.join(_BACKENDS)}")
    module, cls = _BACKENDS[name]
    return getattr(importlib.import_module(module), cls)


def make_index(backend: str, dim: int, metric: str = "cosine", **params) -> IndexBackend:
    if metric in SCORED_METRICS:
        backend = "scored"
    return backend_class(backend)(dim, metric, **params)


def load_index(path: Path, mmap: bool = False) -> IndexBackend:
    """The index saved at ``path``; ``mmap``: memory-map its vectors where the backend can
    (``FaissIndex.load``), so the processes serving one catalog share them."""
    meta = json.loads((Path(path) / "meta.json").read_text())
    cls = backend_class(meta["backend"])
    return cls.load(Path(path), mmap=True) if mmap and getattr(cls, "mappable", False) else cls.load(Path(path))


def discard_index(path: Path) -> None:
    """Before deleting a saved index's directory: drop what it holds elsewhere (a Milvus collection).
    Best effort: an unreadable meta.json or an unreachable server leaves nothing to do here."""
    try:
        meta = json.loads((Path(path) / "meta.json").read_text())
        backend_class(meta["backend"]).discard(Path(path))
    except Exception:  # noqa: BLE001 - a stale index must never stop its rebuild
        pass


__all__ = ["IndexBackend", "METRICS", "make_index", "load_index", "backend_class", "discard_index"]

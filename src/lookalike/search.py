"""Nearest-neighbour search over a catalog's vectors: by item, image or vector, with filters.

Indexes are built from the store's vector matrix on first use, saved under the catalog's
``index/`` directory with the data version they were built from, and rebuilt when that version
changes (any ingest, removal or metadata edit bumps it).
"""
from __future__ import annotations

import json
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.index import IndexBackend, load_index, make_index
from lookalike.index.distances import distance_to_score
from lookalike.data.artifacts import encoder_key, write_json
from lookalike.data.store import Store


@dataclass
class SearchResult:
    """One ranked hit, the only shape a ranking takes in lookalike: catalog search, latent nearest
    (explore.latent), goes-with (explore.goes_with), shop-the-look regions (shop.pipeline) and
    cluster search (explore.cluster_search). ``rank`` starts at 1; ``score`` and ``distance`` come
    from :mod:`lookalike.index.distances` for the metric the ranking used."""

    rank: int
    id: str
    score: float       # higher = more similar: lookalike.index.distances.distance_to_score
    distance: float    # lower = closer, in the metric's own units
    label: str | None
    path: str | None = None  # the item's image; None where the ranking holds no paths (latent explorer)
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "id": self.id, "score": round(self.score, 6), "distance": round(self.distance, 6),
                "label": self.label, "metadata": self.metadata}


class IndexManager:
    """Keeps one loaded index per (encoder, metric, backend), fresh with respect to the store."""

    def __init__(self, store: Store, backend: str = "faiss", **backend_params):
        self._store = store
        self.backend = backend
        self.backend_params = backend_params
        self._loaded: dict[tuple[str, str], tuple[str, IndexBackend]] = {}
        self._lock = threading.Lock()

    def path(self, encoder: str, metric: str) -> Path:
        return self._store.dir / "index" / encoder_key(encoder) / f"{self.backend}-{metric}"

    def get(self, encoder: str, metric: str) -> IndexBackend:
        version = self._store.version(encoder)
        with self._lock:
            cached = self._loaded.get((encoder, metric))
            if cached and cached[0] == version:
                return cached[1]
            index = self._load_saved(encoder, metric, version) or self.build(encoder, metric, version)
            self._loaded[(encoder, metric)] = (version, index)
            return index

    def _load_saved(self, encoder: str, metric: str, version: str) -> IndexBackend | None:
        path = self.path(encoder, metric)
        stamp = path / "version.json"
        if not stamp.exists() or json.loads(stamp.read_text()).get("version") != version:
            return None
        try:
            return load_index(path)
        except Exception:  # unreadable/partial index files: rebuild from the store
            return None

    def build(self, encoder: str, metric: str, version: str | None = None) -> IndexBackend:
        rowids, matrix = self._store.matrix(encoder)
        index = make_index(self.backend, matrix.shape[1], metric, **self.backend_params)
        if len(rowids):
            index.add(rowids, matrix)
        path = self.path(encoder, metric)
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        index.save(path)
        write_json(path / "version.json", {"version": version or self._store.version(encoder)})
        return index


def run_search(store: Store, index: IndexBackend, query: np.ndarray, k: int, metric: str,
               where: dict[str, Any] | None = None, exclude: set[int] | None = None,
               min_score: float | None = None) -> list[SearchResult]:
    """Top-k items for one query vector, excluding rowids in ``exclude`` (e.g. the query item)."""
    if k < 1:
        raise ValueError("k must be at least 1")
    allowed = store.rowids_where(where) if where else None
    if allowed is not None and len(allowed) == 0:
        return []
    exclude = exclude or set()
    distances, rowids = index.search(np.asarray(query, np.float32)[None, :], k + len(exclude), allowed_ids=allowed)
    keep = [(d, r) for d, r in zip(distances[0], rowids[0]) if r >= 0 and int(r) not in exclude][:k]
    items = store.get_by_rowids([r for _, r in keep])
    results = []
    for d, rowid in keep:
        score = float(distance_to_score(np.float32(d), metric))
        if min_score is not None and score < min_score:
            continue
        item = items.get(int(rowid))
        if item is None:  # removed since the index was loaded
            continue
        results.append(SearchResult(len(results) + 1, item.id, score, float(d), item.label, item.path, item.metadata))
    return results

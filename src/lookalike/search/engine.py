"""Top-k search of one query vector over a catalog's index, with filters."""
from __future__ import annotations

from typing import Any

import numpy as np

from lookalike.data.store import Store
from lookalike.index import IndexBackend
from lookalike.index.distances import distance_to_score
from lookalike.search.results import SearchResult


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

"""Candidates of one query vector from a catalog's index, exact under filters (stage 2 of
:mod:`lookalike.search.pipeline`)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from lookalike.data.store import Store
from lookalike.index import IndexBackend
from lookalike.index.distances import distance_to_score
from lookalike.search.results import SearchResult


def nearest(index: IndexBackend, query: np.ndarray, n: int, allowed: np.ndarray | None = None,
            exclude: set[int] | None = None) -> tuple[list[tuple[float, int]], bool]:
    """The index's part of :func:`candidates`: ``(distance, rowid)`` of the ``n`` nearest rowids to
    ``query`` (d,) among ``allowed`` (None: all), ``exclude`` dropped, in index order; and whether
    the index ran out of candidates. No store access: a rowid removed since the index loaded is
    still there (callers drop it). ValueError when ``n`` < 1."""
    if n < 1:
        raise ValueError("k must be at least 1")
    if allowed is not None and len(allowed) == 0:
        return [], True
    exclude = exclude or set()
    asked = n + len(exclude)
    distances, rowids = index.search(np.asarray(query, np.float32)[None, :], asked, allowed_ids=allowed)
    found = [(float(d), int(r)) for d, r in zip(distances[0], rowids[0]) if r >= 0]
    return [(d, r) for d, r in found if r not in exclude][:n], len(found) < asked


def candidates(store: Store, index: IndexBackend, query: np.ndarray, n: int, metric: str,
               allowed: np.ndarray | None = None, exclude: set[int] | None = None,
               min_score: float | None = None) -> tuple[list[SearchResult], bool]:
    """The ``n`` items closest to ``query`` (d,) among ``allowed`` rowids (None: all; filtered
    search stays exact: the index searches only those ids, faiss ``IDSelectorBatch``), minus the
    rowids in ``exclude`` and hits scoring below ``min_score``. Returns (hits in index order with
    ``score_parts = {"visual": score}``, exhausted: True when the index has no further candidates,
    so a deeper request would return nothing new)."""
    keep, exhausted = nearest(index, query, n, allowed, exclude)
    items = store.get_by_rowids([r for _, r in keep])
    # an index that re-scored its hits with a colour term says which (search.expansion.ColourWindow)
    colour_of = getattr(index, "last_colour", None)
    hits = []
    for d, rowid in keep:
        score = float(distance_to_score(np.float32(d), metric))
        if min_score is not None and score < min_score:
            exhausted = True  # scores only fall from here
            break
        item = items.get(rowid)
        if item is None:  # removed since the index was loaded
            continue
        parts = {"visual": score}
        if colour_of is not None and rowid in colour_of:
            parts.update({"visual.shape": score - colour_of[rowid], "visual.colour": colour_of[rowid]})
        hits.append(SearchResult(len(hits) + 1, item.id, score, float(d), item.label, item.path, item.metadata,
                                 score_parts=parts))
    return hits, exhausted


def run_search(store: Store, index: IndexBackend, query: np.ndarray, k: int, metric: str,
               where: dict[str, Any] | None = None, exclude: set[int] | None = None,
               min_score: float | None = None, filters: Sequence = (), *,
               rowids_only: bool = False) -> list[SearchResult] | list[int]:
    """Top-k items for one query vector among those matching ``where`` and ``filters``, excluding
    rowids in ``exclude`` (e.g. the query item). ``rowids_only``: just the rowids of those hits (int,
    in rank order), read from the index alone — no item lookups, no hit objects, ``min_score`` not
    applied, a rowid removed since the index loaded left for the caller to drop — as αQE's first
    stage of an upload search needs (:meth:`lookalike.search.expansion.ExpandedSearch.prepare`)."""
    allowed = store.rowids_where(where, filters) if where or filters else None
    if rowids_only:
        return [r for _, r in nearest(index, query, k, allowed, exclude)[0]]
    return candidates(store, index, query, k, metric, allowed, exclude, min_score)[0]

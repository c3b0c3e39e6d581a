"""Nearest-neighbour search over a catalog's vectors: by item, image or vector, with filters.

Interface: :class:`SearchResult` (every ranked hit in lookalike), :class:`IndexManager` (one
fresh index per encoder and metric), :func:`run_search` (top-k of one query vector),
:class:`Expansion` / :class:`ExpandedSearch` (centring, αQE and DBA re-ranking,
:mod:`lookalike.search.expansion`; the fitted centring / PCA-whitening: :mod:`lookalike.search.whitening`).
"""
from lookalike.search.engine import run_search
from lookalike.search.expansion import ExpandedSearch, Expansion
from lookalike.search.indexes import IndexManager
from lookalike.search.results import SearchResult

__all__ = ["ExpandedSearch", "Expansion", "IndexManager", "SearchResult", "run_search"]

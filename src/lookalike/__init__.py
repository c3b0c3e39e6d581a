"""lookalike — visual product recommendation.

The public API is small: open a catalog, index images into it, search it.

    >>> from lookalike import Catalog
    >>> cat = Catalog.open("demo")
    >>> cat.search(item="some-id", k=5)
"""
from lookalike.catalog import Catalog, SearchResult

__all__ = ["Catalog", "SearchResult"]
__version__ = "0.1.0"

"""A store of generated items with shop-like metadata, for filter benchmarks at scale.

``synthetic_store(folder, n)`` writes ``n`` items (rowids 1..n) whose metadata holds a ``price``
(a JSON number, uniform in [0, 1000)) and a ``brand`` (one of ten, uniform), the shape of a range +
set filter a shop sends; ``share_filters(share)`` is such a filter matching about ``share`` of them.
The items have no images or vectors: the benchmark pairs rowid r with benchmark vector r - 1.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from lookalike.data.store import Store

BRANDS = [f"brand-{i}" for i in range(10)]


def synthetic_store(folder: str | Path, n: int, seed: int = 0, chunk: int = 100_000) -> Store:
    """A new store under ``folder`` with ``n`` generated items (one transaction per ``chunk``)."""
    store = Store(Path(folder))
    rng = np.random.default_rng(seed)
    now = time.time()
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        prices = np.round(rng.random(m) * 1000, 2)
        brands = rng.integers(0, len(BRANDS), m)
        rows = [(f"item-{start + i}", f"/synthetic/{start + i}.jpg", None,
                 json.dumps({"price": float(prices[i]), "brand": BRANDS[brands[i]]}), "-", now, now)
                for i in range(m)]
        with store.transaction() as db:
            db.executemany("INSERT INTO items (id, path, label, meta, sha256, added_at, updated_at) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    with store.transaction() as db:  # an encoder row: its version is the data version filters cache on
        db.execute("INSERT OR IGNORE INTO encoders (name, dim, metric, fingerprint) VALUES ('synthetic', 1, "
                   "'cosine', '-')")
    return store


def share_filters(share: float) -> list[tuple[str, str, tuple]]:
    """Filters (``lookalike.search.filters.Filter`` tuples) matching about ``share`` of a synthetic
    store: half the brands and a price range covering the rest of the share."""
    if not 0 < share <= 1:
        raise ValueError("share must lie in (0, 1]")
    brands = BRANDS[: len(BRANDS) // 2] if share <= 0.5 else BRANDS
    price = 1000 * min(share * len(BRANDS) / len(brands), 1.0)
    return [("brand", "in", tuple(brands)), ("price", "<", (price,))]

"""Precomputed "more like this": every item's top hits for the default item query, computed in a
few batched index searches and memory-mapped by every process serving the catalog.

The plain "more like this item" query (``Catalog.search(item=...)`` with the catalog's default
re-ranking and no filters, rules, grouping, examples, diversity or duplicate collapse) is what a
shop asks for most: one per product page view. Live, it is two index searches (αQE: the top
``qe``, then the expanded query) plus the colour split of the hits; from the table it is one row
read. This is the "related items" table real recommenders precompute (e.g. Amazon's item-to-item
collaborative filtering, Linden, Smith & York, IEEE Internet Computing 2003: "the similar-items
table ... computed offline").

**Same answers as live search.** The table is built by the live path's own steps (the stored
vector, ``l2_normalize``, the index's top ``qe + 1`` without the item, ``expand_queries`` one
query at a time, the index's top ``depth + 1`` without the item, ``colour_parts``), only with the
index searched in batches. Index searches are per query, so a batch changes nothing; and a
shallower search is the first rows of a deeper one when the index's search breadth does not
depend on k: exact (flat) search, and HNSW while ``k + 1 <= efSearch`` (faiss keeps one candidate
beam of ``max(efSearch, k)`` and returns the best k it visited). :func:`supports` says which
indexes qualify (not IVF-PQ or ``reduced``, whose re-ranked candidate count grows with k), and
``depth`` stays below the HNSW breadth. ``tests/search/test_similar.py`` checks ids, scores and
score parts against live search, also after writes and removals.

**Freshness.** A table is keyed by the encoder's vector version and every setting that shapes the
answer (:func:`table_stamp`); a vector write (add, re-embed, remove) makes it stale, and stale
tables are never read (the live search answers meanwhile). Metadata edits do not: hits read their
metadata from the store at answer time. Which rows a write changes is not local: an added item can
enter any item's αQE neighbours (changing that item's expanded query and so its whole list) and the
graph search of items far from it (their beams pass through new nodes), so the table is rebuilt
whole, by ``Catalog.warm`` and, in a server, in a background thread after a write
(``Catalog.use_similar(refresh=True)``).

Layout: ``<catalog>/cache/<encoder-key>/similar/<stamp digest>/`` holding ``rowids.npy`` (n,)
int64, ``hits.npy`` (n, depth) int64 rowids (-1 padded), ``distances.npy`` (n, depth) float32,
``colour.npy`` (n, depth) float32 (``visual.colour`` of colour-fused encoders) and ``stamp.json``;
written into a temporary folder and renamed, so a reader sees a whole table or none.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lookalike.data.artifacts import digest, encoder_key, file_lock, save_npy, write_json
from lookalike.data.store import Store
from lookalike.encoders.colour import COLOUR_DIM
from lookalike.index import IndexBackend
from lookalike.index.distances import l2_normalize
from lookalike.search.expansion import (ColourWindow, ExpandedSearch, Expansion, augment_database, cnn_only,
                                       expand_queries, gallery_rows)
from lookalike.search.pipeline import colour_parts

#: hits kept per item: answers ``k <= DEPTH`` (the web app asks 12-24, the API's default is 12)
DEPTH = 64
FORMAT = 1            # bump when the files change meaning
BATCH = 2048          # queries per batched index search while building


def supports(index: IndexBackend, depth: int = DEPTH) -> bool:
    """Whether ``index``'s top k is the first k rows of its top ``depth + 1`` for every k below
    (what makes a precomputed table answer exactly as live search): exact indexes, and HNSW graphs
    whose search breadth ``efSearch`` is at least ``depth + 1``."""
    nested = getattr(index, "nested_top_k", None)
    return bool(nested and nested(depth + 1))


def table_stamp(version: str, encoder: str, metric: str, expansion: Expansion, keep: int, colour_weight: float,
                index: IndexBackend, depth: int = DEPTH) -> dict[str, Any]:
    """What a table's answers depend on: the encoder's data version, the metric, the re-ranking,
    the colour split, the index's parameters and the depth."""
    params = index.params() if hasattr(index, "params") else {}
    stamp = {"format": FORMAT, "version": version, "encoder": encoder, "metric": metric, "expansion": str(expansion),
             "keep": int(keep), "colour_weight": float(colour_weight), "depth": int(depth),
             "index": {"backend": getattr(index, "backend", type(index).__name__), **params}}
    return {**stamp, "key": digest(json.dumps(stamp, sort_keys=True))}   # its folder's name


@dataclass
class SimilarTable:
    """A built table (arrays as described in the module docstring; memory-mapped when loaded)."""

    stamp: dict[str, Any]
    rowids: np.ndarray
    hits: np.ndarray
    distances: np.ndarray
    colour: np.ndarray | None

    @property
    def depth(self) -> int:
        return int(self.hits.shape[1])

    def lookup(self, rowid: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
        """(rowids, distances, colour parts or None) of item ``rowid``'s first ``k`` hits, best
        first, without padding; None when the item is not in the table or ``k`` exceeds its depth."""
        if k > self.depth:
            return None
        at = int(np.searchsorted(self.rowids, rowid))
        if at >= len(self.rowids) or self.rowids[at] != rowid:
            return None
        hits = np.asarray(self.hits[at, :k])
        n = int(np.count_nonzero(hits >= 0))
        colour = None if self.colour is None else np.asarray(self.colour[at, :n])
        return hits[:n], np.asarray(self.distances[at, :n]), colour

    def save(self, folder: Path) -> None:
        """Write the table as ``folder`` (a new folder: built beside it, then renamed)."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=folder.parent))
        try:
            save_npy(tmp / "rowids.npy", np.asarray(self.rowids, np.int64))
            save_npy(tmp / "hits.npy", np.asarray(self.hits, np.int64))
            save_npy(tmp / "distances.npy", np.asarray(self.distances, np.float32))
            if self.colour is not None:
                save_npy(tmp / "colour.npy", np.asarray(self.colour, np.float32))
            write_json(tmp / "stamp.json", self.stamp)
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def load(cls, folder: Path) -> "SimilarTable":
        """The table saved in ``folder``, its arrays memory-mapped (shared by every process)."""
        folder = Path(folder)
        stamp = json.loads((folder / "stamp.json").read_text())

        def mapped(name: str) -> np.ndarray:
            # a plain ndarray view of the mapping: np.memmap's Python-level __getitem__ and
            # __array_finalize__ cost more than the row read itself on the per-request path
            return np.load(folder / name, mmap_mode="r").view(np.ndarray)

        colour = mapped("colour.npy") if (folder / "colour.npy").exists() else None
        return cls(stamp, np.load(folder / "rowids.npy"), mapped("hits.npy"), mapped("distances.npy"), colour)


def build_table(store: Store, index: IndexBackend, encoder: str, metric: str, expansion: Expansion,
                expanded: ExpandedSearch, keep: int = 0, colour_weight: float = 0.0, depth: int = DEPTH,
                progress: bool = False) -> SimilarTable:
    """Every item's top ``depth`` hits for the default item query of ``encoder`` on ``index``
    (the catalog's index of that encoder and metric), as ``Catalog.search(item=...)`` ranks them:
    ``expansion`` (αQE / DBA, already resolved for the catalog's size as
    :meth:`ExpandedSearch.prepare` does, DBA read from ``expanded``), the item itself excluded,
    and with ``colour_weight`` > 0 the ``visual.colour`` part of each hit (``keep`` trailing colour
    values). ``progress``: a progress bar on stderr. ValueError when ``index`` does not keep top
    lists nested (:func:`supports`)."""
    if not supports(index, depth):
        raise ValueError(f"a {type(index).__name__} whose top k depends on k cannot back a similar-items table")
    rowids, matrix = store.matrix(encoder)
    rowids = np.asarray(rowids, np.int64)
    version = store.version(encoder)
    n = len(rowids)
    hits = np.full((n, depth), -1, np.int64)
    distances = np.full((n, depth), np.inf, np.float32)
    # as pipeline._explain_colour: the split needs a CNN part before the colour values
    colour = np.zeros((n, depth), np.float32) if colour_weight > 0 and matrix.shape[1] > COLOUR_DIM else None
    searched, gallery, position, centring = index, None, None, None
    window = None
    if expansion.active:   # as ExpandedSearch.prepare: DBA / centring search their own index
        _, gallery, position, own_index, centring = expanded._gallery(encoder, expansion, keep)
        searched = own_index if own_index is not None else index
        if expansion.window and keep > 0:   # the CNN part ranks, colour re-orders its first hits
            window = ColourWindow(searched, gallery_rows(gallery, position), keep, expansion.window,
                                  expansion.colour)
    with tqdm(total=n, desc="similar-items table", unit="item", disable=not progress, leave=False) as bar:
        for lo in range(0, n, BATCH):
            rows = np.arange(lo, min(lo + BATCH, n))
            own = rowids[rows]
            queries = np.asarray(matrix[rows], np.float32)
            if expansion.active:
                queries = np.stack([l2_normalize(q) for q in queries])   # as ExpandedSearch.prepare, one by one
                if centring is not None:
                    queries = np.stack([centring.transform(q)[0] for q in queries])
                if expansion.qe:
                    _, first = searched.search(np.stack([cnn_only(q, keep) for q in queries]) if window
                                               else queries, expansion.qe + 1)
                    for j in range(len(rows)):
                        top = [int(r) for r in first[j] if r >= 0 and r != own[j]][:expansion.qe]
                        at = [position[r] for r in top if r in position]
                        if at:
                            found = gallery[at] if expansion.dba else augment_database(np.asarray(gallery[at]), 0,
                                                                                       keep=keep)
                            queries[j] = expand_queries(queries[j][None], found[None], expansion.alpha, keep)[0]
            if window is not None:
                dist, found = window.search(queries, depth + 1, exclude=[{int(r)} for r in own])
            else:
                dist, found = searched.search(queries, depth + 1)
            for j in range(len(rows)):
                mask = (found[j] >= 0) & (found[j] != own[j])
                ids, ds = found[j][mask][:depth], dist[j][mask][:depth]
                hits[lo + j, :len(ids)] = ids
                distances[lo + j, :len(ids)] = ds
                if colour is not None and window is not None:
                    colour[lo + j, :len(ids)] = window.colour_terms[j][mask][:depth]
                elif colour is not None and len(ids):
                    positions = np.searchsorted(rowids, ids)
                    colour[lo + j, :len(ids)] = colour_parts(queries[j], np.asarray(matrix[positions]))[1]
            bar.update(len(rows))
    if store.version(encoder) != version:   # a write landed meanwhile: this table answers for no version
        raise RuntimeError("the catalog changed while its similar-items table was built")
    stamp = table_stamp(version, encoder, metric, expansion, keep, colour_weight, index, depth)
    return SimilarTable(stamp, rowids, hits, distances, colour)


class SimilarTables:
    """The tables of one catalog: loads the one matching a stamp (kept in memory per stamp),
    builds and saves one (one process at a time, under a file lock), or rebuilds one in a
    background thread."""

    def __init__(self, store: Store):
        self._store = store
        self._loaded: dict[str, SimilarTable] = {}
        self._lock = threading.Lock()
        self._building: threading.Thread | None = None

    def folder(self, stamp: dict[str, Any]) -> Path:
        return self._store.dir / "cache" / encoder_key(stamp["encoder"]) / "similar" / stamp["key"]

    def get(self, stamp: dict[str, Any]) -> SimilarTable | None:
        """The saved table built for exactly ``stamp`` (:func:`table_stamp`), or None."""
        key = stamp["key"]
        table = self._loaded.get(key)
        if table is not None:
            return table
        folder = self.folder(stamp)
        if not (folder / "stamp.json").exists():
            return None
        try:
            table = SimilarTable.load(folder)
        except (OSError, ValueError):   # half-removed by a rebuild: the live search answers meanwhile
            return None
        if table.stamp != stamp:
            return None
        with self._lock:
            for old in [k for k, t in self._loaded.items() if t.stamp["encoder"] == stamp["encoder"]]:
                del self._loaded[old]
            self._loaded[key] = table
        return table

    def build(self, stamp: dict[str, Any], make, progress: bool = False) -> SimilarTable:
        """The table for ``stamp``: loaded when saved already, else ``make(progress)`` (a
        :func:`build_table` call) saved, the encoder's older tables removed. Processes building
        the same encoder's table wait for each other (a file lock), then load what was saved."""
        parent = self.folder(stamp).parent
        parent.mkdir(parents=True, exist_ok=True)
        with file_lock(parent / ".build.lock"):
            table = self.get(stamp)
            if table is not None:
                return table
            table = make(progress)
            table.save(self.folder(stamp))
            for other in parent.iterdir():
                if other.is_dir() and other.name != self.folder(stamp).name:
                    shutil.rmtree(other, ignore_errors=True)
        return self.get(stamp) or table

    def build_in_background(self, stamp: dict[str, Any], make) -> bool:
        """Start :meth:`build` in a daemon thread unless one is running; True when started."""
        with self._lock:
            if self._building is not None and self._building.is_alive():
                return False
            def run():
                try:
                    self.build(stamp, make)
                except Exception:   # noqa: BLE001 - a table that cannot be built leaves the live search answering
                    pass
            self._building = threading.Thread(target=run, name="similar-table", daemon=True)
            self._building.start()
            return True

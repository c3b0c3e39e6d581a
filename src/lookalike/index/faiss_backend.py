"""faiss backend: exact search for small catalogs, graph or compressed indexes as they grow.

``kind`` picks the faiss structure (``auto`` chooses by size, thresholds measured with
``lookalike bench index``; see docs/scaling.md):

=============  ================================================  =========================
kind           faiss structure                                   bytes per 1280-d vector
=============  ================================================  =========================
flat           IndexFlat (exact)                                 5,120
hnsw           HNSW graph over float32 vectors                   5,120 + ~2·M·4 links
hnsw-fp16      HNSW graph over float16 vectors (SQfp16)          2,560 + links
ivfpq          IVF + 4-bit PQ codes, re-ranked on float16 vectors  2,560 + 320
=============  ================================================  =========================

Vectors sit at positions 0..n-1 inside faiss; ``_ids[pos]`` maps back to item ids. There is no
second copy of the vectors: exact work (filtered search over a small subset, rebuilds after a
removal) reads them from the index's own exact/float16 storage. Filters become a faiss bitmap
selector, searched exactly over the stored vectors when the subset is small and with the
approximate index (search breadth raised by 1/selectivity) when it is large — so a filtered query
still returns k hits whenever k items match.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import faiss
import numpy as np

from lookalike.data.artifacts import atomic_path, save_npy, write_json
from lookalike.index.base import IndexBackend
from lookalike.index.distances import faiss_metric, prepare, raw_to_distance

# Below this many vectors exact search answers a single query in a few milliseconds or less (1280-d,
# one core, ~1-3 us per vector on a busy 2-core box), so approximate search is not worth its recall
# loss. Measured with ``lookalike bench index`` (docs/scaling.md).
HNSW_THRESHOLD = int(os.environ.get("LOOKALIKE_HNSW_THRESHOLD", 5_000))
# From this size on, ``auto`` builds IVF-PQ: an HNSW graph over 1280-d vectors takes ~2 min per 100k
# to build on 2 cores and needs 5 KB per vector; IVF-PQ builds a million in minutes at half the memory.
IVFPQ_THRESHOLD = int(os.environ.get("LOOKALIKE_IVFPQ_THRESHOLD", 250_000))
# A filter matching at most this many items is searched exactly over the subset (~0.2-1 us per
# member on float16 storage; above it the approximate path with a selector is faster at recall ~1).
SUBSET_EXACT_MAX = int(os.environ.get("LOOKALIKE_SUBSET_EXACT_MAX", 3_000))
# Approximate filtered search never widens its breadth beyond this (then it is exact).
MAX_FILTER_EF = 4096
# Fewer queries than this are searched on one thread (see search()).
SMALL_BATCH = 8
# IVF-PQ needs enough vectors to train its codebooks (256 centroids per sub-quantizer).
IVFPQ_MIN = 2_000

KINDS = ("auto", "flat", "hnsw", "hnsw-fp16", "hnsw-pca", "ivfpq")


class FaissIndex(IndexBackend):
    backend = "faiss"

    def __init__(self, dim: int, metric: str = "cosine", kind: str = "auto", hnsw_m: int = 32,
                 ef_search: int = 96, ef_construction: int = 80, nprobe: int = 32, refine: int = 32,
                 pca_dim: int = 256, pq_dims: int | None = None):
        super().__init__(dim, metric)
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}")
        self.kind = kind
        self.hnsw_m, self.ef_search, self.ef_construction = hnsw_m, ef_search, ef_construction
        self.nprobe, self.refine, self.pca_dim, self.pq_dims = nprobe, refine, pca_dim, pq_dims
        self._ids = np.zeros(0, np.int64)
        self._order = None           # id -> position lookup (see _build_lookup), built lazily
        self._index: faiss.Index | None = None

    # -- choosing and building ------------------------------------------------------------
    def _prepare(self, vectors: np.ndarray) -> np.ndarray:
        return prepare(np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim), self.metric)

    def resolved_kind(self, n: int | None = None) -> str:
        n = len(self._ids) if n is None else n
        if self.kind != "auto":
            if self.metric == "l1" or (self.kind in ("ivfpq", "hnsw-pca") and n < IVFPQ_MIN):
                return "flat"  # faiss graphs/PQ have no L1; PQ cannot be trained on a handful
            return self.kind
        if n < HNSW_THRESHOLD or self.metric == "l1":
            return "flat"
        return "hnsw" if n < IVFPQ_THRESHOLD else "ivfpq"

    def _faiss_metric(self) -> int:
        return faiss_metric(self.metric)

    def _new_index(self, kind: str, train: np.ndarray) -> faiss.Index:
        metric = self._faiss_metric()
        if kind == "flat":
            return faiss.IndexFlat(self.dim, metric)
        if kind in ("hnsw", "hnsw-fp16"):
            if kind == "hnsw":
                index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, metric)
            else:
                index = faiss.IndexHNSWSQ(self.dim, faiss.ScalarQuantizer.QT_fp16, self.hnsw_m, metric)
            index.hnsw.efConstruction = self.ef_construction
            index.hnsw.efSearch = self.ef_search
            return index
        if kind == "hnsw-pca":
            # HNSW over PCA-reduced vectors (cheap to build and search), re-ranked on float16 originals.
            pca = faiss.PCAMatrix(self.dim, min(self.pca_dim, self.dim))
            graph = faiss.IndexHNSWFlat(pca.d_out, self.hnsw_m, metric)
            graph.hnsw.efConstruction, graph.hnsw.efSearch = self.ef_construction, self.ef_search
            base = faiss.IndexPreTransform(pca, graph)
            index = faiss.IndexRefine(base, faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_fp16, metric))
            index.k_factor = self.refine
            self._parts = (pca, graph, base)  # swig: these Python objects own the C++ parts
            index.train(train)
            return index
        # ivfpq: ~2 sqrt(n) coarse clusters; 4-bit fast-scan PQ (dim/4 bytes, SIMD scanning, cheap to
        # train: 16 centroids per sub-quantizer); the top refine*k re-ranked on float16 vectors.
        # Measured at 1M (docs/scaling.md): recall@10 0.958, p50 1.1 ms, built in 91 s, 2.9 GB.
        nlist = int(np.clip(2 * np.sqrt(max(len(train), 1)), 16, max(len(train) // 39, 16)))
        per_code = self.pq_dims or 2   # dims per 4-bit code: 1280-d -> 320 B (4 dims per code: recall 0.95 needs refine 64)
        code = f"PQ{self.dim // per_code}x4fs" if self.dim % (2 * per_code) == 0 else f"PQ{_divisor(self.dim)}x8np"
        base = faiss.index_factory(self.dim, f"IVF{nlist},{code}", metric)
        index = faiss.IndexRefine(base, faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_fp16, metric))
        index.k_factor = self.refine
        sample = train[np.random.default_rng(0).choice(len(train), min(len(train), 50 * nlist), replace=False)]
        index.train(sample)
        faiss.extract_index_ivf(index.base_index).nprobe = self.nprobe
        return index

    def _build(self, stored: np.ndarray, new: np.ndarray | None = None) -> None:
        """A fresh index over ``stored`` (already prepared) then ``new`` (raw, prepared in chunks
        so a million vectors never need a second full-size normalised copy)."""
        new = np.zeros((0, self.dim), np.float32) if new is None else new
        n = len(stored) + len(new)
        learns = self.resolved_kind(n) in ("ivfpq", "hnsw-pca")  # only these learn from data
        limit = 200_000 if learns else 0
        sample = np.concatenate([stored[:limit], self._prepare(new[:max(0, limit - len(stored))])])
        self._index = self._new_index(self.resolved_kind(n), sample)
        self._add_chunks(stored, prepared=True)
        self._add_chunks(new)

    def _add_chunks(self, vectors: np.ndarray, prepared: bool = False, chunk: int = 65_536) -> None:
        for start in range(0, len(vectors), chunk):
            part = vectors[start:start + chunk]
            self._index.add(part if prepared else self._prepare(part))

    def _built_kind(self) -> str:
        if isinstance(self._index, faiss.IndexRefine):
            base = faiss.downcast_index(self._index.base_index)
            return "hnsw-pca" if isinstance(base, faiss.IndexPreTransform) else "ivfpq"
        if isinstance(self._index, faiss.IndexHNSW):
            return "hnsw-fp16" if isinstance(self._index, faiss.IndexHNSWSQ) else "hnsw"
        return "flat"

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids but {len(vectors)} vectors")
        if len(np.unique(ids)) != len(ids):  # last one wins, as with repeated adds
            _, last = np.unique(ids[::-1], return_index=True)
            keep = np.sort(len(ids) - 1 - last)
            ids, vectors = ids[keep], vectors[keep]
        replaced = self._positions(ids)
        target_kind = self.resolved_kind(len(self._ids) - len(replaced) + len(ids))
        if self._index is None or len(replaced) or target_kind != self._built_kind():
            keep = np.setdiff1d(np.arange(len(self._ids)), replaced)
            old = self.stored_vectors(keep)
            self._ids = np.concatenate([self._ids[keep], ids])
            self._build(old, vectors)
        else:  # the common case: append to the index as built
            self._ids = np.concatenate([self._ids, ids])
            self._add_chunks(vectors)
        self._order = None

    def remove(self, ids: np.ndarray) -> int:
        gone = self._positions(np.asarray(ids, dtype=np.int64).ravel())
        if len(gone):
            keep = np.setdiff1d(np.arange(len(self._ids)), gone)
            vectors = self.stored_vectors(keep)
            self._ids = self._ids[keep]
            self._order = None
            self._build(vectors)  # stored vectors are already prepared
        return int(len(gone))

    # -- stored vectors -------------------------------------------------------------------
    def _exact_storage(self) -> faiss.Index:
        """The index part holding full vectors (float32 or float16) at positions 0..n-1."""
        if isinstance(self._index, faiss.IndexRefine):
            return faiss.downcast_index(self._index.refine_index)
        if isinstance(self._index, faiss.IndexHNSW):
            return faiss.downcast_index(self._index.storage)
        return self._index

    def stored_vectors(self, positions: np.ndarray | None = None) -> np.ndarray:
        """float32 copies of stored vectors (normalised for cosine; float16-rounded in fp16 kinds)."""
        if self._index is None or self._index.ntotal == 0:
            return np.zeros((0, self.dim), np.float32)
        positions = np.arange(len(self._ids)) if positions is None else np.asarray(positions, np.int64)
        if len(positions) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self._exact_storage().reconstruct_batch(positions)

    # -- searching ------------------------------------------------------------------------
    def _positions(self, ids: np.ndarray) -> np.ndarray:
        """Positions of those ``ids`` present in the index (unknown ids are ignored)."""
        if len(self._ids) == 0 or len(ids) == 0:
            return np.zeros(0, np.int64)
        if self._order is None:
            self._build_lookup()
        if isinstance(self._order, tuple):  # dense ids (SQLite rowids): a direct table, O(m)
            table = self._order[1]
            ids = ids[(ids >= 0) & (ids < len(table))]
            found = table[ids]
            return np.unique(found[found >= 0])
        sorted_ids = self._ids[self._order]
        at = np.clip(np.searchsorted(sorted_ids, ids), 0, len(sorted_ids) - 1)
        return np.unique(self._order[at[sorted_ids[at] == ids]])

    def _build_lookup(self) -> None:
        """id -> position: a table when ids are dense (max id < 4n), else a sort order to bisect."""
        if self._ids.min() >= 0 and self._ids.max() < 4 * len(self._ids) + 1024:
            table = np.full(int(self._ids.max()) + 1, -1, np.int64)
            table[self._ids] = np.arange(len(self._ids))
            self._order = ("table", table)
        else:
            self._order = np.argsort(self._ids, kind="stable")

    def search(self, queries, k, allowed_ids=None):
        queries = self._prepare(queries)
        if len(queries) >= SMALL_BATCH:
            return self._search(queries, k, allowed_ids)
        # A few queries gain nothing from an OpenMP team, and on a busy machine waking one costs more
        # than the search (flat 20k x 1280: 41 ms on 1 thread, 123 ms on 2). The setting is per thread.
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            return self._search(queries, k, allowed_ids)
        finally:
            faiss.omp_set_num_threads(threads)

    def _search(self, queries, k, allowed_ids):
        nq = len(queries)
        empty = np.full((nq, k), np.inf, np.float32), np.full((nq, k), -1, np.int64)
        if self._index is None or len(self._ids) == 0:
            return empty
        if allowed_ids is None:
            self._set_breadth(self._index, max(self.ef_search, k), self.nprobe)
            raw, pos = self._index.search(queries, min(k, len(self._ids)))
            return self._finish(raw, pos, k)
        positions = self._positions(np.asarray(allowed_ids, dtype=np.int64).ravel())
        if len(positions) == 0:
            return empty
        selector = _bitmap_selector(positions, len(self._ids))
        kk = min(k, len(positions))
        if len(positions) <= SUBSET_EXACT_MAX or self._built_kind() == "flat":
            raw, pos = self._exact_storage().search(queries, kk, params=faiss.SearchParameters(sel=selector))
            return self._finish(raw, pos, k)
        # Large subset: the approximate index, searched wider in proportion to how much is filtered out.
        widen = len(self._ids) / len(positions)
        ef = int(min(max(self.ef_search, k) * widen, MAX_FILTER_EF))
        nprobe = int(min(self.nprobe * widen, 4 * self.nprobe + 64))
        raw, pos = self._index.search(queries, kk, params=self._filter_params(selector, ef, nprobe))
        return self._finish(raw, pos, k)

    def _set_breadth(self, index: faiss.Index, ef: int, nprobe: int) -> None:
        kind = self._built_kind()
        if kind in ("hnsw", "hnsw-fp16"):
            index.hnsw.efSearch = ef
        elif kind == "hnsw-pca":
            index.k_factor = self.refine
            faiss.downcast_index(faiss.downcast_index(index.base_index).index).hnsw.efSearch = ef
        elif kind == "ivfpq":
            index.k_factor = self.refine
            faiss.extract_index_ivf(index.base_index).nprobe = nprobe

    def _filter_params(self, selector, ef: int, nprobe: int):
        kind = self._built_kind()
        if kind in ("hnsw", "hnsw-fp16"):
            return faiss.SearchParametersHNSW(sel=selector, efSearch=ef)
        if kind == "hnsw-pca":
            graph = faiss.SearchParametersHNSW(sel=selector, efSearch=ef)
            inner = faiss.SearchParametersPreTransform(sel=selector, index_params=graph)
            keep = (graph, inner)
        else:
            inner = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)
            keep = (inner,)
        params = faiss.IndexRefineSearchParameters(k_factor=self.refine, base_index_params=inner)
        params.sel = selector
        params._keep = keep  # swig: the inner parameter objects must outlive the outer ones
        return params

    def _finish(self, raw, pos, k):
        dist = raw_to_distance(raw, self.metric)
        ids = np.where(pos >= 0, self._ids[np.clip(pos, 0, None)], -1)
        dist = np.where(pos >= 0, dist, np.inf).astype(np.float32)
        if dist.shape[1] < k:  # fewer candidates than k: pad
            pad = k - dist.shape[1]
            dist = np.pad(dist, ((0, 0), (0, pad)), constant_values=np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        return dist, ids.astype(np.int64)

    # -- persistence ----------------------------------------------------------------------
    def params(self) -> dict:
        return {"kind": self.kind, "hnsw_m": self.hnsw_m, "ef_search": self.ef_search,
                "ef_construction": self.ef_construction, "nprobe": self.nprobe, "refine": self.refine,
                "pca_dim": self.pca_dim, "pq_dims": self.pq_dims}

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self._index is None:
            self._build(np.zeros((0, self.dim), np.float32))
        meta = {"backend": self.backend, "dim": self.dim, "metric": self.metric, **self.params(),
                "built_kind": self._built_kind(), "count": len(self._ids)}
        save_npy(path / "ids.npy", self._ids)
        with atomic_path(path / "index.faiss") as tmp:
            faiss.write_index(self._index, str(tmp))
        write_json(path / "meta.json", meta)

    @classmethod
    def load(cls, path: Path) -> "FaissIndex":
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        params = {key: meta[key] for key in ("kind", "hnsw_m", "ef_search", "ef_construction", "nprobe", "refine",
                                                    "pca_dim", "pq_dims")
                  if key in meta}
        self = cls(meta["dim"], meta["metric"], **params)
        self._ids = np.load(path / "ids.npy")
        self._index = faiss.read_index(str(path / "index.faiss"))
        if len(self._ids) != self._index.ntotal:
            raise ValueError(f"index at {path} holds {self._index.ntotal} vectors for {len(self._ids)} ids")
        return self

    def __len__(self) -> int:
        return len(self._ids)

    def describe(self) -> str:
        return f"faiss {self._built_kind() if self._index is not None else self.resolved_kind()} ({self.metric}, {len(self)} vectors)"


def _divisor(dim: int) -> int:
    """The most PQ sub-quantizers (<= dim/4) that divide ``dim``."""
    return next(m for m in range(max(dim // 4, 1), 0, -1) if dim % m == 0)


def _bitmap_selector(positions: np.ndarray, n: int) -> faiss.IDSelector:
    """A faiss selector accepting exactly ``positions`` (a bitmap: O(1) membership tests)."""
    mask = np.zeros(n, bool)
    mask[positions] = True
    bits = np.packbits(mask, bitorder="little")
    selector = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits))
    selector._bits = bits  # the selector points into this buffer: keep it alive
    return selector

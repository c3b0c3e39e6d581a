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
reduced        PCA (learned, ``pca_dim``) -> IVF (2·sqrt(n) lists)    pca_dim/4 + 2·pca_dim + 8
               over 4-bit fast-scan PQ codes of the reduced vectors,  + dim (8-bit codes) in RAM;
               refined on their float16 copies; the top ``rerank``·k  the full float32 vectors
               re-ranked on 8-bit codes of the full vectors (in RAM)  on disk (vectors.npy)
=============  ================================================  =========================

``auto`` (the default) picks ``flat`` below ``HNSW_THRESHOLD`` items, ``hnsw`` up to
``REDUCED_THRESHOLD`` and ``reduced`` from there: ~2.1 KB per 1525-d vector in RAM instead of
6.1 KB (the measured latency, recall and memory are in docs/scaling.md). The float32 vectors on
disk serve rebuilds and ``stored_vectors``; searches never read them (at 1M, re-ranking 200
memory-mapped rows per query cost 8 ms p50 on a busy box: page faults, readahead, eviction).
The PCA and the IVF/PQ codebooks of ``reduced`` are learned from the catalog's vectors when the
index is built, saved inside ``index.faiss`` (a faiss ``PCAMatrix`` in an ``IndexPreTransform``)
and refitted whenever the index has grown to twice the number of vectors it was fitted on.
``reduced`` with ``structure="hnsw"`` (the structure before the 1M measurement, and what indexes
saved then still load as) puts an HNSW graph over the float16 reduced vectors instead of the IVF:
faster to search at equal breadth, but at 1M its build alone exceeds the 5-minute budget on two
cores (docs/scaling.md).

Filtered search picks the cheaper of an exact scan over the allowed subset and the approximate
index searched through a selector, from a cost model the index calibrates on its own timings when
it is built (``filter_costs``: milliseconds of each path at a few selectivities).

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
import tempfile
import time
import uuid
import weakref
from pathlib import Path

import faiss
import numpy as np

from lookalike.data.artifacts import atomic_path, save_npy, write_json
from lookalike.index.base import IndexBackend
from lookalike.index.distances import exact_knn, faiss_metric, prepare, raw_to_distance

# Below this many vectors exact search answers a single query in a few milliseconds or less (1280-d,
# one core, ~1-3 us per vector on a busy 2-core box), so approximate search is not worth its recall
# loss. Measured with ``lookalike bench index`` (docs/scaling.md).
HNSW_THRESHOLD = int(os.environ.get("LOOKALIKE_HNSW_THRESHOLD", 5_000))
# From this size on, ``auto`` builds IVF-PQ: an HNSW graph over 1280-d vectors takes ~2 min per 100k
# to build on 2 cores and needs 5 KB per vector; IVF-PQ builds a million in minutes at half the memory.
# From this size on, ``auto`` builds ``reduced`` (PCA + IVF fast-scan + 8-bit codes in RAM, full
# vectors on disk): at 1M x 1525-d, IVF-PQ took 8.7 ms p50 and 3.4 GB, float32 HNSW ~9 min to build
# and 6.4 GB (issue #17); ``reduced``'s measured figures are in docs/scaling.md.
REDUCED_THRESHOLD = int(os.environ.get("LOOKALIKE_REDUCED_THRESHOLD",
                                       os.environ.get("LOOKALIKE_IVFPQ_THRESHOLD", 250_000)))
IVFPQ_THRESHOLD = REDUCED_THRESHOLD  # the former name of the large-catalog threshold
# Without a calibrated cost model (indexes saved before it existed, or filter_policy="threshold"):
# a filter matching at most this many items is searched exactly over the subset.
SUBSET_EXACT_MAX = int(os.environ.get("LOOKALIKE_SUBSET_EXACT_MAX", 3_000))
# Approximate filtered search never widens its breadth beyond this (then it is exact).
MAX_FILTER_EF = 4096
# Fewer queries than this are searched on one thread (see search()).
SMALL_BATCH = 8
# IVF-PQ needs enough vectors to train its codebooks (256 centroids per sub-quantizer).
IVFPQ_MIN = 2_000

KINDS = ("auto", "flat", "hnsw", "hnsw-fp16", "hnsw-pca", "ivfpq", "reduced")
REDUCED_STRUCTURES = ("ivf", "hnsw")
# Per-kind defaults of ``nprobe`` (inverted lists visited) and ``refine`` (the approximate stage
# returns refine x as many candidates as the next stage keeps), when not given: ``ivfpq`` refines
# 1525-d float16 vectors after 4-bit PQ codes; ``reduced`` visits ~3 % of its 2·sqrt(n) lists at 1M
# and refines 4x its rerank·k candidates on float16 PCA vectors (docs/scaling.md, measured at 1M).
DEFAULT_NPROBE = {"ivfpq": 32, "reduced": 64}
DEFAULT_REFINE = {"ivfpq": 32, "reduced": 4}
# k-means iterations of the IVF lists of ``reduced`` (faiss's default is 25: the coarse partition
# changes little after 10 and training dominates the build at 1M)
REDUCED_KMEANS_ITERATIONS = 10
# Selectivities (share of items allowed) at which build-time calibration times both filtered paths.
CALIBRATION_SHARES = (0.001, 0.01, 0.1, 0.5)
CALIBRATION_QUERIES = 5


class FaissIndex(IndexBackend):
    backend = "faiss"

    def __init__(self, dim: int, metric: str = "cosine", kind: str = "auto", hnsw_m: int = 32,
                 ef_search: int = 96, ef_construction: int = 80, nprobe: int | None = None,
                 refine: int | None = None, pca_dim: int = 256, pq_dims: int | None = None,
                 rerank: int = 30, structure: str = "ivf", filter_policy: str = "cost",
                 workdir: str | os.PathLike | None = None):
        """``nprobe`` / ``refine``: IVF lists visited and refinement factor (None: the kind's
        default, ``DEFAULT_NPROBE`` / ``DEFAULT_REFINE``);
        ``rerank``: ``reduced`` re-ranks the top rerank·k candidates on the full vectors;
        ``structure``: what ``reduced`` searches the reduced vectors with, "ivf" (IVF over 4-bit
        fast-scan PQ codes refined on float16 codes, the default) or "hnsw" (a float16 HNSW graph);
        ``filter_policy``: "cost" (the calibrated cost model) or "threshold" (exact below
        ``SUBSET_EXACT_MAX`` allowed items); ``workdir``: where ``reduced`` writes its full
        vectors before the index is saved (default: the system temporary directory; pass a
        folder on the same file system as the save path so saving is a rename)."""
        super().__init__(dim, metric)
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}")
        if filter_policy not in ("cost", "threshold"):
            raise ValueError("filter_policy must be 'cost' or 'threshold'")
        if structure not in REDUCED_STRUCTURES:
            raise ValueError(f"structure must be one of {', '.join(REDUCED_STRUCTURES)}")
        self.kind = kind
        self.hnsw_m, self.ef_search, self.ef_construction = hnsw_m, ef_search, ef_construction
        self.nprobe, self.refine, self.pca_dim, self.pq_dims = nprobe, refine, pca_dim, pq_dims
        self.rerank, self.structure, self.filter_policy = rerank, structure, filter_policy
        self.workdir = workdir
        self._ids = np.zeros(0, np.int64)
        self._order = None           # id -> position lookup (see _build_lookup), built lazily
        self._index: faiss.Index | None = None
        self._full: np.ndarray | None = None    # reduced: (n, dim) prepared float32, memory-mapped
        self._codes: np.ndarray | None = None   # reduced: (n, dim) uint8 codes of _full, in RAM
        self._code_scale: np.ndarray | None = None  # (2, dim) float32: value = lo + code·step
        self._full_path: Path | None = None
        self._spill = None                      # finalizer removing an unsaved full-vector file
        self._fitted_n = 0                      # vectors the learned parts were fitted on
        self.filter_costs: dict | None = None   # see calibrate_filters()
        self._mapped = False         # loaded memory-mapped (read-only): never appended to in place

    # -- choosing and building ------------------------------------------------------------
    def _prepare(self, vectors: np.ndarray) -> np.ndarray:
        return prepare(np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim), self.metric)

    def resolved_kind(self, n: int | None = None) -> str:
        n = len(self._ids) if n is None else n
        if self.kind != "auto":
            if self.metric == "l1" or (self.kind in ("ivfpq", "hnsw-pca", "reduced") and n < IVFPQ_MIN):
                return "flat"  # faiss graphs/PQ have no L1; PQ cannot be trained on a handful
            return self.kind
        if n < HNSW_THRESHOLD or self.metric == "l1":
            return "flat"
        return "hnsw" if n < REDUCED_THRESHOLD else "reduced"

    def _faiss_metric(self) -> int:
        return faiss_metric(self.metric)

    def _nprobe(self, kind: str | None = None) -> int:
        return self.nprobe if self.nprobe is not None else DEFAULT_NPROBE.get(kind or self._built_kind(), 32)

    def _refine(self, kind: str | None = None) -> int:
        return self.refine if self.refine is not None else DEFAULT_REFINE.get(kind or self._built_kind(), 32)

    def _new_index(self, kind: str, train: np.ndarray, n: int | None = None) -> faiss.Index:
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
        if kind == "reduced":
            # PCA is fitted on (centred) data, so the graph compares reduced vectors by L2 whatever the
            # metric: |P(q - x)|^2 ~ |q - x|^2 = 2 - 2 cos for unit vectors, while an inner product
            # of centred projections would carry a per-item bias. The true metric is applied in
            # the exact re-rank on the full vectors.
            d_out = min(self.pca_dim, self.dim)
            pca = faiss.PCAMatrix(self.dim, d_out)
            if self.structure == "hnsw":
                inner = faiss.IndexHNSWSQ(d_out, faiss.ScalarQuantizer.QT_fp16, self.hnsw_m, faiss_metric("l2"))
                # Half the construction breadth: the graph only proposes rerank·k candidates and the
                # exact re-rank recovers the recall, while building the graph dominates the build.
                inner.hnsw.efConstruction, inner.hnsw.efSearch = max(self.ef_construction // 2, 16), self.ef_search
            else:
                # IVF over 4-bit fast-scan PQ codes (2 reduced dims per code: pca_dim/4 bytes, scanned
                # with SIMD look-ups), its candidates refined on float16 reduced vectors. Built at 1M
                # in ~1/3 of an HNSW graph's time (k-means on a sample, then one assignment per vector).
                # ~2 sqrt(n) lists, at least 39 training vectors each (faiss's own minimum).
                nlist = int(np.clip(2 * np.sqrt(max(n or len(train), 1)), 4, max(len(train) // 39, 4)))
                codes = d_out // 2 if d_out % 2 == 0 else d_out
                inner = faiss.index_factory(d_out, f"IVF{nlist},PQ{codes}x4fs,Refine(SQfp16)", faiss_metric("l2"))
                ivf = faiss.extract_index_ivf(inner)
                ivf.cp.niter = REDUCED_KMEANS_ITERATIONS
                ivf.nprobe = self._nprobe("reduced")
            index = faiss.IndexPreTransform(pca, inner)
            self._parts = (pca, inner)  # swig: these Python objects own the C++ parts
            index.train(train)
            return index
        if kind == "hnsw-pca":
            # HNSW over PCA-reduced vectors (cheap to build and search), re-ranked on float16 originals.
            pca = faiss.PCAMatrix(self.dim, min(self.pca_dim, self.dim))
            graph = faiss.IndexHNSWFlat(pca.d_out, self.hnsw_m, metric)
            graph.hnsw.efConstruction, graph.hnsw.efSearch = self.ef_construction, self.ef_search
            base = faiss.IndexPreTransform(pca, graph)
            index = faiss.IndexRefine(base, faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_fp16, metric))
            index.k_factor = self._refine("hnsw-pca")
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
        index.k_factor = self._refine("ivfpq")
        sample = train[np.random.default_rng(0).choice(len(train), min(len(train), 50 * nlist), replace=False)]
        index.train(sample)
        faiss.extract_index_ivf(index.base_index).nprobe = self._nprobe("ivfpq")
        return index

    def _build(self, stored: np.ndarray, new: np.ndarray | None = None) -> None:
        """A fresh index over ``stored`` (already prepared) then ``new`` (raw, prepared in chunks
        so a million vectors never need a second full-size normalised copy)."""
        self._mapped = False
        new = np.zeros((0, self.dim), np.float32) if new is None else new
        n = len(stored) + len(new)
        kind = self.resolved_kind(n)
        learns = kind in ("ivfpq", "hnsw-pca", "reduced")  # only these learn from data
        limit = 200_000 if learns else 0
        sample = np.concatenate([stored[:limit], self._prepare(new[:max(0, limit - len(stored))])])
        if kind == "reduced":  # the PCA needs no more than 100k vectors (1525-d covariance); the IVF
            # lists ~50 training vectors each (2 sqrt(n) of them: up to 200k vectors from 10M items)
            keep = max(100_000, int(100 * np.sqrt(n)))
            sample = sample[np.random.default_rng(0).permutation(len(sample))[:keep]]
        self._index = self._new_index(kind, sample, n)
        self._codes = self._code_scale = None
        if kind == "reduced":  # 8-bit codes of the full vectors, per-dimension range of the sample
            lo, hi = sample.min(0), sample.max(0)
            margin = 0.05 * (hi - lo) + 1e-6  # later vectors may fall a little outside the sample
            self._code_scale = np.stack([lo - margin, (hi - lo + 2 * margin) / 255]).astype(np.float32)
            self._codes = np.empty((n, self.dim), np.uint8)
        del sample
        old_spill, self._spill = self._spill, None  # ``stored`` may still read the old full vectors
        self._set_full(self._new_full(n) if kind == "reduced" else None)
        self._filled = 0
        self._add_chunks(stored, prepared=True)
        self._add_chunks(new)
        if old_spill is not None:
            old_spill()
        self._fitted_n = n
        self.filter_costs = None

    def _add_chunks(self, vectors, prepared: bool = False, chunk: int = 65_536) -> None:
        for start in range(0, len(vectors), chunk):
            part = vectors[start:start + chunk]
            part = part if prepared else self._prepare(part)
            if self._full is not None:  # reduced: the full vectors go to disk, the graph gets PCA
                self._full[self._filled:self._filled + len(part)] = part
                self._codes[self._filled:self._filled + len(part)] = self._encode(part)
                self._filled += len(part)
            self._index.add(part)

    # -- the full vectors of ``reduced``: float32 on disk, 8-bit codes in RAM ----------------
    def _encode(self, vectors: np.ndarray) -> np.ndarray:
        """8-bit scalar quantisation (per dimension, uniform over the training range) of prepared
        ``vectors``: (m, dim) uint8."""
        lo, step = self._code_scale
        return np.clip(np.rint((vectors - lo) / step), 0, 255).astype(np.uint8)

    def _decode(self, positions: np.ndarray) -> np.ndarray:
        """(m, dim) float32 approximations of the full vectors at ``positions`` (error <= step/2
        per dimension), from the codes in RAM; the float32 rows (disk) for indexes without codes."""
        if self._codes is None:
            return np.asarray(self._full[positions], np.float32)
        lo, step = self._code_scale
        return self._codes[positions].astype(np.float32) * step + lo

    def _new_full(self, n: int) -> np.ndarray:
        """An (n, dim) float32 ``.npy`` memmap in ``workdir``, removed unless ``save`` keeps it."""
        folder = Path(self.workdir) if self.workdir is not None else Path(tempfile.gettempdir())
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f".full-{uuid.uuid4().hex}.npy"
        full = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, self.dim))
        self._full_path = path
        self._spill = weakref.finalize(self, _unlink, str(path))
        return full

    def _set_full(self, full: np.ndarray | None) -> None:
        if full is None:
            self._full, self._full_path = None, None
            self._codes = self._code_scale = None
            if self._spill is not None:
                self._spill()
                self._spill = None
        else:
            self._full = full

    def _extend_full(self, vectors: np.ndarray) -> None:
        """Append prepared ``vectors`` to the full vectors (a new file: the old one may be mapped)."""
        old, old_spill = self._full, self._spill
        self._spill = None
        full = self._new_full(len(old) + len(vectors))
        for start in range(0, len(old), 65_536):
            stop = min(start + 65_536, len(old))
            full[start:stop] = old[start:stop]
        full[len(old):] = vectors
        self._full = full
        if old_spill is not None:
            old_spill()

    def _rerank(self, queries: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw scores (faiss conventions: inner product for cosine, squared L2) of each query's
        candidate positions on the full vectors, decoded from their 8-bit codes in RAM (within
        ~1e-3 of the float32 scores at 1525-d; float32 from disk for indexes saved without codes:
        at 1M, reading 200 rows per query from a memory-mapped file took 8 ms p50 on a busy box,
        docs/scaling.md); the best k per query, padded with -1."""
        nq = len(queries)
        higher = self._faiss_metric() == faiss_metric("ip")
        raw = np.full((nq, k), -np.inf if higher else np.inf, np.float32)
        pos = np.full((nq, k), -1, np.int64)
        for i in range(nq):
            cand = np.unique(candidates[i][candidates[i] >= 0])  # sorted: sequential reads on disk
            if len(cand) == 0:
                continue
            vectors = self._decode(cand)
            if higher:
                score = vectors @ queries[i]
                order = np.argsort(-score, kind="stable")[:k]
            else:
                score = ((vectors - queries[i]) ** 2).sum(1)
                order = np.argsort(score, kind="stable")[:k]
            raw[i, :len(order)], pos[i, :len(order)] = score[order], cand[order]
        return raw, pos

    def _candidates(self, k: int) -> int:
        return min(len(self._ids), max(k * self.rerank, k))

    def _built_kind(self) -> str:
        if isinstance(self._index, faiss.IndexPreTransform):
            return "reduced"
        if isinstance(self._index, faiss.IndexRefine):
            base = faiss.downcast_index(self._index.base_index)
            return "hnsw-pca" if isinstance(base, faiss.IndexPreTransform) else "ivfpq"
        if isinstance(self._index, faiss.IndexHNSW):
            return "hnsw-fp16" if isinstance(self._index, faiss.IndexHNSWSQ) else "hnsw"
        return "flat"

    def nested_top_k(self, k: int) -> bool:
        """Whether an unfiltered search's top j is the first j rows of its top ``k`` for every
        j <= k (the breadth of the search does not depend on j): exact search, and HNSW while
        ``k <= ef_search`` (one candidate beam of ``max(efSearch, k)``). IVF-PQ and ``reduced``
        re-rank a candidate count that grows with k, so a deeper search may find better hits."""
        kind = self._built_kind()
        return kind == "flat" or (kind in ("hnsw", "hnsw-fp16") and k <= self.ef_search)

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
        total = len(self._ids) - len(replaced) + len(ids)
        refit = target_kind == "reduced" and total > 2 * self._fitted_n  # the PCA is refitted as data grows
        if self._index is None or len(replaced) or target_kind != self._built_kind() or refit or self._mapped:
            keep = np.setdiff1d(np.arange(len(self._ids)), replaced)
            old = self._stored_rows(keep)
            self._ids = np.concatenate([self._ids[keep], ids])
            self._build(old, vectors)
        else:  # the common case: append to the index as built
            self._ids = np.concatenate([self._ids, ids])
            if self._full is not None:
                prepared = self._prepare(vectors)
                self._extend_full(prepared)
                if self._codes is not None:
                    self._codes = np.concatenate([self._codes, self._encode(prepared)])
                self._index.add(prepared)
                self._filled = len(self._full)
            else:
                self._add_chunks(vectors)
            self.filter_costs = None
        self._order = None
        self.calibrate_filters()

    def remove(self, ids: np.ndarray) -> int:
        gone = self._positions(np.asarray(ids, dtype=np.int64).ravel())
        if len(gone):
            keep = np.setdiff1d(np.arange(len(self._ids)), gone)
            vectors = self._stored_rows(keep)
            self._ids = self._ids[keep]
            self._order = None
            self._build(vectors)  # stored vectors are already prepared
            self.calibrate_filters()
        return int(len(gone))

    def _stored_rows(self, positions: np.ndarray):
        """The stored vectors at ``positions``: read lazily, a chunk at a time, from the memory-
        mapped full vectors of ``reduced`` (a rebuild never loads a million of them at once)."""
        if self._full is not None:
            return _Rows(self._full, positions)
        return self.stored_vectors(positions)

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
        if self._full is not None:
            return np.asarray(self._full[positions], np.float32)
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
            if self._full is not None:  # reduced: graph candidates, re-ranked exactly
                cand = self._candidates(k)
                self._set_breadth(self._index, max(self.ef_search, cand), self._nprobe())
                _, pos = self._index.search(queries, cand)
                return self._finish(*self._rerank(queries, pos, k), k)
            self._set_breadth(self._index, max(self.ef_search, k), self._nprobe())
            raw, pos = self._index.search(queries, min(k, len(self._ids)))
            return self._finish(raw, pos, k)
        positions = self._positions(np.asarray(allowed_ids, dtype=np.int64).ravel())
        if len(positions) == 0:
            return empty
        if self._built_kind() == "flat" or self.prefers_exact(len(positions)):
            return self._finish(*self._exact_subset(queries, k, positions), k)
        return self._finish(*self._filtered_ann(queries, k, positions), k)

    def prefers_exact(self, allowed: int) -> bool:
        """Whether a filter allowing ``allowed`` items is answered faster by an exact scan of the
        subset than by the approximate index through a selector: the calibrated cost model
        (``filter_costs``, log-log interpolation between the measured selectivities) when there is
        one, else ``allowed <= SUBSET_EXACT_MAX``."""
        costs = self.filter_costs
        if self.filter_policy == "threshold" or not costs or not costs.get("shares"):
            return allowed <= SUBSET_EXACT_MAX
        share = np.log(max(allowed, 1) / max(len(self._ids), 1))
        shares = np.log(costs["shares"])
        exact = np.interp(share, shares, np.log(costs["exact_ms"]))
        ann = np.interp(share, shares, np.log(costs["ann_ms"]))
        return bool(exact <= ann)  # a tie goes to the exact answer

    def _exact_subset(self, queries: np.ndarray, k: int, positions: np.ndarray):
        """Exact search over the allowed positions. ``reduced``: a scan of the subset's reduced
        vectors, its top rerank·k re-ranked on the full ones' 8-bit codes (all of them when that
        many or fewer are allowed)."""
        selector = _bitmap_selector(positions, len(self._ids))
        if self._full is None:
            kk = min(k, len(positions))
            return self._exact_storage().search(queries, kk, params=faiss.SearchParameters(sel=selector))
        cand = min(self._candidates(k), len(positions))
        if cand >= len(positions):
            return self._rerank(queries, np.broadcast_to(positions, (len(queries), len(positions))), k)
        pca, inner = self._reduced_parts()
        reduced = pca.apply(queries)
        # Only the allowed items' float16 reduced vectors (a view of the codes: QT_fp16 stores IEEE
        # halves), in chunks: at 1M a selector scan over every code took 12 ms for 995 allowed items.
        storage = faiss.downcast_index(inner.storage if isinstance(inner, faiss.IndexHNSW) else inner.refine_index)
        halves = np.frombuffer(faiss.rev_swig_ptr(storage.codes.data(), storage.ntotal * storage.code_size),
                               np.float16).reshape(storage.ntotal, -1)
        found_d, found_p = [], []
        for start in range(0, len(positions), 65_536):
            part = positions[start:start + 65_536]
            dist, local = exact_knn(reduced, halves[part].astype(np.float32), min(cand, len(part)), "l2")
            found_d.append(dist)
            found_p.append(np.where(local >= 0, part[np.clip(local, 0, None)], -1))
        dist, pos = np.concatenate(found_d, 1), np.concatenate(found_p, 1)
        best = np.argsort(dist, axis=1, kind="stable")[:, :cand]
        return self._rerank(queries, np.take_along_axis(pos, best, 1), k)

    def _filtered_ann(self, queries: np.ndarray, k: int, positions: np.ndarray):
        """The approximate index through a selector, searched wider in proportion to how much is
        filtered out."""
        selector = _bitmap_selector(positions, len(self._ids))
        kk = min(k, len(positions))
        widen = len(self._ids) / len(positions)
        ef = int(min(max(self.ef_search, k) * widen, MAX_FILTER_EF))
        nprobe = int(min(self._nprobe() * widen, 4 * self._nprobe() + 64))
        if self._full is not None:
            cand = min(self._candidates(k), len(positions))
            inner = self._reduced_parts()[1]
            if isinstance(inner, faiss.IndexHNSW):
                inner_params = faiss.SearchParametersHNSW(sel=selector, efSearch=max(ef, cand))
                keep = (inner_params,)
            else:
                ivf_params = faiss.SearchParametersIVF(sel=selector, nprobe=min(nprobe, faiss.extract_index_ivf(inner).nlist))
                inner_params = faiss.IndexRefineSearchParameters(k_factor=self._refine(), base_index_params=ivf_params)
                inner_params.sel = selector
                keep = (ivf_params, inner_params)
            params = faiss.SearchParametersPreTransform(index_params=inner_params)
            params.sel = selector
            params._keep = keep  # swig: the inner parameters must outlive the outer ones
            _, pos = self._index.search(queries, cand, params=params)
            return self._rerank(queries, pos, k)
        return self._index.search(queries, kk, params=self._filter_params(selector, ef, nprobe))

    def _reduced_parts(self):
        """(the PCA, the index over reduced vectors: an ``IndexRefine`` over the IVF, or the HNSW
        graph of indexes built with ``structure="hnsw"``)."""
        index = self._index
        pca = faiss.downcast_VectorTransform(index.chain.at(0))
        return pca, faiss.downcast_index(index.index)

    def calibrate_filters(self, queries: int = CALIBRATION_QUERIES, seed: int = 0) -> dict | None:
        """Time both filtered paths (exact subset scan, approximate index with a selector) on this
        index, single queries on one thread, at ``CALIBRATION_SHARES`` of the items allowed (random
        subsets; queries: stored vectors); the medians in ms become ``filter_costs``, which
        :meth:`prefers_exact` interpolates. Approximate kinds of at least ``HNSW_THRESHOLD`` items
        only (flat is always exact). Returns the costs (None when not calibrated)."""
        n = len(self._ids)
        if self._index is None or self._built_kind() == "flat" or n < HNSW_THRESHOLD:
            self.filter_costs = None
            return None
        rng = np.random.default_rng(seed)
        probe = self.stored_vectors(np.sort(rng.choice(n, min(queries, n), replace=False)))
        shares, exact_ms, ann_ms = [], [], []
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            for share in CALIBRATION_SHARES:
                m = int(round(share * n))
                if m < 10:
                    continue
                positions = np.sort(rng.choice(n, m, replace=False))
                timings = []
                for path in (self._exact_subset, self._filtered_ann):
                    path(probe[:1], 10, positions)  # warm
                    times = []
                    for q in probe:
                        start = time.perf_counter()
                        path(q[None], 10, positions)
                        times.append((time.perf_counter() - start) * 1000)
                    timings.append(max(float(np.median(times)), 1e-3))
                shares.append(share)
                exact_ms.append(timings[0])
                ann_ms.append(timings[1])
        finally:
            faiss.omp_set_num_threads(threads)
        self.filter_costs = {"n": n, "shares": shares, "exact_ms": exact_ms, "ann_ms": ann_ms} if shares else None
        return self.filter_costs

    def _set_breadth(self, index: faiss.Index, ef: int, nprobe: int) -> None:
        kind = self._built_kind()
        if kind == "reduced":
            inner = self._reduced_parts()[1]
            if isinstance(inner, faiss.IndexHNSW):
                inner.hnsw.efSearch = ef
            else:
                inner.k_factor = self._refine()
                faiss.extract_index_ivf(inner).nprobe = nprobe
        elif kind in ("hnsw", "hnsw-fp16"):
            index.hnsw.efSearch = ef
        elif kind == "hnsw-pca":
            index.k_factor = self._refine()
            faiss.downcast_index(faiss.downcast_index(index.base_index).index).hnsw.efSearch = ef
        elif kind == "ivfpq":
            index.k_factor = self._refine()
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
        params = faiss.IndexRefineSearchParameters(k_factor=self._refine(), base_index_params=inner)
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
                "pca_dim": self.pca_dim, "pq_dims": self.pq_dims, "rerank": self.rerank,
                "structure": self.structure, "filter_policy": self.filter_policy}

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self._index is None:
            self._build(np.zeros((0, self.dim), np.float32))
        meta = {"backend": self.backend, "dim": self.dim, "metric": self.metric, **self.params(),
                "built_kind": self._built_kind(), "count": len(self._ids), "fitted_n": self._fitted_n,
                "filter_costs": self.filter_costs}
        save_npy(path / "ids.npy", self._ids)
        if self._full is not None:
            self._save_full(path / "vectors.npy")
        if self._codes is not None:
            save_npy(path / "codes.npy", np.asarray(self._codes))
            save_npy(path / "code_scale.npy", self._code_scale)
        with atomic_path(path / "index.faiss") as tmp:
            faiss.write_index(self._index, str(tmp))
        write_json(path / "meta.json", meta)

    def _save_full(self, target: Path) -> None:
        """The full vectors as ``target``: a rename of the unsaved file (same file system), else a
        chunked copy; the index then maps ``target``."""
        if self._full_path is not None and target.exists() and os.path.samefile(self._full_path, target):
            return
        if isinstance(self._full, np.memmap):
            self._full.flush()
        if self._spill is not None:
            try:
                os.replace(self._full_path, target)
                self._spill.detach()
                self._spill = None
                self._full_path = target
                self._full = np.load(target, mmap_mode="r")
                return
            except OSError:  # another file system: copy below
                pass
        with atomic_path(target) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=self._full.shape)
            for start in range(0, len(self._full), 65_536):
                out[start:start + 65_536] = self._full[start:start + 65_536]
            out.flush()
            del out

    #: ``load(path, mmap=True)`` maps the stored vectors instead of reading them (see load)
    mappable = True

    @classmethod
    def load(cls, path: Path, mmap: bool = False) -> "FaissIndex":
        """The index saved at ``path``. ``mmap``: the vectors (flat, HNSW storage, float16 refine
        codes) are memory-mapped read-only (faiss ``IO_FLAG_MMAP_IFC``): loading costs no copy and
        API worker processes share one copy in the page cache; a later ``add`` rebuilds in memory."""
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        params = {key: meta[key] for key in ("kind", "hnsw_m", "ef_search", "ef_construction", "nprobe", "refine",
                                                    "pca_dim", "pq_dims", "rerank", "structure", "filter_policy")
                  if key in meta}
        self = cls(meta["dim"], meta["metric"], workdir=path.parent, **params)
        self._ids = np.load(path / "ids.npy")
        flag = getattr(faiss, "IO_FLAG_MMAP_IFC", 0) if mmap else 0
        try:
            self._index = faiss.read_index(str(path / "index.faiss"), flag)
        except RuntimeError:  # an index kind faiss cannot map: read it
            flag, self._index = 0, faiss.read_index(str(path / "index.faiss"))
        self._mapped = bool(flag)
        if len(self._ids) != self._index.ntotal:
            raise ValueError(f"index at {path} holds {self._index.ntotal} vectors for {len(self._ids)} ids")
        if self._built_kind() == "reduced":
            self._full = np.load(path / "vectors.npy", mmap_mode="r")  # stays on disk, paged in on use
            self._full_path = path / "vectors.npy"
            if self._full.shape != (len(self._ids), self.dim):
                raise ValueError(f"index at {path} holds full vectors of shape {self._full.shape}")
            if (path / "codes.npy").exists():  # re-ranking reads these, in RAM (or shared, mapped)
                self._codes = np.load(path / "codes.npy", mmap_mode="r" if mmap else None)
                self._code_scale = np.load(path / "code_scale.npy")
                if self._codes.shape != self._full.shape:
                    raise ValueError(f"index at {path} holds codes of shape {self._codes.shape}")
        self._fitted_n = int(meta.get("fitted_n", len(self._ids)))
        self.filter_costs = meta.get("filter_costs")
        return self

    def __len__(self) -> int:
        return len(self._ids)

    def describe(self) -> str:
        kind = self._built_kind() if self._index is not None else self.resolved_kind()
        extra = ""
        if kind == "reduced" and self._index is not None:
            pca, inner = self._reduced_parts()
            extra = f", PCA {pca.d_out}-d, " + ("HNSW" if isinstance(inner, faiss.IndexHNSW)
                                                else f"IVF{faiss.extract_index_ivf(inner).nlist}")
        return f"faiss {kind} ({self.metric}, {len(self)} vectors{extra})"


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


class _Rows:
    """Rows of a (memory-mapped) matrix at ``positions``, read a slice at a time."""

    def __init__(self, matrix: np.ndarray, positions: np.ndarray):
        self.matrix, self.positions = matrix, np.asarray(positions, np.int64)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, part: slice) -> np.ndarray:
        return np.asarray(self.matrix[self.positions[part]], np.float32)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass

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
reduced        PCA (learned, ``pca_dim``) -> IVF (2·sqrt(n) lists    pca_dim/4 + 2·pca_dim + 8
               assigned by the first ``coarse_dim`` PCA dimensions)   + dim (8-bit codes) in RAM;
               over 4-bit fast-scan PQ codes of the reduced vectors,  the full float32 vectors
               refined on their float16 copies; the top ``rerank``·k  on disk (vectors.npy)
               re-ranked on 8-bit codes of the full vectors (in RAM),
               their top ``exact_rerank``·k exactly on the float32
               vectors read from disk
=============  ================================================  =========================

``auto`` (the default) picks ``flat`` below ``HNSW_THRESHOLD`` items, ``hnsw`` up to
``REDUCED_THRESHOLD`` and ``reduced`` from there: ~2.1 KB per 1525-d vector in RAM instead of
6.1 KB (the measured latency, recall and memory are in docs/scaling.md). The float32 vectors on
disk serve rebuilds, ``stored_vectors`` and the last, exact re-rank: searches read only the codes'
best ``exact_rerank``·k rows (2·k by default), one ``pread`` each, so they pass through the OS page
cache without becoming the process's resident memory (memory-mapped, re-ranking 200 rows per query
at 1M cost 8 ms p50 and made the process resident 3.5 GB: fault-around, readahead).
The PCA and the IVF/PQ codebooks of ``reduced`` are learned from the catalog's vectors when the
index is built, saved inside ``index.faiss`` (a faiss ``PCAMatrix`` in an ``IndexPreTransform``)
and refitted whenever the index has grown to twice the number of vectors it was fitted on.
``reduced`` with ``codes="residual"`` codes the PCA residual x - PCA^-1(PCA x) instead of the whole
vector and re-ranks on the float16 PCA distance plus the residual's (more precise, slower: the
re-rank runs outside faiss; measured in docs/scaling.md).
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
import threading
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
# Fewer queries than this are searched on one thread (see search()), or ``reduced`` on ``threads``.
SMALL_BATCH = 8
# OpenMP threads one ``reduced`` search of fewer than SMALL_BATCH queries may use (FaissIndex
# ``threads``; $LOOKALIKE_SEARCH_THREADS; never more than the process's OpenMP pool, which
# ``lookalike serve --workers N`` sizes to the worker's share of the cores, so serving that already
# fills the cores with concurrent requests does not oversubscribe them). Measured at 1M on 2 cores:
# docs/scaling.md.
SEARCH_THREADS = int(os.environ.get("LOOKALIKE_SEARCH_THREADS", 1))
# IVF-PQ needs enough vectors to train its codebooks (256 centroids per sub-quantizer).
IVFPQ_MIN = 2_000

KINDS = ("auto", "flat", "hnsw", "hnsw-fp16", "hnsw-pca", "ivfpq", "reduced")
REDUCED_STRUCTURES = ("ivf", "hnsw")
# What the 8-bit re-rank codes of ``reduced`` hold: "full", the whole vector (the default: scored
# inside faiss in the same search call), or "residual", the part of each vector its PCA drops,
# scored with the float16 PCA distance (+1 point of recall@10 at the same candidate count at 1M,
# but the re-rank runs outside faiss: +0.7-1 ms per query; docs/scaling.md). Indexes saved without
# the setting load as "full".
REDUCED_CODES = ("full", "residual")
# Per-kind defaults of ``nprobe`` (inverted lists visited) and ``refine`` (the approximate stage
# returns refine x as many candidates as the next stage keeps), when not given: ``ivfpq`` refines
# 1525-d float16 vectors after 4-bit PQ codes; ``reduced`` visits ~2.4 % of its 2·sqrt(n) lists at
# 1M and refines 2x its rerank·k candidates on float16 PCA vectors (docs/scaling.md, measured at 1M:
# 4x gained 0.006 recall@10 for ~0.4 ms more per query; with the exact re-rank from disk, nprobe 48
# and 25·k candidates hold 0.966 of the true top-10, nprobe 64 and 30·k 0.978).
DEFAULT_NPROBE = {"ivfpq": 32, "reduced": 48}
DEFAULT_REFINE = {"ivfpq": 32, "reduced": 2}
# Candidates per result ``reduced`` re-ranks on its 8-bit codes, by what the codes hold (measured at
# 1M, docs/scaling.md: full 30 -> recall@10 0.959 as the final ranking, 0.978 under the exact
# re-rank from disk, 25 -> 0.966 at nprobe 48; residual 30 at nprobe 48 -> 0.969, 20 -> 0.95)
DEFAULT_RERANK = {"full": 25, "residual": 30}
# Candidates per result ``reduced`` re-ranks exactly, on the float32 full vectors read from disk
# (``vectors.npy``, one ``pread`` per row: the page cache, not the process, holds them), after the
# 8-bit codes have ranked their rerank·k: the codes' top 2·k hold the true top-k as often as their
# top 3·k at 1M (docs/scaling.md), and each row costs ~5 us. 0: the codes' ranking is final.
DEFAULT_EXACT_RERANK = 2
# Leading PCA dimensions the coarse quantizer of ``reduced`` assigns lists by (faiss
# ``RemapDimensionsTransform`` in front of a flat quantizer; the k-means runs in that subspace).
# The PCA orders dimensions by variance, so the first 64 carry the partition; at 1M the 2,000
# centroids shrink from 2 MB to 0.5 MB, read once per query from DRAM: coarse step 0.28 -> ~0.07 ms,
# p50 -0.2 ms at the same recall@10 (0.964 vs 0.9655; docs/scaling.md, session 9).
COARSE_DIMS = 64
# k-means iterations of the IVF lists of ``reduced`` (faiss's default is 25: the coarse partition
# changes little after 10 and training dominates the build at 1M)
REDUCED_KMEANS_ITERATIONS = 10
# Selectivities (share of items allowed) at which build-time calibration times both filtered paths.
CALIBRATION_SHARES = (0.001, 0.01, 0.1, 0.5)
CALIBRATION_QUERIES = 5
# ``reduced`` re-ranks given candidates (filtered search) decoding this many rows at a time
# (128 x 1536 float32 = 790 KB of temporaries instead of 1.8 MB for 300 rows)
RERANK_CHUNK = 128
# Width multiple of the 8-bit codes (see _sq8)
CODE_ALIGN = 16


class FaissIndex(IndexBackend):
    backend = "faiss"

    def __init__(self, dim: int, metric: str = "cosine", kind: str = "auto", hnsw_m: int = 32,
                 ef_search: int = 96, ef_construction: int = 80, nprobe: int | None = None,
                 refine: int | None = None, pca_dim: int = 256, pq_dims: int | None = None,
                 rerank: int | None = None, structure: str = "ivf", filter_policy: str = "cost",
                 codes: str = "full", exact_rerank: int | None = None, threads: int | None = None,
                 workdir: str | os.PathLike | None = None, coarse_dim: int | None = None):
        """``nprobe`` / ``refine``: IVF lists visited and refinement factor (None: the kind's
        default, ``DEFAULT_NPROBE`` / ``DEFAULT_REFINE``);
        ``rerank``: ``reduced`` re-ranks the top rerank·k candidates on the full vectors (None:
        ``DEFAULT_RERANK`` of its ``codes``);
        ``structure``: what ``reduced`` searches the reduced vectors with, "ivf" (IVF over 4-bit
        fast-scan PQ codes refined on float16 codes, the default) or "hnsw" (a float16 HNSW graph);
        ``filter_policy``: "cost" (the calibrated cost model) or "threshold" (exact below
        ``SUBSET_EXACT_MAX`` allowed items); ``codes``: what the 8-bit re-rank codes of
        ``reduced`` hold, "full" (the whole vector, the default) or "residual" (what its PCA
        drops; the re-rank distance is the float16 PCA distance plus the residual's: more
        precise, slower, see ``REDUCED_CODES``); ``exact_rerank``: ``reduced`` re-ranks the codes'
        top exact_rerank·k exactly on the float32 vectors it keeps on disk (None:
        ``DEFAULT_EXACT_RERANK``; 0: none, the codes' ranking is final); ``threads``: OpenMP threads
        one ``reduced`` search of a few queries uses (None: ``SEARCH_THREADS``; capped by the
        process's OpenMP pool; a search setting, not saved with the index); ``workdir``: where ``reduced`` writes its full
        vectors before the index is saved (default: the system temporary directory; pass a
        folder on the same file system as the save path so saving is a rename); ``coarse_dim``:
        the leading PCA dimensions ``reduced``'s IVF assigns its lists by (None: ``COARSE_DIMS``;
        the PCA's dimension or more: all of them; saved with the index)."""
        super().__init__(dim, metric)
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}")
        if filter_policy not in ("cost", "threshold"):
            raise ValueError("filter_policy must be 'cost' or 'threshold'")
        if structure not in REDUCED_STRUCTURES:
            raise ValueError(f"structure must be one of {', '.join(REDUCED_STRUCTURES)}")
        if codes not in REDUCED_CODES:
            raise ValueError(f"codes must be one of {', '.join(REDUCED_CODES)}")
        self.kind = kind
        self.hnsw_m, self.ef_search, self.ef_construction = hnsw_m, ef_search, ef_construction
        self.nprobe, self.refine, self.pca_dim, self.pq_dims = nprobe, refine, pca_dim, pq_dims
        self.rerank, self.structure, self.filter_policy, self.codes = rerank, structure, filter_policy, codes
        if exact_rerank is not None and exact_rerank < 0:
            raise ValueError("exact_rerank must be >= 0")
        self.exact_rerank = exact_rerank
        if coarse_dim is not None and coarse_dim < 1:
            raise ValueError("coarse_dim must be >= 1")
        self.coarse_dim = coarse_dim
        if threads is not None and threads < 1:
            raise ValueError("threads must be >= 1")
        self.threads = threads
        self.workdir = workdir
        self._ids = np.zeros(0, np.int64)
        self._order = None           # id -> position lookup (see _build_lookup), built lazily
        self._index = None
        self._full: np.ndarray | None = None    # reduced: (n, dim) prepared float32, memory-mapped
        self._full_path: Path | None = None
        self._spill = None                      # finalizer removing an unsaved full-vector file
        self._fitted_n = 0                      # vectors the learned parts were fitted on
        self.filter_costs: dict | None = None   # see calibrate_filters()
        self._mapped = False         # loaded memory-mapped (read-only): never appended to in place
        self._buffers = threading.local()   # per-thread scratch rows of the re-ranks
        self._reader: _Reader | None = None   # the full vectors' file, read by _read_full
        self._reader_lock = threading.Lock()

    @property
    def _index(self) -> faiss.Index | None:
        """The faiss index; replacing it drops what was memoised about the previous one."""
        return self._faiss

    @_index.setter
    def _index(self, index: faiss.Index | None) -> None:
        self._faiss = index
        self._kind_memo: str | None = None   # see _built_kind
        self._params_memo: dict = {}         # unfiltered search parameters of reduced, see _reduced_params

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
                quantizer = _coarse_quantizer(d_out, self.coarse_dim or COARSE_DIMS)
                ivf = faiss.IndexIVFPQFastScan(quantizer, d_out, nlist, codes, 4, faiss_metric("l2"))
                ivf.by_residual = False  # lists only partition; codes of the vectors themselves
                ivf.cp.niter = REDUCED_KMEANS_ITERATIONS
                ivf.nprobe = self._nprobe("reduced")
                fp16 = faiss.IndexScalarQuantizer(d_out, faiss.ScalarQuantizer.QT_fp16, faiss_metric("l2"))
                inner = faiss.IndexRefine(ivf, fp16)
                self._coarse = (quantizer, ivf, fp16)   # swig: Python owns these parts until a save/load
            index = faiss.IndexPreTransform(pca, inner)
            index.train(train)
            # The re-rank: 8-bit codes (per-dimension range of the sample, a margin for later
            # vectors) of the residual x - PCA^-1(PCA x) (codes="residual"): the PCA space and its
            # complement are orthogonal, so |q - x|^2 = |P(q - x)|^2 + |r_q - r_x|^2, the first term
            # from the float16 PCA vectors, the second from these codes. The residual holds ~16 % of
            # the variance of 1525-d embeddings at PCA-256, so its 8-bit codes carry 8x less squared
            # error than codes of the whole vector (docs/scaling.md). codes="full": the whole
            # vector, scored by faiss inside the same search call.
            lo, hi = _column_range(train, pca if self.codes == "residual" else None)
            margin = 0.05 * (hi - lo) + 1e-6
            codes = _sq8(self.dim, lo - margin, (hi - lo + 2 * margin) / 255)
            refined = faiss.IndexRefine(index, codes)
            refined.k_factor = float(self._rerank_factor())
            self._parts = (pca, inner, index, codes)  # swig: these Python objects own the C++ parts
            return refined
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
            if self._full is not None:  # reduced: the full vectors go to disk, the index gets
                # their PCA projection and their 8-bit codes
                self._full[self._filled:self._filled + len(part)] = part
                self._filled += len(part)
            self._index_add(part)

    def _index_add(self, prepared: np.ndarray) -> None:
        """Add ``prepared`` vectors to the faiss index; ``reduced`` with residual codes: their PCA
        projections to the index over reduced vectors, their residuals to the 8-bit codes."""
        if not self._residual_codes():
            self._index.add(prepared)
            return
        self._index.base_index.add(prepared)
        self._index.refine_index.add(_residual(prepared, self._reduced_parts()[0]))
        self._index.ntotal = self._index.refine_index.ntotal

    def _residual_codes(self) -> bool:
        """Whether this is a ``reduced`` index whose 8-bit codes hold residuals."""
        return self.codes == "residual" and self._full is not None and self._built_kind() == "reduced"

    # -- the full vectors of ``reduced``: float32 on disk, 8-bit codes in RAM ----------------
    def _sq(self) -> faiss.IndexScalarQuantizer | None:
        """``reduced``: the 8-bit codes of the full vectors (the re-rank stage of ``_index``,
        padded to a multiple of ``CODE_ALIGN`` dimensions, see :func:`_sq8`)."""
        if self._full is None or not isinstance(self._index, faiss.IndexRefine):
            return None
        return _unpadded(self._index.refine_index)

    def _decode(self, positions: np.ndarray) -> np.ndarray:
        """(m, dim) float32 approximations of the full vectors at ``positions``, decoded by faiss
        from the codes in RAM: the 8-bit codes of the vectors (error <= half a quantisation step
        per dimension), or, with residual codes, the float16 PCA vectors mapped back plus the
        8-bit codes of their residuals."""
        sq = self._sq()
        decoded = sq.sa_decode(_code_rows(sq)[positions])[:, :self.dim]
        if self._residual_codes():
            pca, inner = self._reduced_parts()
            storage = _reduced_storage(inner)
            decoded += pca.reverse_transform(storage.sa_decode(_code_rows(storage)[positions]))
        return decoded

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

    def _rerank(self, queries: np.ndarray, candidates: np.ndarray, k: int, reduced: np.ndarray | None = None,
                pca_l2: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The best k of each query's candidate positions ((nq, m) int64, -1 for none), scored on
        the 8-bit codes in RAM as the unfiltered search scores them (squared L2, see
        :meth:`_from_l2`): (raw scores in faiss conventions, positions), padded with -1.

        Full codes: |q - x~|^2 to the decoded vector. Residual codes: |Pq - Px~|^2 on the float16
        PCA vectors (``pca_l2``, aligned with ``candidates``, when the caller has it; ``reduced``
        = the queries' PCA projections) plus |r_q - r~_x|^2 on the decoded residuals. Rows are
        decoded by faiss ``RERANK_CHUNK`` at a time into a per-thread buffer: fresh float32
        temporaries of 300 x 1536 cost milliseconds in page faults at 1M."""
        nq = len(queries)
        l2 = np.full((nq, k), np.inf, np.float32)
        pos = np.full((nq, k), -1, np.int64)
        sq = self._sq()
        codes = _code_rows(sq)
        residual = self._residual_codes()
        if residual:
            pca, inner = self._reduced_parts()
            reduced = pca.apply(queries) if reduced is None else reduced
            targets = queries - pca.reverse_transform(reduced)   # the queries' residuals
            storage = _reduced_storage(inner)
        else:
            targets = queries
        padded = np.zeros((nq, sq.d), np.float32)   # the padding dimensions decode to exactly 0
        padded[:, :self.dim] = targets
        buffer = self._scratch(sq.d)
        for i in range(nq):
            keep = candidates[i] >= 0
            cand = candidates[i][keep]
            if len(cand) == 0:
                continue
            score = np.empty(len(cand), np.float32)
            for start in range(0, len(cand), RERANK_CHUNK):
                part = cand[start:start + RERANK_CHUNK]
                rows = sq.sa_decode(codes[part], buffer[:len(part)])
                rows -= padded[i]
                score[start:start + len(rows)] = np.einsum("ij,ij->i", rows, rows)
            if residual:
                if pca_l2 is not None:
                    score += pca_l2[i][keep]
                else:
                    rows = storage.sa_decode(_code_rows(storage)[cand]) - reduced[i]
                    score += np.einsum("ij,ij->i", rows, rows)
            order = np.argsort(score, kind="stable")[:k]
            l2[i, :len(order)], pos[i, :len(order)] = score[order], cand[order]
        return self._from_l2(l2), pos

    def _scratch(self, width: int) -> np.ndarray:
        """This thread's (RERANK_CHUNK, width) float32 buffer for decoded rows, reused."""
        buffer = getattr(self._buffers, "rows", None)
        if buffer is None or buffer.shape[1] != width:
            buffer = self._buffers.rows = np.empty((RERANK_CHUNK, width), np.float32)
        return buffer

    def _from_l2(self, l2: np.ndarray) -> np.ndarray:
        """``reduced`` scores its candidates by squared L2 to the decoded vectors (faiss's
        ``IndexRefine`` pads missing candidates with +inf, which only sorts last under L2); for
        cosine (unit query, nearly unit decoded vectors) the inner product faiss conventions
        expect is 1 - L2/2, the same ranking."""
        return 1 - l2 / 2 if self.metric == "cosine" else l2

    def _rerank_factor(self) -> int:
        """Candidates re-ranked per result: ``rerank``, else the default of the codes' kind."""
        return self.rerank if self.rerank is not None else DEFAULT_RERANK[self.codes]

    def _candidates(self, k: int) -> int:
        return min(len(self._ids), max(k * self._rerank_factor(), k))

    def _exact_factor(self) -> int:
        """Candidates per result re-ranked exactly from disk: ``exact_rerank``, else the default."""
        return self.exact_rerank if self.exact_rerank is not None else DEFAULT_EXACT_RERANK

    def _exact_count(self, k: int) -> int:
        """How many of the codes' best candidates a top-``k`` search of ``reduced`` re-ranks
        exactly from disk (never more than the codes ranked); ``k`` where there is no such stage."""
        if self._full is None or not self._exact_factor():
            return k
        return max(k, min(k * self._exact_factor(), self._candidates(k)))

    def _exact_final(self, queries: np.ndarray, raw: np.ndarray, pos: np.ndarray, k: int):
        """``reduced``: the best k of each query's candidate positions (``pos``, (nq, m), -1 for
        none), by squared L2 to the float32 full vectors read from disk (:meth:`_read_full`):
        exact distances in faiss conventions (:meth:`_from_l2`), positions; padded with -1.
        Other kinds (or ``exact_rerank=0``): ``raw``, ``pos`` unchanged."""
        if self._full is None or not self._exact_factor():
            return raw, pos
        nq = len(queries)
        l2 = np.full((nq, k), np.inf, np.float32)
        found = np.full((nq, k), -1, np.int64)
        for i in range(nq):
            cand = pos[i][pos[i] >= 0]
            if len(cand) == 0:
                continue
            rows = self._read_full(cand)
            rows -= queries[i]
            score = np.einsum("ij,ij->i", rows, rows)
            order = np.argsort(score, kind="stable")[:k]
            l2[i, :len(order)], found[i, :len(order)] = score[order], cand[order]
        return self._from_l2(l2), found

    def _read_full(self, positions: np.ndarray) -> np.ndarray:
        """(m, dim) float32 full vectors at ``positions``, in this thread's reused buffer: one
        ``pread`` per row from the ``.npy`` file on disk, so the rows pass through the page cache
        without being mapped into the process (a memory-mapped read faults in ~100 KB around
        each row and makes the whole file resident over time: docs/scaling.md)."""
        m = len(positions)
        buffer = getattr(self._buffers, "full", None)
        if buffer is None or buffer.shape[1] != self.dim or len(buffer) < m:
            buffer = self._buffers.full = np.empty((max(m, 64), self.dim), np.float32)
        out = buffer[:m]
        reader = self._full_reader()   # held until the loop ends (see _full_reader)
        if reader is None:
            out[:] = self._full[positions]
            return out
        fd, size, start = reader.fd, self.dim * 4, self._full.offset
        view = memoryview(out).cast("B")
        for j, p in enumerate(positions.tolist()):
            if os.preadv(fd, (view[j * size:(j + 1) * size],), start + p * size) != size:
                out[j] = self._full[p]   # a short read (the file changed under us): through the map
        return out

    def _full_reader(self) -> "_Reader | None":
        """A read-only descriptor of the full vectors' file (a new one when the file changes), or
        None where ``os.preadv`` or a file-backed map is missing. The previous file's descriptor is
        never closed under a search still reading it: it closes when its last user drops it."""
        path = self._full_path
        if path is None or not hasattr(os, "preadv") or not isinstance(self._full, np.memmap):
            return None
        reader = self._reader
        if reader is None or reader.path != path:
            with self._reader_lock:
                if self._reader is None or self._reader.path != path:
                    self._reader = _Reader(path)
                reader = self._reader
        return reader

    def _built_kind(self) -> str:
        # memoised until the index is replaced: these swig type checks cost ~20 us, twice per query
        if self._kind_memo is None:
            self._kind_memo = self._kind_of_index()
        return self._kind_memo

    def _kind_of_index(self) -> str:
        if isinstance(self._index, faiss.IndexPreTransform):
            return "reduced"  # saved before the 8-bit re-rank moved into faiss (see load)
        if isinstance(self._index, faiss.IndexRefine):
            refine = _unpadded(self._index.refine_index)
            if isinstance(refine, faiss.IndexScalarQuantizer) and refine.sq.qtype == faiss.ScalarQuantizer.QT_8bit:
                return "reduced"
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
                self._index_add(prepared)   # PCA projection and 8-bit codes
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
        # than the search (flat 20k x 1280: 41 ms on 1 thread, 123 ms on 2); ``reduced`` splits its
        # fast-scan over the probed lists (see _search_threads). The setting is per calling thread.
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(self._search_threads(threads))
        try:
            return self._search(queries, k, allowed_ids)
        finally:
            faiss.omp_set_num_threads(threads)

    def _search_threads(self, pool: int) -> int:
        """OpenMP threads for a search of a few queries: ``threads`` (default ``SEARCH_THREADS``)
        for ``reduced``, 1 for the other kinds; at most ``pool``, the caller's OpenMP pool."""
        if self._index is None or self._built_kind() != "reduced":
            return 1
        return max(1, min(self.threads or SEARCH_THREADS, pool))

    def _search(self, queries, k, allowed_ids):
        nq = len(queries)
        empty = np.full((nq, k), np.inf, np.float32), np.full((nq, k), -1, np.int64)
        if self._index is None or len(self._ids) == 0:
            return empty
        keep = self._exact_count(k)   # reduced: the codes' best ``keep``, then the exact re-rank from disk
        if allowed_ids is None:
            if self._residual_codes():  # reduced: candidates on the PCA vectors, then the re-rank
                found = self._two_stage(queries, keep, self._candidates(k), self.ef_search, self._nprobe())
                return self._finish(*self._exact_final(queries, *found, k), k)
            if self._full is not None:  # reduced, full codes: one faiss call, re-ranked inside it
                kk = min(keep, len(self._ids))
                params = self._reduced_params(kk, self._candidates(k), self.ef_search, self._nprobe())
                l2, pos = self._index.search(queries, kk, params=params)
                return self._finish(*self._exact_final(queries, self._from_l2(l2), pos, k), k)
            self._set_breadth(self._index, max(self.ef_search, k), self._nprobe())
            raw, pos = self._index.search(queries, min(k, len(self._ids)))
            return self._finish(raw, pos, k)
        positions = self._positions(np.asarray(allowed_ids, dtype=np.int64).ravel())
        if len(positions) == 0:
            return empty
        if self._built_kind() == "flat" or self.prefers_exact(len(positions)):
            found = self._exact_subset(queries, k, positions, keep)
        else:
            found = self._filtered_ann(queries, k, positions, keep)
        return self._finish(*self._exact_final(queries, *found, k), k)

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

    def _exact_subset(self, queries: np.ndarray, k: int, positions: np.ndarray, keep: int | None = None):
        """Exact search over the allowed positions. ``reduced``: a scan of the subset's reduced
        vectors, its top rerank·k re-ranked on the full ones' 8-bit codes (all of them when that
        many or fewer are allowed), the best ``keep`` (default k) returned for the exact re-rank."""
        keep = keep or k
        if self._full is None:
            selector = _bitmap_selector(positions, len(self._ids))
            kk = min(k, len(positions))
            return self._exact_storage().search(queries, kk, params=faiss.SearchParameters(sel=selector))
        cand = min(self._candidates(k), len(positions))
        if cand >= len(positions):
            return self._rerank(queries, np.broadcast_to(positions, (len(queries), len(positions))), keep)
        pca, inner = self._reduced_parts()
        reduced = pca.apply(queries)
        # Only the allowed items' float16 reduced vectors, in chunks: at 1M a selector scan over
        # every code took 12 ms for 995 allowed items. Decoded by faiss (numpy's float16 -> float32
        # cast took ~5 ms for 995 x 256 values).
        storage = _reduced_storage(inner)
        codes = _code_rows(storage)
        found_d, found_p = [], []
        for start in range(0, len(positions), 65_536):
            part = positions[start:start + 65_536]
            dist, local = exact_knn(reduced, storage.sa_decode(codes[part]), min(cand, len(part)), "l2")
            found_d.append(dist)
            found_p.append(np.where(local >= 0, part[np.clip(local, 0, None)], -1))
        dist, pos = np.concatenate(found_d, 1), np.concatenate(found_p, 1)
        best = np.argsort(dist, axis=1, kind="stable")[:, :cand]
        return self._rerank(queries, np.take_along_axis(pos, best, 1), keep, reduced,
                            np.take_along_axis(dist, best, 1) ** 2)   # exact_knn's l2 is not squared

    def _filtered_ann(self, queries: np.ndarray, k: int, positions: np.ndarray, keep: int | None = None):
        """The approximate index through a selector, searched wider in proportion to how much is
        filtered out (``reduced``: its best ``keep``, default k, for the exact re-rank)."""
        keep = keep or k
        selector = _bitmap_selector(positions, len(self._ids))
        kk = min(k, len(positions))
        widen = len(self._ids) / len(positions)
        ef = int(min(max(self.ef_search, k) * widen, MAX_FILTER_EF))
        nprobe = int(min(self._nprobe() * widen, 4 * self._nprobe() + 64))
        if self._residual_codes():
            return self._two_stage(queries, keep, min(self._candidates(k), len(positions)), ef, nprobe, selector)
        if self._full is not None:
            cand = min(self._candidates(k), len(positions))
            kk = min(keep, len(positions))
            l2, pos = self._index.search(queries, kk, params=self._reduced_params(kk, cand, ef, nprobe, selector))
            return self._from_l2(l2), pos
        return self._index.search(queries, kk, params=self._filter_params(selector, ef, nprobe))

    def _reduced_parts(self):
        """(the PCA, the index over reduced vectors: an ``IndexRefine`` over the IVF, or the HNSW
        graph of indexes built with ``structure="hnsw"``). ``reduced`` is
        IndexRefine(IndexPreTransform(PCA, that index), 8-bit codes of the full vectors)."""
        index = self._index
        if isinstance(index, faiss.IndexRefine):
            index = faiss.downcast_index(index.base_index)
        pca = faiss.downcast_VectorTransform(index.chain.at(0))
        return pca, faiss.downcast_index(index.index)

    def _two_stage(self, queries: np.ndarray, k: int, cand: int, ef: int, nprobe: int, selector=None):
        """``reduced`` with residual codes: the index over the PCA vectors proposes ``cand``
        candidates with their float16 PCA distances, :meth:`_rerank` adds their residuals'."""
        pca, inner = self._reduced_parts()
        reduced = pca.apply(queries)
        pca_l2, pos = inner.search(reduced, max(cand, 1), params=self._inner_params(cand, ef, nprobe, selector))
        return self._rerank(queries, pos, k, reduced, pca_l2)

    def _inner_params(self, cand: int, ef: int, nprobe: int, selector=None):
        """Search parameters of the index over the PCA vectors of ``reduced`` for ``cand``
        candidates: the IVF visits ``nprobe`` lists (its fast-scan candidates refined
        ``refine``-fold on the float16 reduced vectors) or the graph searches with
        ``max(ef, cand)``; ``selector`` (a filter) applies at every level. Unfiltered ones are
        memoised (faiss only reads them)."""
        def build():
            params, extra = self._inner_parts(cand, ef, nprobe, selector)
            params._keep = extra + (selector,)  # swig: the inner parameters must outlive the outer ones
            return params
        return self._memoised(("inner", cand, ef, nprobe, self._refine()), selector, build)

    def _reduced_params(self, k: int, cand: int, ef: int, nprobe: int, selector=None):
        """Search parameters of ``reduced`` for a top-``k`` search that re-ranks ``cand``
        candidates on the 8-bit codes: the index over the PCA vectors searched as
        :meth:`_inner_params` says, then the re-rank; ``selector`` (a filter) applies at every
        level. Parameter objects, not attributes of the shared index, so concurrent searches do
        not race; unfiltered ones are memoised (faiss only reads them; building them cost ~0.1 ms
        per query)."""
        def build():
            sel = {} if selector is None else {"sel": selector}
            inner_params, extra = self._inner_parts(cand, ef, nprobe, selector)
            pre = faiss.SearchParametersPreTransform(index_params=inner_params, **sel)
            # k_base = int(k * k_factor) inside faiss: + 0.5 so float rounding never drops one
            params = faiss.IndexRefineSearchParameters(k_factor=(cand + 0.5) / max(k, 1), base_index_params=pre, **sel)
            params._keep = extra + (inner_params, pre, selector)  # swig: inner parameters must outlive outer ones
            return params
        return self._memoised((k, cand, ef, nprobe, self._refine()), selector, build)

    def _inner_parts(self, cand: int, ef: int, nprobe: int, selector=None) -> tuple:
        """(parameters of the index over the PCA vectors, the swig objects they point to that
        must be kept alive): HNSW searches with ``max(ef, cand)``, the IVF visits ``nprobe``
        lists and refines its fast-scan candidates ``refine``-fold."""
        inner = self._reduced_parts()[1]
        sel = {} if selector is None else {"sel": selector}
        if isinstance(inner, faiss.IndexHNSW):
            return faiss.SearchParametersHNSW(efSearch=max(ef, cand), **sel), ()
        ivf_params = faiss.SearchParametersIVF(nprobe=min(nprobe, faiss.extract_index_ivf(inner).nlist), **sel)
        return faiss.IndexRefineSearchParameters(k_factor=self._refine(), base_index_params=ivf_params, **sel), \
            (ivf_params,)

    def _memoised(self, key: tuple, selector, build):
        """``build()``'s parameters, memoised under ``key`` when unfiltered (a selector is per query)."""
        if selector is not None:
            return build()
        if key not in self._params_memo:
            if len(self._params_memo) > 64:
                self._params_memo.clear()
            self._params_memo[key] = build()
        return self._params_memo[key]

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
        if kind in ("hnsw", "hnsw-fp16"):
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
                "structure": self.structure, "filter_policy": self.filter_policy, "codes": self.codes,
                "exact_rerank": self.exact_rerank, "coarse_dim": self.coarse_dim}

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
                                                    "pca_dim", "pq_dims", "rerank", "structure", "filter_policy",
                                                    "codes", "exact_rerank", "coarse_dim")
                  if key in meta}
        params.setdefault("codes", "full")   # saved before residual codes existed
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
            if isinstance(self._index, faiss.IndexPreTransform):  # saved before the re-rank moved into faiss
                self.codes = "full"
                self._index = self._legacy_refine(self._index, path)
        self._fitted_n = int(meta.get("fitted_n", len(self._ids)))
        self.filter_costs = meta.get("filter_costs")
        return self

    def _legacy_refine(self, pre: faiss.IndexPreTransform, path: Path) -> faiss.IndexRefine:
        """A ``reduced`` index saved as PCA -> IVF/HNSW with its 8-bit codes in ``codes.npy`` (or,
        older, none: re-ranked on ``vectors.npy``), wrapped as the current layout: the codes (or
        the full vectors, encoded now) become the faiss re-rank stage."""
        if (path / "codes.npy").exists():
            lo, step = np.load(path / "code_scale.npy")
            codes = np.load(path / "codes.npy", mmap_mode="r")
            if codes.shape != self._full.shape:
                raise ValueError(f"index at {path} holds codes of shape {codes.shape}")
            refine = _sq8(self.dim, lo, step)
            sq = _unpadded(refine)   # padded codes: the extra dimensions are 0, coded as 0
            sq.codes.resize(len(codes) * sq.code_size)
            view = np.frombuffer(faiss.rev_swig_ptr(sq.codes.data(), len(codes) * sq.code_size),
                                 np.uint8).reshape(len(codes), sq.code_size)
            view[:, self.dim:] = 0
            for start in range(0, len(codes), 65_536):
                view[start:start + 65_536, :self.dim] = codes[start:start + 65_536]
            sq.ntotal = refine.ntotal = len(codes)
        else:
            sample = np.asarray(self._full[:100_000], np.float32)
            lo, hi = sample.min(0), sample.max(0)
            margin = 0.05 * (hi - lo) + 1e-6
            refine = _sq8(self.dim, lo - margin, (hi - lo + 2 * margin) / 255)
            for start in range(0, len(self._full), 65_536):
                refine.add(np.asarray(self._full[start:start + 65_536], np.float32))
        refined = faiss.IndexRefine(pre, refine)
        refined.k_factor = float(self._rerank_factor())
        self._parts = (pre, refine)  # swig: these Python objects own the C++ parts
        return refined

    def __len__(self) -> int:
        return len(self._ids)

    def describe(self) -> str:
        kind = self._built_kind() if self._index is not None else self.resolved_kind()
        extra = ""
        if kind == "reduced" and self._index is not None:
            pca, inner = self._reduced_parts()
            if isinstance(inner, faiss.IndexHNSW):
                extra = f", PCA {pca.d_out}-d, HNSW"
            else:
                ivf = faiss.extract_index_ivf(inner)
                quantizer = faiss.downcast_index(ivf.quantizer)
                coarse = quantizer.index.d if isinstance(quantizer, faiss.IndexPreTransform) else ivf.d
                extra = f", PCA {pca.d_out}-d, IVF{ivf.nlist}" + (f" by the first {coarse} dims" if coarse < ivf.d else "")
        return f"faiss {kind} ({self.metric}, {len(self)} vectors{extra})"


def _divisor(dim: int) -> int:
    """The most PQ sub-quantizers (<= dim/4) that divide ``dim``."""
    return next(m for m in range(max(dim // 4, 1), 0, -1) if dim % m == 0)


def _sq8(dim: int, lo: np.ndarray, step: np.ndarray) -> faiss.Index:
    """An empty faiss 8-bit scalar quantizer (squared L2) of ``dim``-d vectors whose code c of
    dimension j stands for ``lo[j] + c * step[j]`` (faiss decodes vmin + (c + 0.5) / 255 * vdiff
    and encodes to the nearest level): 1 byte per dimension, decoded and scored inside faiss.

    faiss scores scalar-quantized codes with SIMD only when the width is a multiple of 8 (16 for
    AVX-512); otherwise it falls back to a scalar loop ~25x slower (1525-d: 6.8 us per code against
    0.28 ns per dimension at 256-d, measured here). So the codes are ``CODE_ALIGN``-padded: a faiss
    ``RemapDimensionsTransform`` appends zero dimensions (coded exactly as 0), which distances
    do not see."""
    padded = -(-dim // CODE_ALIGN) * CODE_ALIGN
    sq = faiss.IndexScalarQuantizer(padded, faiss.ScalarQuantizer.QT_8bit, faiss_metric("l2"))
    lo = np.pad(np.asarray(lo, np.float32), (0, padded - dim))
    step = np.pad(np.asarray(step, np.float32), (0, padded - dim), constant_values=1)
    faiss.copy_array_to_vector(np.concatenate([lo - step / 2, 255 * step]).astype(np.float32), sq.sq.trained)
    sq.is_trained = True
    if padded == dim:
        return sq
    wrapped = faiss.IndexPreTransform(faiss.RemapDimensionsTransform(dim, padded, False), sq)
    wrapped.is_trained = True
    return wrapped


def _coarse_quantizer(dim: int, coarse_dim: int) -> faiss.Index:
    """An empty flat L2 quantizer over ``dim``-d vectors that compares only their first
    ``coarse_dim`` dimensions (all of them when ``coarse_dim >= dim``). Inside an IVF, faiss's
    k-means assigns through it and averages the full vectors, i.e. it clusters that subspace."""
    if coarse_dim >= dim:
        return faiss.IndexFlatL2(dim)
    quantizer = faiss.IndexPreTransform(faiss.RemapDimensionsTransform(dim, coarse_dim, False),
                                        faiss.IndexFlatL2(coarse_dim))
    quantizer.is_trained = True
    return quantizer


def _residual(vectors: np.ndarray, pca: faiss.PCAMatrix) -> np.ndarray:
    """``vectors`` minus their PCA reconstruction: the part orthogonal to the PCA space (the
    mean cancels in differences, so |q - x|^2 = |P(q - x)|^2 + |r_q - r_x|^2 exactly)."""
    vectors = np.ascontiguousarray(vectors, np.float32)
    return vectors - pca.reverse_transform(pca.apply(vectors))


def _column_range(sample: np.ndarray, pca: faiss.PCAMatrix | None = None, chunk: int = 16_384):
    """Per-dimension (min, max) of ``sample`` (of its residuals with ``pca``), a chunk at a time."""
    lo = hi = None
    for start in range(0, len(sample), chunk):
        part = sample[start:start + chunk]
        part = _residual(part, pca) if pca is not None else part
        lo = part.min(0) if lo is None else np.minimum(lo, part.min(0))
        hi = part.max(0) if hi is None else np.maximum(hi, part.max(0))
    return lo, hi


def _reduced_storage(inner: faiss.Index) -> faiss.Index:
    """The float16 reduced vectors of ``reduced``'s inner index (the IVF's refine stage, or the
    HNSW graph's storage), at positions 0..n-1."""
    return faiss.downcast_index(inner.storage if isinstance(inner, faiss.IndexHNSW) else inner.refine_index)


def _code_rows(index: faiss.Index) -> np.ndarray:
    """(ntotal, code_size) uint8 view (no copy) of a flat-codes index's codes."""
    return np.frombuffer(faiss.rev_swig_ptr(index.codes.data(), index.ntotal * index.code_size),
                         np.uint8).reshape(index.ntotal, index.code_size)


def _unpadded(index: faiss.Index) -> faiss.Index:
    """The scalar quantizer inside ``_sq8``'s padding (or ``index`` itself)."""
    index = faiss.downcast_index(index)
    return faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index


def _bitmap_selector(positions: np.ndarray, n: int) -> faiss.IDSelector:
    """A faiss selector accepting exactly ``positions`` (a bitmap: O(1) membership tests)."""
    mask = np.zeros(n, bool)
    mask[positions] = True
    bits = np.packbits(mask, bitorder="little")
    selector = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits))
    selector._bits = bits  # the selector points into this buffer: keep it alive
    return selector


class _Reader:
    """A read-only descriptor of the file at ``path``, closed when the last reference goes (a
    search that is still reading keeps it open after the index has moved on to a new file)."""

    def __init__(self, path: Path):
        self.path, self.fd = path, os.open(path, os.O_RDONLY)

    def __del__(self):
        try:
            os.close(self.fd)
        except OSError:
            pass


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

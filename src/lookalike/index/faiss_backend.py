"""faiss backend: exact (Flat) for small catalogs, HNSW above a size threshold.

Vectors are kept at consecutive positions 0..n-1 inside faiss; ``_ids[pos]`` maps back to item
ids. Removal compacts the arrays and rebuilds (rare: catalogs change by re-indexing). Filters use
exact search over the allowed subset when it is small, and a faiss ID selector otherwise, so a
filtered query still returns k hits whenever k items match.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import faiss
import numpy as np

from lookalike.encoders.base import l2_normalize
from lookalike.index.base import IndexBackend

# Below this many vectors exact search is fast enough that approximate search is not worth its
# recall loss (see benchmarks/bench_index.py for the measurement behind it).
HNSW_THRESHOLD = int(os.environ.get("LOOKALIKE_HNSW_THRESHOLD", 50_000))
# A filter matching at most this many items is searched exactly over the subset.
SUBSET_EXACT_MAX = 20_000


class FaissIndex(IndexBackend):
    backend = "faiss"

    def __init__(self, dim: int, metric: str = "cosine", kind: str = "auto", hnsw_m: int = 32,
                 ef_search: int = 128, ef_construction: int = 200):
        super().__init__(dim, metric)
        if kind not in ("auto", "flat", "hnsw"):
            raise ValueError("kind must be auto, flat or hnsw")
        self.kind = kind
        self.hnsw_m, self.ef_search, self.ef_construction = hnsw_m, ef_search, ef_construction
        self._ids = np.zeros(0, np.int64)
        self._vectors = np.zeros((0, dim), np.float32)
        self._index: faiss.Index | None = None

    # -- building -------------------------------------------------------------------------
    def _prepare(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        return l2_normalize(vectors) if self.metric == "cosine" else vectors

    def resolved_kind(self, n: int | None = None) -> str:
        n = len(self._ids) if n is None else n
        if self.kind != "auto":
            return self.kind
        return "hnsw" if n >= HNSW_THRESHOLD and self.metric != "l1" else "flat"

    def _faiss_metric(self) -> int:
        return {"cosine": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2, "l1": faiss.METRIC_L1}[self.metric]

    def _new_index(self) -> faiss.Index:
        if self.resolved_kind() == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, self._faiss_metric())
            index.hnsw.efConstruction = self.ef_construction
            index.hnsw.efSearch = self.ef_search
            return index
        if self.metric == "l1":
            return faiss.IndexFlat(self.dim, faiss.METRIC_L1)
        return faiss.IndexFlatIP(self.dim) if self.metric == "cosine" else faiss.IndexFlatL2(self.dim)

    def _rebuild(self) -> None:
        self._index = self._new_index()
        if len(self._vectors):
            self._index.add(self._vectors)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        vectors = self._prepare(vectors)
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids but {len(vectors)} vectors")
        replaced = np.isin(self._ids, ids)
        kind_before = self.resolved_kind()
        if replaced.any():
            self._ids, self._vectors = self._ids[~replaced], self._vectors[~replaced]
        self._ids = np.concatenate([self._ids, ids])
        self._vectors = np.concatenate([self._vectors, vectors])
        if self._index is None or replaced.any() or self.resolved_kind() != kind_before:
            self._rebuild()
        else:
            self._index.add(vectors)

    def remove(self, ids: np.ndarray) -> int:
        gone = np.isin(self._ids, np.asarray(ids, dtype=np.int64))
        count = int(gone.sum())
        if count:
            self._ids, self._vectors = self._ids[~gone], self._vectors[~gone]
            self._rebuild()
        return count

    # -- searching ------------------------------------------------------------------------
    def search(self, queries, k, allowed_ids=None):
        queries = self._prepare(queries)
        nq = len(queries)
        if self._index is None:
            self._rebuild()
        if allowed_ids is not None:
            positions = np.flatnonzero(np.isin(self._ids, np.asarray(allowed_ids, dtype=np.int64)))
            if len(positions) == 0:
                return np.full((nq, k), np.inf, np.float32), np.full((nq, k), -1, np.int64)
            if len(positions) <= SUBSET_EXACT_MAX or self.resolved_kind() == "flat":
                return self._exact_subset(queries, k, positions)
            params = faiss.SearchParametersHNSW(sel=faiss.IDSelectorBatch(positions.astype(np.int64)),
                                                efSearch=max(self.ef_search, k))
            raw, pos = self._index.search(queries, k, params=params)
        else:
            if self.resolved_kind() == "hnsw":
                self._index.hnsw.efSearch = max(self.ef_search, k)
            raw, pos = self._index.search(queries, min(k, max(len(self._ids), 1)))
        return self._finish(raw, pos, k)

    def _exact_subset(self, queries, k, positions):
        sub = self._vectors[positions]
        index = faiss.IndexFlat(self.dim, self._faiss_metric())
        index.add(sub)
        raw, local = index.search(queries, min(k, len(sub)))
        pos = np.where(local >= 0, positions[np.clip(local, 0, None)], -1)
        return self._finish(raw, pos, k)

    def _finish(self, raw, pos, k):
        dist = self._to_distance(raw)
        ids = np.where(pos >= 0, self._ids[np.clip(pos, 0, None)] if len(self._ids) else -1, -1)
        dist = np.where(pos >= 0, dist, np.inf).astype(np.float32)
        if dist.shape[1] < k:  # fewer vectors than k: pad
            pad = k - dist.shape[1]
            dist = np.pad(dist, ((0, 0), (0, pad)), constant_values=np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        return dist, ids.astype(np.int64)

    def _to_distance(self, raw: np.ndarray) -> np.ndarray:
        if self.metric == "cosine":
            return 1.0 - raw
        if self.metric == "l2":
            return np.sqrt(np.maximum(raw, 0.0))
        return raw

    # -- persistence ----------------------------------------------------------------------
    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self._index is None:
            self._rebuild()
        meta = {"backend": self.backend, "dim": self.dim, "metric": self.metric, "kind": self.kind,
                "hnsw_m": self.hnsw_m, "ef_search": self.ef_search, "ef_construction": self.ef_construction}
        _atomic(path / "ids.npy", lambda f: np.save(f, self._ids))
        _atomic(path / "vectors.npy", lambda f: np.save(f, self._vectors))
        tmp = path / "index.faiss.tmp"
        faiss.write_index(self._index, str(tmp))
        os.replace(tmp, path / "index.faiss")
        _atomic(path / "meta.json", lambda f: f.write(json.dumps(meta).encode()))

    @classmethod
    def load(cls, path: Path) -> "FaissIndex":
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        self = cls(meta["dim"], meta["metric"], meta["kind"], meta["hnsw_m"], meta["ef_search"], meta["ef_construction"])
        self._ids = np.load(path / "ids.npy")
        self._vectors = np.load(path / "vectors.npy")
        self._index = faiss.read_index(str(path / "index.faiss"))
        if len(self._ids) != self._index.ntotal:  # partial save from an older crash: rebuild
            self._rebuild()
        return self

    def __len__(self) -> int:
        return len(self._ids)

    def describe(self) -> str:
        return f"faiss {self.resolved_kind()} ({self.metric}, {len(self)} vectors)"


def _atomic(target: Path, write) -> None:
    tmp = target.with_suffix(target.suffix + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)

"""Cluster-restricted search (the appchemy speed trick) and its cost against full search.

A query is compared with the k-means centroids first and then only with the items of the
``probe`` nearest clusters. That is exactly an inverted-file index whose coarse quantizer holds
our centroids, so we build a faiss ``IndexIVFFlat`` with the clustering's own centroids and
assignments (``add_preassigned``) instead of hand-writing the scan: ``nprobe`` = ``--probe``.
Probing every cluster visits every item, so it returns the same items as full search.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lookalike.explore.clusters import prepare


def _faiss_metric(metric: str):
    import faiss

    return {"cosine": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2, "l1": faiss.METRIC_L1}[metric]


def _to_distance(raw: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":
        return 1.0 - raw
    return np.sqrt(np.maximum(raw, 0.0)) if metric == "l2" else raw


class ClusterSearch:
    """Search restricted to the items of the ``probe`` clusters whose centroids are nearest."""

    def __init__(self, matrix: np.ndarray, centroids: np.ndarray, assignments: np.ndarray, metric: str = "cosine"):
        import faiss
        from faiss.contrib.ivf_tools import add_preassigned

        self.metric = metric
        vectors = prepare(matrix, metric)
        centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.k_clusters, dim = centroids.shape
        # Centroids came from Euclidean k-means (on unit vectors for cosine), so the nearest
        # cluster is found by L2 whatever metric ranks the items inside it.
        self.quantizer = faiss.IndexFlatL2(dim)
        self.quantizer.add(centroids)
        self.index = faiss.IndexIVFFlat(self.quantizer, dim, self.k_clusters, _faiss_metric(metric))
        self.index.is_trained = True
        add_preassigned(self.index, vectors, np.asarray(assignments, np.int64))
        self.sizes = np.bincount(np.asarray(assignments, np.int64), minlength=self.k_clusters)

    def search(self, queries: np.ndarray, k: int, probe: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(nq, dim) -> (distances, row positions), each (nq, k); lower distance = closer, -1 = none."""
        self.index.nprobe = int(np.clip(probe, 1, self.k_clusters))
        raw, pos = self.index.search(prepare(queries, self.metric), k)
        return np.where(pos >= 0, _to_distance(raw, self.metric), np.inf), pos

    def scanned(self, queries: np.ndarray, probe: int) -> np.ndarray:
        """How many items each query compares with at this ``probe`` (the work saved)."""
        _, lists = self.quantizer.search(prepare(queries, self.metric), int(np.clip(probe, 1, self.k_clusters)))
        return self.sizes[lists].sum(axis=1)


class FullSearch:
    """Exact search over every item: the reference the restricted search is measured against."""

    def __init__(self, matrix: np.ndarray, metric: str = "cosine"):
        import faiss

        self.metric = metric
        vectors = prepare(matrix, metric)
        self.index = faiss.IndexFlat(vectors.shape[1], _faiss_metric(metric))
        self.index.add(vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        raw, pos = self.index.search(prepare(queries, self.metric), k)
        return np.where(pos >= 0, _to_distance(raw, self.metric), np.inf), pos


@dataclass
class ProbeResult:
    probe: int
    recall_at_k: float         # share of the full search's top-k that the restricted search finds
    scanned_share: float       # mean share of the catalog compared per query
    full_ms: float             # mean per-query latency, full search
    restricted_ms: float       # mean per-query latency, restricted search
    speedup: float
    precision_full: float | None = None        # label P@k of full search (same for every row)
    precision_restricted: float | None = None  # label P@k of restricted search

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _drop_self(pos: np.ndarray, query_rows: np.ndarray, k: int) -> np.ndarray:
    """Leave-one-out: remove each query's own row, keep the first k others."""
    out = np.full((len(pos), k), -1, np.int64)
    for i, (row, own) in enumerate(zip(pos, query_rows)):
        kept = row[(row != own) & (row >= 0)][:k]
        out[i, : len(kept)] = kept
    return out


def _label_precision(pos: np.ndarray, query_rows: np.ndarray, labels: Sequence) -> float | None:
    hits, total = 0, 0
    for row, own in zip(pos, query_rows):
        if labels[own] in (None, ""):
            continue
        valid = row[row >= 0]
        hits += sum(labels[j] == labels[own] for j in valid)
        total += len(row)
    return hits / total if total else None


def _timed_per_query(search_one, queries: np.ndarray) -> tuple[np.ndarray, float]:
    """Run one query at a time (what an online request does); (positions, mean ms per query)."""
    results = []
    start = time.perf_counter()
    for q in queries:
        results.append(search_one(q[None]))
    elapsed = time.perf_counter() - start
    return np.concatenate(results), 1000.0 * elapsed / max(len(queries), 1)


def _timed_pair(full_one, restricted_one, queries: np.ndarray, rounds: int):
    """Time both searches in alternating rounds and keep each one's fastest round: other load on
    the machine only ever adds time, so the minimum is the least disturbed estimate."""
    full_ms, restricted_ms, pos = [], [], None
    for _ in range(rounds):
        full_ms.append(_timed_per_query(full_one, queries)[1])
        pos, ms = _timed_per_query(restricted_one, queries)
        restricted_ms.append(ms)
    return pos, min(full_ms), min(restricted_ms)


def compare_probes(matrix: np.ndarray, centroids: np.ndarray, assignments: np.ndarray, probes: Sequence[int],
                   metric: str = "cosine", k: int = 10, labels: Sequence | None = None,
                   n_queries: int | None = 1000, seed: int = 0, threads: int = 1,
                   rounds: int = 3) -> list[ProbeResult]:
    """Leave-one-out queries from the catalog itself, full and restricted search side by side.

    Both searches run in the same process, one query at a time, with the same faiss thread count,
    in alternating rounds (fastest round kept), so the ratio is meaningful even on a busy machine. Recall@k is measured against full search's
    top-k (not against labels), so it isolates what restricting the search loses.
    """
    import faiss

    faiss.omp_set_num_threads(threads)
    n = len(matrix)
    rng = np.random.default_rng(seed)
    rows = np.arange(n) if not n_queries or n_queries >= n else np.sort(rng.choice(n, n_queries, replace=False))
    queries = np.ascontiguousarray(matrix[rows], dtype=np.float32)
    full, restricted = FullSearch(matrix, metric), ClusterSearch(matrix, centroids, assignments, metric)
    fetch = min(k + 1, n)
    full_pos = _drop_self(full.search(queries, fetch)[1], rows, k)
    results = []
    for probe in probes:
        # time the full search again next to every probe value: load on a shared box drifts
        pos, full_ms, ms = _timed_pair(lambda q: full.search(q, fetch)[1],
                                       lambda q, p=probe: restricted.search(q, fetch, p)[1], queries, rounds)
        pos = _drop_self(pos, rows, k)
        recall = np.mean([len(set(a[a >= 0]) & set(b[b >= 0])) / max((a >= 0).sum(), 1)
                          for a, b in zip(full_pos, pos)])
        results.append(ProbeResult(
            probe=int(probe), recall_at_k=float(recall),
            scanned_share=float(restricted.scanned(queries, probe).mean() / n),
            full_ms=full_ms, restricted_ms=ms, speedup=full_ms / ms if ms else float("inf"),
            precision_full=_label_precision(full_pos, rows, labels) if labels is not None else None,
            precision_restricted=_label_precision(pos, rows, labels) if labels is not None else None))
    return results

"""An inverted-file index over a clustering the caller already has.

A query is compared with the cluster centroids first and then only with the items of the
``probe`` nearest clusters: faiss ``IndexIVFFlat`` whose coarse quantizer holds the given
centroids and whose lists hold the given assignments (``add_preassigned``), so nothing is
re-trained and ``nprobe`` = ``probe``. Probing every cluster visits every item, so it returns
what exact search (:func:`lookalike.index.distances.exact_knn`) returns.
"""
from __future__ import annotations

import faiss
import numpy as np
from faiss.contrib.ivf_tools import add_preassigned

from lookalike.index.distances import faiss_metric, prepare, raw_to_distance


class PreassignedIVF:
    """Search restricted to the items of the ``probe`` clusters whose centroids are nearest.

    ``matrix`` (n, d) vectors, ``centroids`` (k, d) float, ``assignments`` (n,) cluster of each
    row in 0..k-1; ``metric`` cosine, l2 or l1 ranks the items inside the probed clusters."""

    def __init__(self, matrix: np.ndarray, centroids: np.ndarray, assignments: np.ndarray, metric: str = "cosine"):
        self.metric = metric
        vectors = prepare(matrix, metric)
        centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.k_clusters, dim = centroids.shape
        # Centroids came from Euclidean k-means (on unit vectors for cosine), so the nearest
        # cluster is found by L2 whatever metric ranks the items inside it.
        self.quantizer = faiss.IndexFlatL2(dim)
        self.quantizer.add(centroids)
        self.index = faiss.IndexIVFFlat(self.quantizer, dim, self.k_clusters, faiss_metric(metric))
        self.index.is_trained = True
        add_preassigned(self.index, vectors, np.asarray(assignments, np.int64))
        self.sizes = np.bincount(np.asarray(assignments, np.int64), minlength=self.k_clusters)

    def search(self, queries: np.ndarray, k: int, probe: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(nq, d) -> (distances float32, row positions int64), each (nq, k); lower distance =
        closer, ``inf`` / -1 = fewer than k items in the probed clusters."""
        self.index.nprobe = int(np.clip(probe, 1, self.k_clusters))
        raw, pos = self.index.search(prepare(queries, self.metric), k)
        return np.where(pos >= 0, raw_to_distance(raw, self.metric), np.inf), pos

    def scanned(self, queries: np.ndarray, probe: int) -> np.ndarray:
        """(nq,) how many items each query compares with at this ``probe`` (the work saved)."""
        _, lists = self.quantizer.search(prepare(queries, self.metric), int(np.clip(probe, 1, self.k_clusters)))
        return self.sizes[lists].sum(axis=1)


def set_search_threads(threads: int) -> None:
    """Threads faiss uses for every later search in this process (``omp_set_num_threads``): timing
    comparisons set the same count for the searches they compare."""
    faiss.omp_set_num_threads(int(threads))

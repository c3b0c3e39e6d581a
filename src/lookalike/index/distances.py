"""Metrics in one place: unit vectors, raw backend values -> distance -> score, and exact kNN.

Every ranked result in lookalike carries a *distance* (lower = closer, in the metric's own units)
and a *score* (higher = more similar). Both come from here, whatever computed the raw value
(faiss, Milvus, numpy):

============  =================================  ====================  =====================
metric        raw value from the backend         distance              score
============  =================================  ====================  =====================
cosine        inner product of unit vectors      1 - cos, >= 0         cos = 1 - distance
l2            squared Euclidean (faiss, Milvus)  Euclidean, >= 0       1 / (1 + distance)
l1            Manhattan                          Manhattan, >= 0       1 / (1 + distance)
ip            inner product (not normalised)     -inner product        inner product
loglik        log N(µ_q | µ_i, σ_i²)             -log-likelihood       log-likelihood
loglik-sym    log N(µ_q | µ_i, σ_q² + σ_i²)      -log-likelihood       log-likelihood
============  =================================  ====================  =====================

``cosine`` vectors are L2-normalised on the way into any index or kNN (:func:`prepare`), so
encoders may return vectors of any length. :func:`l2_normalize` is the one numpy implementation:
the layers above (index, search, explore, train, bench) import it from here. Encoders sit below
this package and may not import it; an encoder whose *feature definition* needs unit parts
(e.g. the pretrained encoder's CNN and colour halves, weighted before concatenation) normalises
inside its torch computation (``torch.nn.functional.normalize``), and one whose output only needs
unit length for cosine leaves that to :func:`prepare` at the index/search boundary.

The VAE log-likelihood scores (``loglik``, ``loglik-sym``, items stored as [µ, log σ²]) are
defined here too (:func:`loglik_scores`): no vector database computes them, so
``lookalike.index.scored`` and :func:`exact_knn` score them in numpy.
"""
from __future__ import annotations

from typing import Callable

import faiss
import numpy as np

#: metrics of plain vectors, computed by faiss (and Milvus for cosine/l2)
VECTOR_METRICS = ("cosine", "l2", "l1")
#: VAE log-likelihood metrics over [µ, log σ²] rows, computed in numpy
SCORED_METRICS = ("loglik", "loglik-sym")
#: every metric a ranked result may come from (``ip`` is the raw inner product, for callers
#: that rank by it directly, e.g. a learned map's space)
METRICS = VECTOR_METRICS + ("ip",) + SCORED_METRICS

_LOG_2PI = float(np.log(2 * np.pi))
# Rows of the (batch x items x d) tensor the symmetric log-likelihood materialises at once.
_SYM_BATCH_ELEMENTS = 8_000_000
# Queries per kNN block: bounds the (batch x n) distance matrix held at once.
_QUERY_BATCH = 2048


def _check(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


def l2_normalize(x: np.ndarray, eps: float = 1e-12, inplace: bool = False, chunk: int = 65_536) -> np.ndarray:
    """Rows (last axis) scaled to unit Euclidean length; float32, same shape. Zero rows stay zero.

    ``inplace=True`` overwrites ``x`` (a float32 array) ``chunk`` rows at a time and returns it:
    a million 1280-d vectors never need a second 5 GB copy."""
    if not inplace:
        x = np.asarray(x, dtype=np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        raise TypeError("in-place normalisation needs a float32 numpy array")
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk]
        part /= np.maximum(np.linalg.norm(part, axis=-1, keepdims=True), eps)
    return x


def prepare(vectors: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """(n, d) vectors as the metric compares them: C-contiguous float32, unit rows for cosine."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return np.ascontiguousarray(l2_normalize(vectors)) if metric == "cosine" else vectors


def faiss_metric(metric: str) -> int:
    """The faiss metric constant computing ``metric``'s raw value (cosine: inner product)."""
    try:
        return {"cosine": faiss.METRIC_INNER_PRODUCT, "ip": faiss.METRIC_INNER_PRODUCT,
                "l2": faiss.METRIC_L2, "l1": faiss.METRIC_L1}[metric]
    except KeyError:
        raise ValueError(f"faiss does not compute metric {metric!r}") from None


def raw_to_distance(raw, metric: str) -> np.ndarray:
    """A backend's raw values (see the table above) -> distances, float32, same shape."""
    _check(metric)
    raw = np.asarray(raw, np.float32)
    if metric == "cosine":
        return np.maximum(1.0 - raw, 0.0).astype(np.float32)  # rounding may push cos above 1
    if metric == "l2":
        return np.sqrt(np.maximum(raw, 0.0)).astype(np.float32)
    if metric == "l1":
        return raw
    return -raw  # ip and log-likelihoods: higher raw = closer


def distance_to_raw(distance, metric: str) -> np.ndarray:
    """The inverse of :func:`raw_to_distance` (e.g. a distance threshold as a faiss range-search
    radius: a similarity floor for cosine, a squared distance for l2), float32, same shape."""
    _check(metric)
    distance = np.asarray(distance, np.float32)
    if metric == "cosine":
        return (1.0 - distance).astype(np.float32)
    if metric == "l2":
        return (distance * distance).astype(np.float32)
    return distance if metric == "l1" else -distance


def distance_to_score(distance, metric: str) -> np.ndarray:
    """Distances -> scores (higher = more similar), float64 array of the same shape."""
    _check(metric)
    distance = np.asarray(distance, np.float64)
    if metric == "cosine":
        return 1.0 - distance
    if metric in ("l2", "l1"):
        return 1.0 / (1.0 + distance)
    return -distance


# -- VAE log-likelihoods ------------------------------------------------------------------------
def _split_query(queries: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray | None]:
    queries = np.atleast_2d(np.asarray(queries, np.float64))
    if queries.shape[1] == d:
        return queries, None
    if queries.shape[1] == 2 * d:
        return queries[:, :d], queries[:, d:]
    raise ValueError(f"queries must have {d} (µ) or {2 * d} (µ, log σ²) values, got {queries.shape[1]}")


def loglik_scores(queries: np.ndarray, items: np.ndarray, symmetric: bool = False) -> np.ndarray:
    """(q, d or 2d) queries x (n, 2d) items [µ, log σ²] -> (q, n) float32 log-likelihoods (higher =
    closer). ``symmetric`` uses the query's σ too (``loglik-sym``); a µ-only query has σ_q = 0."""
    items = np.asarray(items, np.float64)
    if items.ndim != 2 or items.shape[1] % 2:
        raise ValueError("items must be (n, 2d) rows of [µ, log σ²]")
    d = items.shape[1] // 2
    mu_i, logvar_i = items[:, :d], items[:, d:]
    mu_q, logvar_q = _split_query(queries, d)
    if not symmetric or logvar_q is None:
        # Σ_j (µq - µi)² / σi² expanded into matrix products: O(q·n·d) BLAS, no (q, n, d) tensor.
        w = np.exp(-logvar_i)
        mahal = (mu_q**2) @ w.T - 2 * mu_q @ (mu_i * w).T + (mu_i**2 * w).sum(1)
        return (-0.5 * (np.maximum(mahal, 0) + logvar_i.sum(1) + d * _LOG_2PI)).astype(np.float32)
    var_i = np.exp(logvar_i)
    out = np.empty((len(mu_q), len(mu_i)), np.float32)
    step = max(1, _SYM_BATCH_ELEMENTS // max(1, len(mu_i) * d))
    for s in range(0, len(mu_q), step):
        var = np.exp(logvar_q[s:s + step, None, :]) + var_i[None]
        diff2 = (mu_q[s:s + step, None, :] - mu_i[None]) ** 2
        out[s:s + step] = -0.5 * (diff2 / var + np.log(var) + _LOG_2PI).sum(-1)
    return out


SCORERS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "loglik": lambda q, x: loglik_scores(q, x, symmetric=False),
    "loglik-sym": lambda q, x: loglik_scores(q, x, symmetric=True),
}


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column positions of the k highest scores per row, best first (ties: lower column first)."""
    k = min(k, scores.shape[1])
    if k < scores.shape[1]:
        part = np.sort(np.argpartition(-scores, k - 1, axis=1)[:, :k], axis=1)
    else:
        part = np.tile(np.arange(scores.shape[1]), (len(scores), 1))
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


# -- exact k nearest neighbours -------------------------------------------------------------------
def exact_knn(queries: np.ndarray, vectors: np.ndarray, k: int, metric: str = "cosine",
              exclude: np.ndarray | None = None, batch: int = _QUERY_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force k nearest ``vectors`` for each query, under any metric in :data:`METRICS`.

    ``queries`` (nq, d) and ``vectors`` (n, d) are any float arrays (cosine normalises both; the
    log-likelihood metrics take (n, 2d) [µ, log σ²] rows and (nq, d or 2d) queries). ``exclude``,
    if given, is (nq,) positions into ``vectors`` that query i never gets back (leave-one-out:
    ``exclude=np.arange(n)`` when the queries are the vectors themselves; -1 excludes nothing).

    Returns ``(distances, indices)``, each (nq, k): float32 distances ascending (see the table
    above), int64 row positions into ``vectors``; padded with ``inf`` / ``-1`` when fewer than k
    rows are available. faiss (``faiss.knn``) computes cosine, ip, l2 and l1; numpy the
    log-likelihoods. Queries go in blocks of ``batch`` to bound memory.
    """
    _check(metric)
    if k < 0:
        raise ValueError("k must be >= 0")
    scored = metric in SCORED_METRICS
    queries = np.atleast_2d(np.asarray(queries, np.float32)) if scored else prepare(np.atleast_2d(queries), metric)
    vectors = np.asarray(vectors, np.float32) if scored else prepare(vectors, metric)
    nq, n = len(queries), len(vectors)
    exclude = None if exclude is None else np.asarray(exclude, np.int64).reshape(-1)
    if exclude is not None and len(exclude) != nq:
        raise ValueError(f"exclude needs one position per query: {len(exclude)} for {nq} queries")
    distances = np.full((nq, k), np.inf, np.float32)
    indices = np.full((nq, k), -1, np.int64)
    # One extra candidate so the excluded row can be dropped wherever it lands (ties may outrank it).
    fetch = min(k + (exclude is not None), n)
    if fetch == 0 or nq == 0:
        return distances, indices
    for start in range(0, nq, batch):
        block = queries[start:start + batch]
        if scored:
            scores = SCORERS[metric](block, vectors)
            pos = _top_k(scores, fetch)
            dist = -np.take_along_axis(scores, pos, 1)
        else:
            raw, pos = faiss.knn(block, vectors, fetch, faiss_metric(metric))
            dist = raw_to_distance(raw, metric)
        if exclude is None:
            distances[start:start + len(block), :fetch] = dist[:, :k]
            indices[start:start + len(block), :fetch] = pos[:, :k]
            continue
        for row, (d_row, p_row) in enumerate(zip(dist, pos), start):
            keep = (p_row != exclude[row]) & (p_row >= 0)
            kept = p_row[keep][:k]
            indices[row, :len(kept)] = kept
            distances[row, :len(kept)] = d_row[keep][:k]
    return distances, indices


# -- all pairs within a radius ---------------------------------------------------------------------
def _pairs(lims: np.ndarray, dist: np.ndarray, found: np.ndarray) -> list[tuple[int, int, float]]:
    """faiss range-search output (self-search) -> (i, j, distance) with i < j, i ascending."""
    return [(i, int(j), float(d)) for i in range(len(lims) - 1)
            for d, j in zip(dist[lims[i]:lims[i + 1]], found[lims[i]:lims[i + 1]]) if j > i]


def range_pairs(vectors: np.ndarray, radius: float, metric: str = "cosine") -> list[tuple[int, int, float]]:
    """Every pair of rows of ``vectors`` (n, d) closer than ``radius`` (a distance in the metric's
    units, see the table above): ``(i, j, distance)`` with ``i < j``, sorted by ``i`` then in faiss
    order. Exact (faiss ``IndexFlat.range_search``, a strict ``<`` on the raw value); cosine
    normalises the rows. Raises ValueError for a metric other than cosine or l2."""
    if metric not in ("cosine", "l2"):
        raise ValueError("range search supports cosine and l2 vectors")
    x = prepare(vectors, metric)
    index = faiss.IndexFlat(x.shape[1], faiss_metric(metric))
    index.add(x)
    lims, raw, found = index.range_search(x, float(distance_to_raw(radius, metric)))  # radius in raw units
    return _pairs(lims, raw_to_distance(raw, metric), found)


def hamming_pairs(codes: np.ndarray, max_bits: int) -> list[tuple[int, int, float]]:
    """Every pair of binary codes (n, bytes) uint8 at Hamming distance <= ``max_bits``:
    ``(i, j, bits)`` with ``i < j``, ``bits`` a float (faiss ``IndexBinaryFlat.range_search``)."""
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    index.add(codes)
    lims, dist, found = index.range_search(codes, int(max_bits) + 1)  # faiss keeps distance < radius
    return _pairs(lims, dist, found)

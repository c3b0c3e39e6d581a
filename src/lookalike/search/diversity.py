"""Diverse result lists: maximal marginal relevance and near-duplicate collapse.

* :func:`mmr` re-ranks candidates by maximal marginal relevance (Carbonell & Goldstein 1998, "The
  use of MMR, diversity-based reranking for reordering documents and producing summaries"): the
  next hit maximises ``(1 − λ)·rel(d) − λ·max_{s ∈ chosen} sim(d, s)``. **λ points towards
  diversity**: 0 keeps the plain ranking, 1 ignores relevance after the first hit. (The paper's λ
  weighs relevance; ours is 1 − theirs, so that "more diversity" is "more λ".)
* :func:`collapse_duplicates` folds each candidate that lies within the near-duplicate distance of a
  better hit into that hit (the one shown lists it in ``duplicates``). The default distance,
  :data:`NEAR_DUPLICATE_DISTANCE`, is the one ``lookalike.explore.duplicates`` groups with.
* :func:`intra_list_similarity` (ILS, Ziegler et al. 2005, "Improving recommendation lists through
  topic diversification"): the mean pairwise similarity of a list, the measure MMR lowers.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from lookalike.index.distances import SCORED_METRICS, distance_to_score, l2_normalize
from lookalike.search.results import SearchResult

# Cosine distance under which two images count as near duplicates: what
# ``explore.duplicates.choose_threshold`` picked on generated copies of clothing-small
# (effnet-lite0, docs/explore.md); above it distinct photos of similar products start to chain.
NEAR_DUPLICATE_DISTANCE = 0.12
# MMR re-ranks the best POOL_FACTOR·k candidates: how far down the list diversity may reach. Chosen on
# clothing-small (all 3,781 items as queries, λ = 0.3, k = 10): a pool of 20 keeps P@10 within 0.02
# of the plain ranking (-0.018) while the top 10's mean pairwise similarity drops 0.029; pools of 30
# and 200 lose 0.026 and 0.035 of P@10 for drops of 0.038 and 0.047 (README, "Ranking").
POOL_FACTOR = 2


def cosine_similarities(vectors: np.ndarray) -> np.ndarray:
    """(n, n) float64 cosine similarities of (n, d) vectors (rows normalised first)."""
    unit = l2_normalize(np.atleast_2d(np.asarray(vectors, np.float32))).astype(np.float64)
    return np.clip(unit @ unit.T, -1.0, 1.0)


def pairwise_scores(vectors: np.ndarray, metric: str) -> np.ndarray:
    """(n, n) float64 similarities of (n, d) vectors in the metric's score units (higher = more
    similar, as ``SearchResult.score``): cosine for ``cosine`` (and for the log-likelihood metrics,
    whose rows are not points), ``index.distances.distance_to_score`` of the pairwise distance for
    ``l2`` / ``l1``, the inner product for ``ip``."""
    x = np.atleast_2d(np.asarray(vectors, np.float64))
    if metric in ("cosine",) + tuple(SCORED_METRICS):
        return cosine_similarities(x)
    if metric == "ip":
        return x @ x.T
    if metric == "l2":
        sq = (x * x).sum(axis=1)
        dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0))
    else:
        dist = np.abs(x[:, None, :] - x[None, :, :]).sum(axis=2)
    return distance_to_score(dist, metric)


def mmr(relevance, similarity: np.ndarray, k: int, diversity: float) -> list[int]:
    """Maximal-marginal-relevance order of candidates: positions into ``relevance``, at most ``k``.

    ``relevance`` (n,) is each candidate's score for the query (higher = better), ``similarity``
    (n, n) their pairwise similarity on the same scale (e.g. cosine), ``diversity`` is λ in [0, 1]
    (0 = sort by relevance). Ties go to the lower position, so candidates passed in rank order keep
    it. ValueError for λ outside [0, 1], k < 1 or mismatched shapes."""
    rel = np.asarray(relevance, np.float64).reshape(-1)
    sim = np.asarray(similarity, np.float64)
    n = len(rel)
    if not 0.0 <= diversity <= 1.0:
        raise ValueError(f"diversity must be between 0 and 1, got {diversity}")
    if k < 1:
        raise ValueError("k must be at least 1")
    if sim.shape != (n, n):
        raise ValueError(f"similarity must be ({n}, {n}), got {sim.shape}")
    if n == 0:
        return []
    chosen: list[int] = []
    closest = np.full(n, -np.inf)       # max similarity to anything chosen so far
    free = np.ones(n, bool)
    while len(chosen) < min(k, n):
        penalty = np.where(np.isfinite(closest), closest, 0.0)
        value = np.where(free, (1.0 - diversity) * rel - diversity * penalty, -np.inf)
        best = int(np.argmax(value))     # argmax takes the first of ties
        chosen.append(best)
        free[best] = False
        closest = np.maximum(closest, sim[best])
    return chosen


def collapse_duplicates(distances: np.ndarray, threshold: float = NEAR_DUPLICATE_DISTANCE) -> list[tuple[int, list[int]]]:
    """Fold near duplicates into the better hit: ``distances`` (n, n) between candidates given in
    rank order (best first). Walking down the list, a candidate within ``threshold`` of a hit
    already kept goes into the first (best) such hit; otherwise it is kept. Returns
    ``[(kept position, [folded positions…]), …]`` in rank order. A~B and B~C with A≁C keeps A and C
    (a duplicate is judged against what is shown, not chained)."""
    d = np.asarray(distances, np.float64)
    n = d.shape[0]
    if d.shape != (n, n):
        raise ValueError(f"distances must be square, got {d.shape}")
    if not threshold >= 0:
        raise ValueError(f"the duplicate threshold must be >= 0, got {threshold}")
    kept: list[tuple[int, list[int]]] = []
    for i in range(n):
        for pos, folded in kept:
            if d[i, pos] <= threshold:
                folded.append(i)
                break
        else:
            kept.append((i, []))
    return kept


def intra_list_similarity(similarity: np.ndarray) -> float:
    """Mean of the off-diagonal entries of an (n, n) similarity matrix (ILS); nan for n < 2."""
    sim = np.asarray(similarity, np.float64)
    n = sim.shape[0]
    if n < 2:
        return float("nan")
    return float((sim.sum() - np.trace(sim)) / (n * (n - 1)))


# -- stages of the search pipeline (lookalike.search.pipeline) ---------------------------------------
def fold_duplicates(hits: Sequence[SearchResult], vectors: np.ndarray,
                    threshold: float = NEAR_DUPLICATE_DISTANCE) -> list[SearchResult]:
    """Hits in rank order, each near duplicate (cosine distance <= ``threshold`` between the (n, d)
    ``vectors`` of the hits, aligned) folded into the better hit it duplicates: that hit lists the
    folded ids in ``duplicates`` (after any it already had). Ranks are not renumbered here."""
    if len(hits) == 0:
        return []
    kept = collapse_duplicates(1.0 - cosine_similarities(vectors), threshold)
    return [replace(hits[p], duplicates=[*hits[p].duplicates, *(hits[f].id for f in folded)]) for p, folded in kept]


def diversify(hits: Sequence[SearchResult], vectors: np.ndarray, k: int, diversity: float, metric: str = "cosine",
              pool: int | None = None) -> list[SearchResult]:
    """The ``k`` hits MMR picks (:func:`mmr`, relevance = each hit's ``score``, similarity =
    :func:`pairwise_scores` of the aligned (n, d) ``vectors``) from the first ``pool`` hits (default
    ``POOL_FACTOR·k``), in MMR order. Ranks are not renumbered here. λ = 0 returns ``hits[:k]``."""
    if diversity == 0 or len(hits) == 0:
        mmr([], np.zeros((0, 0)), max(k, 1), diversity)   # validates λ and k
        return list(hits[:k])
    n = min(len(hits), pool if pool is not None else POOL_FACTOR * k)
    vectors = np.asarray(vectors)[:n]
    order = mmr([h.score for h in hits[:n]], pairwise_scores(vectors, metric), k, diversity)
    return [hits[i] for i in order]


def reorder(hits: Sequence[SearchResult], vectors_of, k: int, diversity: float = 0.0,
            collapse: float | None = None, metric: str = "cosine") -> list[SearchResult]:
    """Stages 5-6 of the search pipeline on a candidate list (best first): fold near duplicates
    (``collapse``: a cosine distance, None = off; :func:`fold_duplicates`), then MMR with λ =
    ``diversity`` (:func:`diversify`); the first ``k`` come back (ranks not renumbered).
    ``vectors_of(ids) -> (n, d)`` gives the hits' stored vectors, aligned; it is called only when
    a stage is on."""
    hits = list(hits)
    if collapse is not None and hits:
        hits = fold_duplicates(hits, vectors_of([h.id for h in hits]), collapse)
    if diversity > 0 and hits:
        pool = hits[:POOL_FACTOR * k]
        return diversify(pool, vectors_of([h.id for h in pool]), k, diversity, metric)
    if not 0.0 <= diversity <= 1.0:
        raise ValueError(f"diversity must be between 0 and 1, got {diversity}")
    return hits[:k]

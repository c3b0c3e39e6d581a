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

import numpy as np

from lookalike.index.distances import l2_normalize

# Cosine distance under which two images count as near duplicates: what
# ``explore.duplicates.choose_threshold`` picked on generated copies of clothing-small
# (effnet-lite0, docs/explore.md); above it distinct photos of similar products start to chain.
NEAR_DUPLICATE_DISTANCE = 0.12


def cosine_similarities(vectors: np.ndarray) -> np.ndarray:
    """(n, n) float64 cosine similarities of (n, d) vectors (rows normalised first)."""
    unit = l2_normalize(np.atleast_2d(np.asarray(vectors, np.float32))).astype(np.float64)
    return np.clip(unit @ unit.T, -1.0, 1.0)


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

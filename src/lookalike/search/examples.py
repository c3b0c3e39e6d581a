"""Queries made of several weighted examples: "more like these, less like that".

An example is a catalog item, an image or a vector with a weight; a negative weight means "less
like this". Two ways to turn examples into one ranking (``COMBINE_RULES``):

* ``mean`` — Rocchio's relevance feedback (Rocchio 1971, "Relevance feedback in information
  retrieval"): the query is ``q = Σ wᵢ·v̂ᵢ`` over the L2-normalised example vectors ``v̂ᵢ``
  (negative weights subtract), normalised again, then searched like one vector. One index query.
* ``max`` — best-score fusion (CombMAX, Fox & Shaw 1994, "Combination of multiple searches"):
  each positive example is searched on its own, the union of their candidates is scored against
  every example, and a candidate's score is ``(max_{wᵢ>0} wᵢ·sᵢ − max_{wⱼ<0} |wⱼ|·sⱼ) / max_{wᵢ>0} wᵢ``
  (the second term is 0 without negatives): close to any one positive is enough, close to any
  negative costs.

``DEFAULT_RULE`` is the one measured better on clothing-small (README, "Ranking"; study:
``python -m lookalike.bench.studies.steering``).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from lookalike.index.distances import SCORED_METRICS, distance_to_score, l2_normalize
from lookalike.search.results import SearchResult

COMBINE_RULES = ("mean", "max")
DEFAULT_RULE = "mean"
EXAMPLE_KINDS = ("item", "image", "vector")
MAX_EXAMPLES = 50

# "ID:nan", "ID:inf", "ID:1e999": meant as a weight, not as part of the id (which would then be "not found")
_NON_FINITE = re.compile(r"^.+:[+-]?(nan|inf|infinity)$", re.IGNORECASE)
_WEIGHT = re.compile(r"^(?P<id>.*):(?P<w>[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?)$")


@dataclass(frozen=True)
class Example:
    """One example of a query: ``kind`` is ``item`` (``value`` an item id), ``image`` (a path, bytes or
    PIL image) or ``vector`` (a 1-d array); ``weight`` > 0 = more like this, < 0 = less like this."""

    kind: str
    value: Any
    weight: float = 1.0

    def __post_init__(self):
        if self.kind not in EXAMPLE_KINDS:
            raise ValueError(f"unknown example kind {self.kind!r}; choose one of {', '.join(EXAMPLE_KINDS)}")
        if not isinstance(self.weight, (int, float)) or not math.isfinite(self.weight) or self.weight == 0:
            raise ValueError(f"an example's weight must be a finite non-zero number, got {self.weight!r}")


# "Less like this" without a written weight: on clothing-small (bench.studies.steering, 1,000 random
# triples, mean rule) A+B-0.5C gave P@10 0.760 against 0.746 for A+B-1C and 0.749 for A+B alone; a
# full -1 nearly cancels a query it resembles (Rocchio's classic gamma is 0.15-0.25 of beta).
NEGATIVE_WEIGHT = 0.5


def parse_item_example(text: str, negative: bool = False) -> Example:
    """``"A"`` -> item A with weight 1, ``"B:0.5"`` -> weight 0.5; ``negative`` flips the sign
    (``--not C`` -> -NEGATIVE_WEIGHT, ``--not C:2`` -> -2). A colon not followed by a number is part
    of the id (``"sku:12a"`` is one id). ValueError for an empty id or a zero/negative written weight."""
    text = text.strip()
    m = _WEIGHT.match(text)
    if _NON_FINITE.match(text) or (m and not math.isfinite(float(m.group("w")))):
        raise ValueError(f"example {text!r}: the weight after ':' must be a finite number (e.g. {text.rsplit(':', 1)[0]}:0.5)")
    item, weight = (m.group("id"), float(m.group("w"))) if m else (text, NEGATIVE_WEIGHT if negative else 1.0)
    if not item:
        raise ValueError(f"example {text!r} names no item")
    if weight <= 0:
        raise ValueError(f"example {text!r}: write a positive weight (use --not for 'less like this')")
    return Example("item", item, -weight if negative else weight)


def check_weights(weights) -> np.ndarray:
    """(m,) float64 weights; ValueError unless at least one is positive and none is 0 or non-finite."""
    w = np.asarray(weights, np.float64).reshape(-1)
    if len(w) == 0 or not np.all(np.isfinite(w)) or np.any(w == 0):
        raise ValueError("every example needs a finite, non-zero weight")
    if not np.any(w > 0):
        raise ValueError("a query needs at least one positive example (negative weights only say 'less like this')")
    return w


def weighted_mean(vectors: np.ndarray, weights, normalise: bool = True) -> np.ndarray:
    """Rocchio query ``normalise(Σ wᵢ·v̂ᵢ)`` of (m, d) example vectors: (d,) float32, unit length.
    ``normalise=False`` (metrics where length matters: l2, l1) gives ``Σ wᵢ·vᵢ / Σ_{w>0} wᵢ`` of the
    raw vectors instead. ValueError when the weights are invalid (:func:`check_weights`) or the
    examples cancel out."""
    w = check_weights(weights)
    vectors = np.atleast_2d(np.asarray(vectors, np.float32))
    if len(vectors) != len(w):
        raise ValueError(f"{len(vectors)} vectors for {len(w)} weights")
    if not normalise:
        return ((w[:, None] * vectors.astype(np.float64)).sum(axis=0) / w[w > 0].sum()).astype(np.float32)
    q = (w[:, None] * l2_normalize(vectors).astype(np.float64)).sum(axis=0)
    if np.linalg.norm(q) < 1e-9:
        raise ValueError("the examples cancel each other out: nothing is left to search for")
    return l2_normalize(q.astype(np.float32))


def fuse_scores(scores: np.ndarray, weights) -> np.ndarray:
    """Best-score fusion (CombMAX) of per-example scores: ``scores`` is (m examples, n candidates)
    (higher = more similar), returns (n,) float64
    ``(max_{w>0} w·s − max_{w<0} |w|·s) / max_{w>0} w`` (no negatives: the second term is 0)."""
    w = check_weights(weights)
    scores = np.atleast_2d(np.asarray(scores, np.float64))
    if scores.shape[0] != len(w):
        raise ValueError(f"{scores.shape[0]} score rows for {len(w)} weights")
    pos, neg = w > 0, w < 0
    fused = (w[pos, None] * scores[pos]).max(axis=0)
    if neg.any():
        fused = fused - (-w[neg, None] * scores[neg]).max(axis=0)
    return fused / w[pos].max()


def cross_scores(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """(len(a), len(b)) float64 scores (higher = more similar, as ``SearchResult.score``) between the
    rows of ``a`` and ``b``: cosine (also for the log-likelihood metrics, whose rows are not points),
    the inner product for ``ip``, ``index.distances.distance_to_score`` of the distance for ``l2`` / ``l1``."""
    a = np.atleast_2d(np.asarray(a, np.float64))
    b = np.atleast_2d(np.asarray(b, np.float64))
    if metric == "cosine" or metric in SCORED_METRICS:
        return l2_normalize(a).astype(np.float64) @ l2_normalize(b).astype(np.float64).T
    if metric == "ip":
        return a @ b.T
    if metric == "l2":
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
        return distance_to_score(np.sqrt(np.maximum(sq, 0.0)), metric)
    return distance_to_score(np.abs(a[:, None, :] - b[None, :, :]).sum(axis=2), metric)


def fuse_hits(hits: Sequence[SearchResult], hit_vectors: np.ndarray, example_vectors: np.ndarray, weights,
              metric: str) -> list[SearchResult]:
    """Best-score fusion as a pipeline stage: ``hits`` (the union of every positive example's
    candidates, ids unique) with their (n, d) ``hit_vectors`` are scored against the (m, d)
    ``example_vectors`` (:func:`cross_scores`), fused (:func:`fuse_scores`) and sorted best first;
    each hit's ``score`` and ``score_parts["visual"]`` become the fused score."""
    if len(hits) == 0:
        return []
    fused = fuse_scores(cross_scores(example_vectors, hit_vectors, metric), weights)
    order = np.argsort(-fused, kind="stable")
    out = []
    for i in order:
        h = hits[int(i)]
        out.append(replace(h, score=float(fused[i]), score_parts={**h.score_parts, "visual": float(fused[i])}))
    return out

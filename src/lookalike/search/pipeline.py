"""The ranking pipeline: one query vector -> the top k hits a shop shows.

Stages, in this order (each a pure, unit-tested function; the pipeline only wires them):

1. **query** — one vector (the catalog embeds an item, image or vector), or several weighted
   examples (:mod:`lookalike.search.examples`): their Rocchio mean, or with ``fusion`` the union
   of each positive example's candidates rescored by best-score fusion (:func:`~lookalike.search.examples.fuse_hits`);
2. **candidates** — from the index, exact under filters (:func:`lookalike.search.engine.candidates`:
   the index searches only the ids the filters allow); when a later stage reorders or folds the
   list, the list is deeper than k: :func:`candidate_depth` = ``max(10·k, 200)`` (capped at the
   items that pass the filters), doubled until the top k is provably right (:func:`is_exact`);
3. **score parts** — ``visual`` (the index score) + each business rule
   (:func:`lookalike.search.boosts.apply_rules`) -> ``score``, and the order;
4. **group by product** (:func:`lookalike.search.grouping.group_hits`): one hit per product;
5. **collapse near duplicates** (:func:`lookalike.search.diversity.fold_duplicates`): a hit within
   the near-duplicate distance of a better one is folded into it (its ``duplicates``);
6. **diversity** (:func:`lookalike.search.diversity.diversify`): MMR re-ranks the best ``2·k``;
7. **cut to k**, ranks from 1; grouped hits list every other item of their product;
8. **flag weak hits** (:func:`lookalike.search.calibration.flag_weak`): for one image or vector
   query whose nearest item (plain search, before any αQE/DBA) scores below the catalog's
   calibrated threshold, every hit is ``weak`` (nothing close);
9. **explain** — with a colour-fused encoder (``effnet-lite0-colour``: vectors
   ``sqrt(1-w)·cnn ⊕ sqrt(w)·colour``) the visual score splits exactly into ``visual.shape`` =
   ``(1-w)·cos_cnn`` and ``visual.colour`` = ``w·cos_colour`` (:func:`colour_parts`), read from the
   k stored vectors (no model call).

Why deeper is enough: an item outside the candidate list has a visual score at most that of the
last candidate, ``v_last``, so its final score is at most ``v_last + Rules.max_gain()``. When at
least ``k`` (unpinned, unburied) hits — products, when grouping — already score that much, no
unseen item can enter the top k; otherwise the list doubles until that holds or the index runs
out of candidates.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Sequence

import numpy as np

from lookalike.data.store import Store
from lookalike.encoders.colour import COLOUR_DIM
from lookalike.index import IndexBackend
from lookalike.search.boosts import Rules, apply_rules
from lookalike.search.calibration import ScoreThreshold, flag_weak
from lookalike.search.diversity import reorder
from lookalike.search.examples import fuse_hits
from lookalike.search.engine import candidates
from lookalike.search.filters import Filter
from lookalike.search.grouping import column_value, complete_groups, group_hits
from lookalike.search.results import SearchResult

DEPTH_FACTOR = 10    # candidates per requested hit when a stage reorders or folds the list
MIN_DEPTH = 200


@dataclass(frozen=True)
class SearchOptions:
    """What a search asks for beyond its query. ``where`` (column -> value or list of values)
    and ``filters`` (:class:`~lookalike.search.filters.Filter`, validated by the caller) must all
    hold; ``rules`` rerank (:mod:`lookalike.search.boosts`); ``group_by`` folds hits to one per
    product (``variant``: the column saying which variant matched); ``min_score`` drops hits whose
    visual score is lower."""

    k: int = 10
    where: dict[str, Any] | None = None
    filters: tuple[Filter, ...] = ()
    rules: Rules = field(default_factory=Rules)
    group_by: str | None = None
    variant: str | None = None
    min_score: float | None = None
    encoder: str | None = None      # whose vectors the index holds (for the colour split, collapse, MMR)
    colour_weight: float = 0.0      # > 0: they are colour-fused at this weight (encoders.colour.fused_weight)
    diversity: float = 0.0          # MMR λ (search.diversity); 0 = off
    collapse: float | None = None   # fold near duplicates within this cosine distance; None = off
    fusion: tuple[np.ndarray, np.ndarray] | None = None   # (example vectors, weights): best-score fusion
    threshold: ScoreThreshold | None = None               # "no close match" below it (search.calibration)
    best_score: float | None = None                       # the query's nearest item's plain score

    def __post_init__(self):
        check_min_score(self.min_score)

    def reorders(self) -> bool:
        """Whether a stage after retrieval may reorder or fold the candidates (so they run deeper)."""
        return (bool(self.rules) or self.group_by is not None or self.diversity > 0 or self.collapse is not None
                or self.fusion is not None)


def check_min_score(min_score: float | None) -> None:
    """Raise ValueError unless ``min_score`` is None or a score in [-1, 1] (cosine scores; ``1/(1+d)`` for
    L2/L1). A NaN threshold compared False with every score: ``--min-score nan`` kept every hit, and
    5 or inf answered "no results" instead of saying the threshold cannot be met."""
    if min_score is None:
        return
    try:
        ok = -1.0 <= float(min_score) <= 1.0   # False for NaN
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"min_score is a score between -1 and 1 (higher = more similar), not {min_score!r}")


def candidate_depth(k: int, available: int) -> int:
    """Candidates fetched first when a later stage reorders: ``max(10·k, 200)``, at most ``available``."""
    return max(1, min(available, max(DEPTH_FACTOR * k, MIN_DEPTH)))


def is_exact(ranked: Sequence[SearchResult], k: int, bound: float, rules: Rules) -> bool:
    """Whether the top ``k`` of ``ranked`` (the list after stages 3-4) cannot change with more
    candidates: every unseen item scores at most ``bound``, so it is enough that ``k`` minus the
    pinned hits of the unpinned, unburied hits score at least ``bound``."""
    pinned, buried = set(rules.pin), set(rules.bury)
    needed = k - sum(h.id in pinned for h in ranked[:k])
    sure = sum(1 for h in ranked if h.id not in pinned and h.id not in buried and h.score >= bound)
    return sure >= needed


def rank(hits: Sequence[SearchResult], options: SearchOptions, matches: dict[str, set[str]],
         now: datetime | None = None) -> list[SearchResult]:
    """Stages 3-4 on a candidate list (best visual first): score parts and rules, then one hit
    per product. Pure."""
    ranked = apply_rules(hits, options.rules, matches, now) if options.rules else list(hits)
    if options.group_by:
        ranked = group_hits(ranked, options.group_by, options.variant)
    return ranked


def run_pipeline(store: Store, index: IndexBackend, query: np.ndarray, metric: str, options: SearchOptions,
                 exclude: set[int] | None = None, now: datetime | None = None) -> list[SearchResult]:
    """The top ``options.k`` hits for ``query`` (d,) float32, never one of the ``exclude`` rowids
    (the query item or its whole product, example items). Fewer than k when fewer items pass the
    filters; never padding. With ``options.threshold`` and ``options.best_score`` (the query's
    nearest item by a plain search), every hit is ``weak`` when that is below the threshold.
    ValueError for k < 1."""
    if options.k < 1:
        raise ValueError("k must be at least 1")
    exclude = set(exclude or ())
    allowed = store.rowids_where(options.where, options.filters) if options.where or options.filters else None
    available = len(allowed) if allowed is not None else len(index)
    if available == 0:
        return []
    rules = options.rules
    depth = candidate_depth(options.k, available) if options.reorders() else options.k
    pins = _pinned(store, index, query, metric, rules.pin, allowed, exclude)
    while True:
        if options.fusion is not None:
            hits, exhausted = _fused(store, index, metric, options, depth, allowed, exclude), True
        else:
            hits, exhausted = candidates(store, index, query, depth, metric, allowed, exclude, options.min_score)
        seen = {h.id for h in hits}
        pool = hits + [p for p in pins if p.id not in seen]
        matches = {b.name: store.matching([h.id for h in pool], b.condition) for b in rules.boosts}
        ranked = rank(pool, options, matches, now)
        if not options.reorders() or exhausted or not hits or depth >= available:
            break
        bound = hits[-1].score_parts["visual"] + rules.max_gain()
        if is_exact(ranked, options.k, bound, rules):
            break
        depth = min(depth * 2, available)
    vectors_of = lambda ids: store.vectors_of(ids, options.encoder)   # noqa: E731 (stages 5-6 and 8)
    if options.diversity > 0 or options.collapse is not None:
        ranked = reorder(ranked, vectors_of, options.k, options.diversity, options.collapse, metric)
    top = [h if h.rank == i + 1 else replace(h, rank=i + 1) for i, h in enumerate(ranked[:options.k])]
    if options.group_by:
        top = complete_groups(top, options.group_by, _product_members(store, top, options))
    if options.threshold is not None and options.best_score is not None:
        top = flag_weak(top, options.threshold, options.best_score)
    if options.colour_weight > 0 and options.encoder and top:
        top = _explain_colour(store, top, query, options.encoder)
    return top


def colour_parts(query: np.ndarray, vectors: np.ndarray, colour_dim: int = COLOUR_DIM) -> tuple[np.ndarray, np.ndarray]:
    """The two terms of the cosine between a query (d,) and colour-fused item vectors (n, d)
    (:func:`lookalike.encoders.colour.fuse_parts`: unit rows ``sqrt(1-w)·cnn ⊕ sqrt(w)·colour``):
    ``(1-w)·cos_cnn`` (the CNN block's dot product) and ``w·cos_colour`` (the last ``colour_dim``
    values'); they sum to the cosine. Returns two (n,) float64 arrays."""
    q = np.asarray(query, np.float64).ravel()
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    x = np.asarray(vectors, np.float64)
    return x[:, :-colour_dim] @ q[:-colour_dim], x[:, -colour_dim:] @ q[-colour_dim:]


def _explain_colour(store: Store, hits: list[SearchResult], query: np.ndarray, encoder: str) -> list[SearchResult]:
    """``visual.shape`` and ``visual.colour`` in each hit's score parts, from its stored vector."""
    if all("visual.colour" in h.score_parts for h in hits):
        return hits   # a colour window split every score already: nothing to read
    rowids, matrix = store.matrix(encoder)
    found = {item_id: item.rowid for item_id, item in store.get_many([h.id for h in hits]).items()}
    positions = np.searchsorted(rowids, [found.get(h.id, -1) for h in hits])
    positions = np.clip(positions, 0, max(len(rowids) - 1, 0))
    valid = [h.id in found and len(rowids) and rowids[p] == found[h.id] for h, p in zip(hits, positions)]
    if not any(valid) or matrix.shape[1] <= COLOUR_DIM:
        return hits
    shape, colour = colour_parts(query, np.asarray(matrix[positions]))
    out = []
    for hit, ok, s, c in zip(hits, valid, shape, colour):
        parts = dict(hit.score_parts)
        if ok and "visual.colour" not in parts:   # a colour window already split its score
            # shape = visual - colour: the same as the CNN term on plain vectors, and still exact under
            # αQE/DBA re-ranking, which leaves the colour part alone (search.expansion, keep=)
            visual = parts.get("visual", float(s) + float(c))
            parts.update({"visual.shape": float(visual - c), "visual.colour": float(c)})
        out.append(replace(hit, score_parts=parts))
    return out


def _fused(store: Store, index: IndexBackend, metric: str, options: SearchOptions, depth: int,
           allowed: np.ndarray | None, exclude: set[int]) -> list[SearchResult]:
    """Stage 1-2 of a best-score-fusion query: the union of the ``depth`` best candidates of each
    positive example, rescored against every example (:func:`~lookalike.search.examples.fuse_hits`)."""
    vectors, weights = options.fusion
    union: dict[str, SearchResult] = {}
    for vec in np.asarray(vectors)[np.asarray(weights) > 0]:
        for hit in candidates(store, index, vec, depth, metric, allowed, exclude)[0]:
            union.setdefault(hit.id, hit)
    pool = list(union.values())
    if not pool:
        return []
    fused = fuse_hits(pool, store.vectors_of([h.id for h in pool], options.encoder), vectors, weights, metric)
    if options.min_score is not None:
        fused = [h for h in fused if h.score >= options.min_score]
    return fused


def _pinned(store: Store, index: IndexBackend, query: np.ndarray, metric: str, pin: Sequence[str],
            allowed: np.ndarray | None, exclude: set[int]) -> list[SearchResult]:
    """Pinned items that pass the filters, scored against the query by the index itself (a pin
    outside the candidate list still shows its true visual score)."""
    if not pin:
        return []
    found = store.rowids_where({"id": list(pin)})
    if allowed is not None:
        found = np.intersect1d(found, allowed)
    found = np.array([r for r in found if int(r) not in exclude], dtype=np.int64)
    if len(found) == 0:
        return []
    return candidates(store, index, query, len(found), metric, found)[0]


def _product_members(store: Store, hits: Sequence[SearchResult], options: SearchOptions) -> dict[str, list[str]]:
    """Product value -> ids of every item of that product passing the filters, in rowid order."""
    values = sorted({v for v in (column_value(h, options.group_by) for h in hits) if v is not None})
    if not values:
        return {}
    members: dict[str, list[str]] = {}
    for item in store.items(options.where, filters=[*options.filters, Filter(options.group_by, "in", tuple(values))]):
        value = column_value(item, options.group_by)
        if value in values:
            members.setdefault(value, []).append(item.id)
    return members

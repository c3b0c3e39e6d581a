"""Re-ranking without labels: average query expansion (αQE) and database-side augmentation (DBA).

Both are the standard instance-retrieval tricks of Radenović, Tolias & Chum, "Fine-tuning CNN
Image Retrieval with No Human Annotation" (TPAMI 2018, §5: αQE and αDBA), on unit (cosine)
vectors, with weights ``w(a, b) = max(0, a·b)^α``:

* **αQE** (query side, at search time): the query ``q`` is replaced by
  ``q' = normalize(q + Σ_{i=1..n} w(q, d_i) d_i)`` over its top ``n`` results ``d_i``, then searched
  again. ``α = 0`` is plain average query expansion (Chum et al. 2007).
* **DBA** (database side, a vector transform): every item ``x_j`` is replaced by
  ``d_j = normalize(x_j + Σ_{i=1..k} w(x_j, x_i) x_i)`` over its top ``k`` neighbours ``x_i``
  (itself excluded; its own weight is ``1 = (x_j·x_j)^α``). Queries stay raw vectors (an uploaded
  photo and the same catalog item query alike); with both, αQE averages the augmented vectors.
* **fused vectors** (``keep``): an encoder's trailing values that re-ranking leaves as they are
  (``Encoder.unexpanded_dims``: the colour part of ``effnet-lite0-colour``). The formulas run on the
  CNN part only, so the colour weight keeps its meaning; averaging neighbours' colour histograms
  (which may be other colours) blurred the item's own colour and cost same-colour precision
  (clothing-small: same-kind-and-colour P@1 0.442 -> 0.424 with whole-vector αQE+DBA, vs 0.49
  with the colour part kept; README "Quality without labels").
* **centring** (``centre=1``, before both): the catalog's mean vector is subtracted from every
  item and query and the rows re-normalised (:mod:`lookalike.search.whitening`: each block of a
  fused vector on its own), so cosines measure what differs between items rather than what all
  photos of the catalog share. Fitted on the catalog's stored vectors, without labels.

:class:`Expansion` names a setting (``"qe=2,dba=5,alpha=3"``, ``"none"``); :func:`augment_database`
and :func:`expand_queries` are the formulas; :func:`expanded_neighbours` is the exact leave-one-out
ranking the evaluation uses — the query item is removed from the gallery *before* the gallery is
augmented, so no item's DBA vector carries the query into its own ranking; :class:`ExpandedSearch`
applies a setting to one catalog search (the DBA index is built once per data version, in memory).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lookalike.data.artifacts import encoder_key
from lookalike.data.store import Store
from lookalike.index import IndexBackend, make_index
from lookalike.index.distances import distance_to_score, exact_knn, l2_normalize
from lookalike.search.engine import run_search
from lookalike.search.results import SearchResult
from lookalike.search.whitening import Whitening, WhiteningConfig

DEFAULT_ALPHA = 3.0  # Radenović et al. 2018 use α = 3 for both αQE and αDBA
#: catalogs above this many items search without DBA (its exact neighbour pass is O(n²) per data version)
MAX_DBA_ITEMS = 50_000
#: after writes, DBA re-augments only the added / changed rows (O(changed·n)) and keeps the others'
#: vectors, until the rows touched since the last full pass exceed this share of the catalog; then
#: it recomputes everything (a continuously written catalog must not pay O(n²) on every write)
DBA_REFRESH_SHARE = 0.1


@dataclass(frozen=True)
class Expansion:
    """A re-ranking setting: ``qe`` neighbours averaged into the query (0 = off), ``dba``
    neighbours averaged into every item (0 = off), weight exponent ``alpha`` (>= 0), ``centre``:
    subtract the catalog's mean vector first (:mod:`lookalike.search.whitening`), ``window``: on a
    colour-fused encoder, rank by the CNN part alone (αQE's neighbours too) and let the colour part,
    at weight ``colour``, re-order only the first ``window`` hits (:class:`ColourWindow`; 0 = off:
    the fused vectors rank as they are).

    Written ``"centre=1,qe=2,dba=5,alpha=3,window=10,colour=0.3"`` (parts at their default may be
    left out) or ``"none"``."""

    qe: int = 0
    dba: int = 0
    alpha: float = DEFAULT_ALPHA
    centre: bool = False
    window: int = 0
    colour: float = 0.0

    def __post_init__(self):
        if not (isinstance(self.qe, int) and isinstance(self.dba, int)) or self.qe < 0 or self.dba < 0:
            raise ValueError(f"qe and dba are neighbour counts >= 0, not {self.qe!r} / {self.dba!r}")
        if not (np.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, not {self.alpha!r}")
        if not isinstance(self.centre, bool):
            raise ValueError(f"centre is on or off (1 / 0), not {self.centre!r}")
        if not isinstance(self.window, int) or self.window < 0:
            raise ValueError(f"window is a number of hits >= 0, not {self.window!r}")
        if not (np.isfinite(self.colour) and 0 <= self.colour < 1):
            raise ValueError(f"colour is a weight in [0, 1), not {self.colour!r}")
        if self.colour and not self.window:
            raise ValueError("colour weighs the colour part inside the window: give window=N too")

    @property
    def active(self) -> bool:
        return self.qe > 0 or self.dba > 0 or self.centre or self.window > 0

    def without_dba(self) -> "Expansion":
        """The setting for catalogs above :data:`MAX_DBA_ITEMS`: αQE and the colour window only (no
        DBA, no centring, both of which hold a transformed copy of the whole catalog in memory)."""
        return Expansion(qe=self.qe, alpha=self.alpha, window=self.window, colour=self.colour)

    @classmethod
    def parse(cls, text: "str | Expansion | None") -> "Expansion":
        """``"qe=2,dba=5,alpha=3"`` / ``"none"`` / ``""`` / None -> Expansion. ValueError otherwise."""
        if isinstance(text, Expansion):
            return text
        if text is None or str(text).strip().lower() in ("", "none", "off", "0"):
            return cls()
        values: dict[str, Any] = {}
        for part in str(text).split(","):
            key, eq, value = (p.strip() for p in part.partition("="))
            if not eq or key not in ("qe", "dba", "alpha", "centre", "window", "colour") or key in values:
                raise ValueError(f"invalid re-ranking {text!r}: write e.g. centre=1,qe=2,dba=5,alpha=3 or none")
            if key == "centre":
                if value not in ("0", "1"):
                    raise ValueError(f"invalid re-ranking {text!r}: centre is 1 or 0, not {value!r}")
                values[key] = value == "1"
                continue
            try:
                values[key] = float(value) if key in ("alpha", "colour") else int(value)
            except ValueError:
                raise ValueError(f"invalid re-ranking {text!r}: {key} takes a number, not {value!r}") from None
        return cls(**values)

    def __str__(self) -> str:
        if not self.active:
            return "none"
        parts = ["centre=1"] if self.centre else []
        parts += [f"qe={self.qe}"] if self.qe else []
        parts += [f"dba={self.dba}"] if self.dba else []
        parts += [f"alpha={self.alpha:g}"] if self.qe or self.dba else []
        parts += [f"window={self.window}"] if self.window else []
        parts += [f"colour={self.colour:g}"] if self.colour else []
        return ",".join(parts)


def _weights(similarities: np.ndarray, alpha: float) -> np.ndarray:
    return np.maximum(np.asarray(similarities, np.float32), 0.0) ** np.float32(alpha)


def _check_metric(metric: str) -> None:
    if metric != "cosine":
        raise ValueError(f"αQE/DBA re-ranking works on cosine vectors, not {metric!r}")


def _blocks(vectors: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Unit rows split into (the expanded block scaled to unit rows, its length per row, the kept
    trailing ``keep`` values or None): ``row = [length · block, kept]``."""
    x = l2_normalize(np.asarray(vectors, np.float32))
    if keep <= 0:
        return x, np.ones(len(x), np.float32), None
    if keep >= x.shape[1]:
        raise ValueError(f"keep={keep} leaves nothing to expand in {x.shape[1]}-d vectors")
    head = x[:, :-keep]
    length = np.linalg.norm(head, axis=1).astype(np.float32)
    return head / np.maximum(length, 1e-12)[:, None], length, np.ascontiguousarray(x[:, -keep:])


def _join(block: np.ndarray, length: np.ndarray, kept: np.ndarray | None) -> np.ndarray:
    return block if kept is None else np.concatenate([block * length[:, None], kept], axis=1).astype(np.float32)


def cnn_only(query: np.ndarray, keep: int) -> np.ndarray:
    """A fused query (d,) with its trailing ``keep`` colour values zeroed: searched on fused
    vectors it ranks by the CNN part alone (every row's CNN part has the same length)."""
    out = np.array(query, np.float32, copy=True)
    if keep > 0:
        out[..., -keep:] = 0.0
    return out


def gallery_rows(matrix: np.ndarray, position: dict[int, int]):
    """``rowids -> (n, d)`` unit rows of ``matrix`` (a gallery and its rowid -> row map)."""
    return lambda rowids: l2_normalize(np.asarray(matrix[[position[int(r)] for r in rowids]], np.float32))


def augment_database(vectors: np.ndarray, k: int, alpha: float = DEFAULT_ALPHA, keep: int = 0) -> np.ndarray:
    """DBA: (n, d) vectors -> (n, d) float32 unit rows ``normalize(x_j + Σ_{i≤k} max(0, x_j·x_i)^α x_i)``
    over each row's ``k`` nearest other rows (cosine, :func:`~lookalike.index.distances.exact_knn`).
    ``k = 0`` returns the unit rows unchanged.

    ``keep`` trailing values (a fused encoder's colour part, ``Encoder.unexpanded_dims``) are left
    as they are: the formula runs on the leading block alone (its own unit rows, neighbours and
    weights), which keeps its length in the row — so the fused cosine stays
    ``(1-w)·cos(augmented CNN parts) + w·cos(colour parts)``."""
    block, length, kept = _blocks(vectors, keep)
    if k <= 0 or len(block) < 2:
        return _join(block, length, kept)
    distances, neighbours = exact_knn(block, block, k, "cosine", exclude=np.arange(len(block)))
    weights = np.where(neighbours >= 0, _weights(1.0 - distances, alpha), 0.0).astype(np.float32)
    return _join(l2_normalize(_weighted_sum(block, neighbours, weights)), length, kept)


def augment_rows(vectors: np.ndarray, rows: np.ndarray, k: int, alpha: float = DEFAULT_ALPHA,
                 keep: int = 0) -> np.ndarray:
    """DBA of just the rows at positions ``rows`` (m,) of ``vectors`` (n, d), their neighbours taken
    among all n rows: (m, d) float32, equal to ``augment_database(vectors, k, alpha, keep)[rows]``
    at O(m·n) instead of O(n²)."""
    block, length, kept = _blocks(vectors, keep)
    rows = np.asarray(rows, np.int64)
    sub = (block[rows], length[rows], None if kept is None else kept[rows])
    if k <= 0 or len(block) < 2 or len(rows) == 0:
        return _join(*sub)
    distances, neighbours = exact_knn(block[rows], block, k, "cosine", exclude=rows)
    weights = np.where(neighbours >= 0, _weights(1.0 - distances, alpha), 0.0).astype(np.float32)
    return _join(l2_normalize(_weighted_sum(block, neighbours, weights, rows)), sub[1], sub[2])


def _weighted_sum(x: np.ndarray, neighbours: np.ndarray, weights: np.ndarray,
                  rows: np.ndarray | None = None) -> np.ndarray:
    """``x_j + Σ_i weights[j, i] x[neighbours[j, i]]`` for every row j (or the rows ``rows``, whose
    neighbours / weights these are), one neighbour rank at a time (n x d memory)."""
    out = x.copy() if rows is None else x[rows].astype(np.float32)
    for rank in range(neighbours.shape[1]):
        out += weights[:, rank, None] * x[np.clip(neighbours[:, rank], 0, None)]
    return out


def expand_queries(queries: np.ndarray, neighbour_vectors: np.ndarray, alpha: float = DEFAULT_ALPHA,
                   keep: int = 0) -> np.ndarray:
    """αQE: (m, d) queries and (m, n, d) the vectors of their top-n results -> (m, d) unit rows
    ``normalize(q + Σ_i max(0, q·d_i)^α d_i)`` (queries normalised first; zero rows add nothing).
    ``keep``: as :func:`augment_database` (the query keeps its own trailing values)."""
    queries = np.atleast_2d(np.asarray(queries, np.float32))
    q, length, kept = _blocks(queries, keep)
    found = np.asarray(neighbour_vectors, np.float32).reshape(len(q), -1, queries.shape[1])
    if keep > 0:
        found = found[:, :, :-keep]
        found = found / np.maximum(np.linalg.norm(found, axis=2, keepdims=True), 1e-12)
    weights = _weights(np.einsum("md,mnd->mn", q, found), alpha)
    return _join(l2_normalize(q + np.einsum("mn,mnd->md", weights, found)), length, kept)


def expanded_neighbours(vectors: np.ndarray, k: int, expansion: "Expansion | str | None",
                        pool: np.ndarray | None = None, metric: str = "cosine", batch: int = 1024,
                        keep: int = 0) -> np.ndarray:
    """Leave-one-out ranking with re-ranking, for the evaluation: row q holds the positions (into
    ``vectors``) of the k best items for query ``pool[q]`` among the rest of ``pool`` (-1 padded),
    like :func:`lookalike.evaluation.retrieval.nearest_neighbours`.

    Exact, without leaking the query: for query q the gallery is ``pool`` without q, and an item
    whose DBA neighbours included q is augmented with its next neighbour instead (its ``k+1``-th),
    so the scores are those a separate catalog without q would give; αQE then expands the raw
    query with its top ``qe`` augmented results. ``keep``: as :func:`augment_database`. With
    ``centre`` the catalog mean is fitted on the ``pool`` rows (what a search of that catalog centres
    on; one item's share of the mean is negligible) and subtracted first.
    ValueError for a metric other than cosine."""
    setting = Expansion.parse(expansion)
    pool = np.arange(len(vectors)) if pool is None else np.asarray(pool, np.int64)
    if not setting.active:
        _, local = exact_knn(vectors[pool], vectors[pool], k, metric, exclude=np.arange(len(pool)))
        return np.where(local >= 0, pool[np.clip(local, 0, None)], -1)
    _check_metric(metric)
    vectors = np.asarray(vectors, np.float32)
    if setting.centre:
        vectors = Whitening(WhiteningConfig(keep=keep)).fit(vectors[pool]).transform(vectors)
    x, length, kept = _blocks(vectors[pool], keep)
    m = len(x)
    kd = min(setting.dba, m - 2) if setting.dba else 0
    if kd > 0:
        # top k+1 neighbours of every item: the (k+1)-th stands in when the query is among the k
        dist, nbr = exact_knn(x, x, kd + 1, "cosine", exclude=np.arange(m))
        w = _weights(1.0 - dist, setting.alpha)
        sums = _weighted_sum(x, nbr[:, :kd], w[:, :kd])
        # pairs (j, p): item j's p-th DBA neighbour q = nbr[j, p] -> j's vector without q
        pair_j = np.repeat(np.arange(m), kd)
        pair_p = np.tile(np.arange(kd), m)
        pair_q = nbr[pair_j, pair_p]
        spare = nbr[pair_j, kd]
        w_out, w_in = w[pair_j, pair_p], w[pair_j, kd]
        fixed = sums[pair_j] - w_out[:, None] * x[pair_q] + w_in[:, None] * x[spare]
        fixed = l2_normalize(fixed)
        order = np.argsort(pair_q, kind="stable")
        pair_q, pair_j, fixed = pair_q[order], pair_j[order], fixed[order]
        starts = np.searchsorted(pair_q, np.arange(m + 1))
        gallery = l2_normalize(sums)
    else:
        gallery, fixed, pair_j, starts = x, None, None, None

    out = np.full((m, k), -1, np.int64)
    n_qe = min(setting.qe, m - 1)
    # the colour window ranks by the CNN block alone (αQE's neighbours too) and needs a kept colour part
    window = setting.window if kept is not None else 0
    kept_len = None if kept is None else np.sqrt(np.maximum(1.0 - length ** 2, 0.0))
    for lo in range(0, m, batch):
        rows = np.arange(lo, min(lo + batch, m))
        queries = x[rows]
        # the kept block's cosines do not change with the expansion: length_q·length_j·(block cosine) + kept·kept
        static = None if kept is None else kept[rows] @ kept.T

        def scores_for(query_rows: np.ndarray) -> np.ndarray:
            s = query_rows @ gallery.T
            if fixed is not None:  # the query's reverse DBA neighbours, re-augmented without it
                for r, q in enumerate(rows):
                    a, b = starts[q], starts[q + 1]
                    if b > a:
                        s[r, pair_j[a:b]] = fixed[a:b] @ query_rows[r]
            if static is not None and not window:
                s = s * (length[rows, None] * length[None, :]) + static
            s[np.arange(len(rows)), rows] = -np.inf  # never itself
            return s

        scores = scores_for(queries)
        if n_qe > 0:
            top = _best(scores, n_qe)
            found = gallery[top]  # (b, n, d), patched where a neighbour's vector left q out
            if fixed is not None:
                for r, q in enumerate(rows):
                    a, b = starts[q], starts[q + 1]
                    for j, vec in zip(pair_j[a:b], fixed[a:b]):
                        hit = np.nonzero(top[r] == j)[0]
                        if len(hit):
                            found[r, hit[0]] = vec
            scores = scores_for(expand_queries(queries, found, setting.alpha))
        if window:   # the CNN part's order; the colour part re-orders its first `window` hits
            best = _best(scores, min(max(k, window), m - 1))
            cnn = np.take_along_axis(scores, best, 1)
            colour = np.take_along_axis(static, best, 1) / np.maximum(kept_len[rows, None] * kept_len[best], 1e-12)
            order, _, _ = window_order(cnn, colour, window, setting.colour)
            best = np.take_along_axis(best, order, 1)[:, :min(k, m - 1)]
        else:
            best = _best(scores, min(k, m - 1))
        out[rows, :best.shape[1]] = pool[best]
    return out


def window_order(cnn: np.ndarray, colour: np.ndarray, window: int, weight: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The colour window on ranked candidate lists: ``cnn`` (m, n) cosines of the CNN parts in the
    CNN order (best first) and ``colour`` (m, n) cosines of the colour parts of the same items ->
    (order (m, n) positions into the lists, scores (m, n), colour terms (m, n)), best first.

    The first ``window`` candidates are re-ordered by ``(1-w)·cos_cnn + w·cos_colour`` (their
    score; colour term ``w·cos_colour``); the rest keep the CNN order and score ``(1-w)·cos_cnn``
    (colour not compared, term 0), capped at the window's lowest score so the scores never rise
    down the list (what ``min_score`` and the pipeline's exactness bound assume). A two-stage
    ranking like a search engine's rescoring window (e.g. Elasticsearch's ``rescore``): the CNN part
    says which items are the same kind of product, the colour part which of those come first.
    Measured in README "Quality without labels"."""
    cnn = np.atleast_2d(np.asarray(cnn, np.float64))
    colour = np.atleast_2d(np.asarray(colour, np.float64))
    m, n = cnn.shape
    w = min(max(int(window), 0), n)
    fused = (1.0 - weight) * cnn[:, :w] + weight * colour[:, :w]
    head = np.argsort(-fused, axis=1, kind="stable")
    head_scores = np.take_along_axis(fused, head, 1)
    floor = head_scores[:, -1:] if w else np.full((m, 1), np.inf)
    tail = np.minimum((1.0 - weight) * cnn[:, w:], floor)
    order = np.concatenate([head, np.broadcast_to(np.arange(w, n), (m, n - w))], axis=1)
    terms = np.concatenate([weight * np.take_along_axis(colour[:, :w], head, 1), np.zeros((m, n - w))], axis=1)
    return order, np.concatenate([head_scores, tail], axis=1), terms


class ColourWindow:
    """An index over colour-fused vectors (``[sqrt(1-w)·cnn, sqrt(w)·colour]`` rows, ``keep`` colour
    values) that ranks by the CNN part alone and lets the colour part, at ``weight``, re-order the
    first ``window`` hits (:func:`window_order`): the ``window=N,colour=W`` part of a re-ranking.

    ``search(queries, k, allowed_ids=None, exclude=None)`` is the index's search (distances
    ``1 - score``, ids -1 padded) over ``index`` with the queries' colour part zeroed, then the window
    read from ``vectors_of(rowids) -> (n, d)`` (the vectors the index holds). ``exclude``: one set of
    rowids per query (default: the ``exclude`` given here, for every query) that never take a
    window place — the caller drops them (they follow the window, in the CNN order). After a search,
    ``colour_terms`` (m, k) holds each hit's colour term and ``last_colour`` maps the first query's
    rowids to theirs (``visual.colour`` of the hits)."""

    def __init__(self, index: IndexBackend, vectors_of, keep: int, window: int, weight: float,
                 exclude: "set[int] | None" = None):
        if keep <= 0:
            raise ValueError("a colour window needs colour-fused vectors (keep > 0)")
        self.index, self.vectors_of, self.keep = index, vectors_of, keep
        self.window, self.weight, self.exclude = int(window), float(weight), set(exclude or ())
        self.metric = "cosine"
        self.colour_terms: np.ndarray | None = None
        self.last_colour: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self.index)

    def search(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None,
               exclude: "Sequence[set[int]] | None" = None) -> tuple[np.ndarray, np.ndarray]:
        block, length, kept = _blocks(np.atleast_2d(np.asarray(queries, np.float32)), self.keep)
        m = len(block)
        exclude = [self.exclude] * m if exclude is None else [set(e) for e in exclude]
        extra = max((len(e) for e in exclude), default=0)
        _, found = self.index.search(_join(block, length, np.zeros_like(kept)), max(k, self.window + extra),
                                     allowed_ids)
        distances = np.full((m, k), np.inf, np.float32)
        ids = np.full((m, k), -1, np.int64)
        self.colour_terms = np.zeros((m, k), np.float32)
        colour_q = l2_normalize(kept)
        for j in range(m):
            rowids = found[j][found[j] >= 0]
            if not len(rowids):
                continue
            # excluded rows never take a window place: they follow it, still in the CNN order
            out = np.array([r in exclude[j] for r in rowids.tolist()])
            rowids = np.concatenate([rowids[~out], rowids[out]])
            g_block, _, g_kept = _blocks(np.asarray(self.vectors_of(rowids), np.float32), self.keep)
            # row-wise float64 dot products: the same bits however many candidates were fetched (a matrix
            # product's rounding depends on its shape; the similar-items table must equal live search)
            cnn = (g_block.astype(np.float64) * block[j].astype(np.float64)).sum(axis=1)
            colour = (l2_normalize(g_kept).astype(np.float64) * colour_q[j].astype(np.float64)).sum(axis=1)
            order, scores, terms = window_order(cnn[None], colour[None], min(self.window, int((~out).sum())),
                                                self.weight)
            order, scores, terms = order[0][:k], scores[0][:k], terms[0][:k]
            ids[j, :len(order)] = rowids[order]
            distances[j, :len(order)] = 1.0 - scores
            self.colour_terms[j, :len(order)] = terms
        self.last_colour = {int(r): float(c) for r, c in zip(ids[0], self.colour_terms[0]) if r >= 0} if m else {}
        return distances, ids


def _same_centring(a: "Whitening | None", b: "Whitening | None") -> bool:
    if a is None or b is None:
        return a is b
    return a.n_fit_ == b.n_fit_ and np.array_equal(a.mean_, b.mean_)


def _best(scores: np.ndarray, k: int) -> np.ndarray:
    """Column positions of the k highest scores per row, best first (ties: lower column first)."""
    if k >= scores.shape[1]:
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]
    part = np.sort(np.argpartition(-scores, k - 1, axis=1)[:, :k], axis=1)
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


def _row_checksums(matrix: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """(n,) uint64 checksum of each float32 row's bits, which tells an unchanged vector from a
    rewritten one. Integer sums are exact whatever the row's position: a float projection
    (``matrix @ probe``) differs in its last bits when a removal shifts the rows and BLAS blocks
    them differently, which made unchanged rows look rewritten (and DBA re-augment them)."""
    out = np.empty(len(matrix), np.uint64)
    for start in range(0, len(matrix), chunk):
        bits = np.ascontiguousarray(matrix[start:start + chunk], np.float32).view(np.uint32)
        out[start:start + len(bits)] = (bits.sum(1, dtype=np.uint64) * np.uint64(1_000_003)
                                        + bits[:, ::7].sum(1, dtype=np.uint64))
    return out


class ExpandedSearch:
    """Applies an :class:`Expansion` to one catalog search. Keeps, per (encoder, data version,
    DBA and centring setting), the gallery the expansion reads (rowids, the centred and / or
    augmented matrix, else the store's memory-mapped one, normalised row by row when read) and,
    with DBA or centring, a flat index over those vectors (built in memory on first use: one exact
    kNN pass; after a write, only the rows it added or changed, see :data:`DBA_REFRESH_SHARE`).
    The centring is the catalog's saved :class:`~lookalike.search.whitening.Whitening`
    (``<catalog>/artifacts/whitening/<encoder key>/``), refitted when the catalog has changed size
    by :data:`~lookalike.search.whitening.REFIT_SHARE` since it was fitted."""

    def __init__(self, store: Store, backend: str = "faiss"):
        self._store = store
        self.backend = backend
        self._cache: dict[tuple, tuple] = {}  # key -> (rowids, matrix, position, DBA index, DBA stamp)
        self._lock = threading.Lock()

    def _gallery(self, encoder: str, expansion: Expansion, keep: int):
        """(rowids, gallery matrix, rowid -> row, own index or None, centring or None)."""
        version = self._store.version(encoder)
        setting = (encoder, expansion.dba, expansion.alpha if expansion.dba else None, keep, expansion.centre)
        key = (setting[0], version, *setting[1:])
        with self._lock:
            if key not in self._cache:
                rowids, matrix = self._store.matrix(encoder)
                rowids = np.asarray(rowids, np.int64)
                # without DBA or centring the gallery is the unit rows: read (and normalised) a few at a time
                # from the shared memory map at search time, never copied whole (610 MB per worker at 100k x 1525)
                index, stamp, centring = None, None, None
                if expansion.centre and len(rowids) >= 2:
                    centring = self._centring(encoder, matrix, keep)
                    matrix = centring.transform(matrix)
                if expansion.dba:
                    previous = next((v for k, v in self._cache.items() if (k[0], *k[2:]) == setting), None)
                    if previous is not None and not _same_centring(previous[5], centring):
                        previous = None   # refitted: every centred row moved
                    matrix, stamp = self._augmented(matrix, rowids, expansion, keep, previous)
                if expansion.dba or centring is not None:
                    # the transformed vectors need their own index (exact: a catalog's worth)
                    index = make_index("faiss", matrix.shape[1], "cosine")
                    if len(rowids):
                        index.add(rowids, matrix)
                for old in [k for k in self._cache if k[0] == encoder and k[1] != version]:
                    del self._cache[old]
                self._cache[key] = (rowids, matrix, {int(r): i for i, r in enumerate(rowids)}, index, stamp,
                                    centring)
            entry = self._cache[key]
            return (*entry[:4], entry[5])

    def _centring(self, encoder: str, matrix: np.ndarray, keep: int) -> Whitening:
        """The catalog's saved centring of ``encoder``, refitted (and saved) when there is none, when it
        was fitted for other vectors or once the catalog's size has moved by ``REFIT_SHARE``."""
        folder = Path(self._store.dir) / "artifacts" / "whitening" / encoder_key(encoder)
        config = WhiteningConfig(keep=keep)
        try:
            saved = Whitening.load(folder)
        except (OSError, ValueError, KeyError, TypeError):   # none yet, or unreadable: refit
            saved = None
        if (saved is not None and saved.config == config and len(saved.mean_) + keep == matrix.shape[1]
                and not saved.stale(len(matrix))):
            return saved
        fitted = Whitening(config).fit(matrix)
        try:
            fitted.save(folder)
        except OSError:  # a read-only catalog still searches: it refits once per process and data version
            pass
        return fitted

    @staticmethod
    def _augmented(raw: np.ndarray, rowids: np.ndarray, expansion: Expansion, keep: int, previous):
        """(DBA matrix, its stamp) for this data version. With the previous version's entry, only the
        rows added or changed since are augmented (:func:`augment_rows`) and the others keep their
        vectors — until the rows touched since the last full pass exceed :data:`DBA_REFRESH_SHARE`
        of the catalog. The stamp is (row fingerprints, rows touched since the full pass)."""
        fingerprints = _row_checksums(raw)
        if previous is not None and previous[4] is not None and previous[1].shape[1] == raw.shape[1]:
            old_rowids, old_matrix, old_position, _, (old_prints, touched), _ = previous
            rows = np.array([old_position.get(int(r), -1) for r in rowids], np.int64)
            same = rows >= 0
            same[same] = old_prints[rows[same]] == fingerprints[same]
            changed = np.flatnonzero(~same)
            touched += len(changed) + len(set(old_position) - set(map(int, rowids)))
            if touched <= DBA_REFRESH_SHARE * max(len(rowids), 1):
                matrix = np.empty((len(rowids), raw.shape[1]), np.float32)
                matrix[same] = old_matrix[rows[same]]
                if len(changed):
                    matrix[changed] = augment_rows(raw, changed, expansion.dba, expansion.alpha, keep)
                return matrix, (fingerprints, touched)
        return augment_database(raw, expansion.dba, expansion.alpha, keep), (fingerprints, 0)

    def search(self, index: IndexBackend, encoder: str, query: np.ndarray, k: int, metric: str,
               expansion: Expansion, where: dict[str, Any] | None = None, exclude: set[int] | None = None,
               min_score: float | None = None, keep: int = 0) -> list[SearchResult]:
        """:func:`~lookalike.search.engine.run_search` with ``expansion`` applied: DBA swaps in the
        augmented index; αQE searches the top ``qe`` (same filters and exclusions), expands the
        query with their (augmented) vectors, and searches again. ``keep``: trailing values
        re-ranking leaves alone (:func:`augment_database`). Scores are cosines of the expanded
        query to the (augmented) items: a catalog photo used as a query ranks first but scores
        below 1.0."""
        if not expansion.active:
            return run_search(self._store, index, query, k, metric, where, exclude, min_score)
        index, query = self.prepare(index, encoder, query, metric, expansion, where, exclude, keep=keep)
        return run_search(self._store, index, query, k, metric, where, exclude, min_score)

    def prepare(self, index: IndexBackend, encoder: str, query: np.ndarray, metric: str, expansion: Expansion,
                where: dict[str, Any] | None = None, exclude: set[int] | None = None,
                filters: Sequence = (), keep: int = 0, first: list | None = None) -> tuple[IndexBackend, np.ndarray]:
        """The (index, query) that ``expansion`` searches instead of the plain ones (stages 1-2 of
        :mod:`lookalike.search.pipeline`): the DBA index when ``dba``, and the αQE-expanded query
        from its top ``qe`` under the same filters (``where``, ``filters``) and exclusions.
        ``keep``: trailing values re-ranking leaves alone (:func:`augment_database`). DBA is
        skipped above :data:`MAX_DBA_ITEMS` items (its exact neighbour pass grows with n²), and so
        is centring (it holds a centred copy of the catalog); αQE and the colour window still apply.
        ``first``: a list that receives αQE's first-stage hits (the plain top ``qe`` of the returned
        index; left empty with a colour window, whose first stage ranks by the CNN part alone)."""
        if not expansion.active:
            return index, query
        _check_metric(metric)
        if (expansion.dba or expansion.centre) and self._store.count() > MAX_DBA_ITEMS:
            expansion = expansion.without_dba()
            if not expansion.active:
                return index, query
        _, matrix, position, own_index, centring = self._gallery(encoder, expansion, keep)
        index = own_index if own_index is not None else index
        query = l2_normalize(np.asarray(query, np.float32).ravel())
        if centring is not None:
            query = centring.transform(query)[0]
        window = expansion.window > 0 and keep > 0
        if expansion.qe:
            # with a colour window, αQE's neighbours are the CNN part's (the colour part zeroed)
            probe = cnn_only(query, keep) if window else query
            if first is not None and not window:   # CNN-only scores are not the plain search's
                top = run_search(self._store, index, probe, expansion.qe, metric, where, exclude, filters=filters)
                first.extend(top)
                rows = [position[r] for r in self._rowids([hit.id for hit in top]) if r in position]
            else:
                # the same rows, read from the index alone: no hit objects, metadata or id lookups
                rows = [position[r] for r in run_search(self._store, index, probe, expansion.qe, metric, where, exclude,
                                                        filters=filters, rowids_only=True) if r in position]
            if rows:
                found = matrix[rows] if expansion.dba else augment_database(np.asarray(matrix[rows]), 0, keep=keep)
                query = expand_queries(query[None], found[None], expansion.alpha, keep)[0]
        if window:
            index = ColourWindow(index, gallery_rows(matrix, position), keep, expansion.window, expansion.colour,
                                 exclude)
        return index, query

    def resolve(self, expansion: Expansion) -> Expansion:
        """``expansion`` as :meth:`prepare` applies it to this catalog: without DBA and centring
        above :data:`MAX_DBA_ITEMS` items."""
        if (expansion.dba or expansion.centre) and self._store.count() > MAX_DBA_ITEMS:
            return expansion.without_dba()
        return expansion

    def _rowids(self, ids: list[str]) -> list[int]:
        """Rowids of ``ids`` in their order (one query; ids removed meanwhile are left out)."""
        found = self._store.get_many(ids)
        return [found[item_id].rowid for item_id in ids if item_id in found]

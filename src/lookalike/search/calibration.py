"""An honest "no good match": a per-catalog, per-encoder score threshold below which a query's best
hit is not a real match.

The threshold comes from the catalog's own leave-one-out nearest neighbours (a sample of items,
each searched against all the others), so it means "as close as items of this catalog usually are
to their nearest other item":

* ``labelled`` — the ``miss_rate`` quantile of the nearest-neighbour scores whose neighbour has the
  query's label: fewer than ``miss_rate`` of true same-label nearest neighbours score below it
  (capped at the quantile of all nearest-neighbour scores, so that no more than ``miss_rate`` of
  the catalog's own items would be flagged).
* ``label-free`` — from the gap between nearest-neighbour scores and random-pair scores: the
  midpoint of their medians, ``(median(nn) + median(random)) / 2``. An unrelated image scores
  against a catalog like a random pair does (only slightly above: its best of n), an in-catalog
  query like a nearest neighbour; the midpoint sits in the gap without needing labels. It is never
  set above the ``miss_rate`` quantile of the nearest-neighbour scores.

``calibrate`` picks ``labelled`` when labels are given and at least ``MIN_LABELLED`` sampled items
have a same-label nearest neighbour, ``label-free`` otherwise. The result is a small JSON-able
:class:`ScoreThreshold` the catalog stores with the data version it was computed from (recomputed
when the version changes). Measured on clothing-small and a generated shapes catalog in the README
("Ranking"; study: ``python -m lookalike.bench.studies.steering``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from lookalike.index.distances import SCORED_METRICS, SCORERS, distance_to_score, exact_knn, prepare, raw_to_distance
from lookalike.search.results import SearchResult

METHODS = ("labelled", "label-free")
DEFAULT_MISS_RATE = 0.02     # fraction of true same-label nearest neighbours allowed below the threshold
DEFAULT_SAMPLE = 2000        # items searched leave-one-out (the cost is sample x catalog size)
DEFAULT_PAIRS = 20_000       # random pairs for the label-free estimate
MIN_LABELLED = 50            # same-label nearest neighbours needed for the labelled quantile
#: a served catalog's writes move the data version, not a quantile over thousands of neighbours: the
#: threshold is recomputed once the writes and size change since it was computed pass this share
RECALIBRATE_SHARE = 0.1


def still_valid(doc: dict, version: str, items: int) -> bool:
    """Whether a stored threshold (``ScoreThreshold.to_dict()``) still holds at data ``version``
    (``"<write counter>:<encoder fingerprint>"``, ``Store.version``) with ``items`` items: same
    encoder weights, and (write batches since) + (change in item count) ≤ RECALIBRATE_SHARE of the
    items it was computed on."""
    if doc.get("version") == version:
        return True
    then, _, then_fp = str(doc.get("version", "")).partition(":")
    now, _, now_fp = version.partition(":")
    if then_fp != now_fp or not then.isdigit() or not now.isdigit() or not doc.get("items"):
        return False
    drift = abs(int(now) - int(then)) + abs(items - int(doc["items"]))
    return drift <= RECALIBRATE_SHARE * int(doc["items"])


@dataclass
class ScoreThreshold:
    """A calibrated "no close match" threshold: a query whose best hit scores below ``threshold``
    (in the metric's score units, higher = more similar) has no close match."""

    threshold: float
    method: str                 # "labelled" | "label-free"
    miss_rate: float
    metric: str
    encoder: str = ""
    version: str = ""           # the catalog's data version for ``encoder`` when computed
    sample: int = 0             # leave-one-out queries used
    stats: dict[str, float] = field(default_factory=dict)   # quantiles of the score distributions
    items: int = 0              # the catalog's item count when computed

    def is_weak(self, score: float) -> bool:
        """True when ``score`` is below the threshold (not a close match)."""
        return bool(score < self.threshold)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "ScoreThreshold":
        return cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k in doc})


def neighbour_scores(vectors: np.ndarray, metric: str, sample: int = DEFAULT_SAMPLE,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Leave-one-out nearest neighbours of up to ``sample`` random rows of (n, d) ``vectors``:
    ``(query positions (s,), neighbour positions (s,), scores (s,) float64)``. ValueError for n < 2."""
    vectors = np.asarray(vectors, np.float32)
    n = len(vectors)
    if n < 2:
        raise ValueError("calibration needs at least 2 items")
    rng = np.random.default_rng(seed)
    queries = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    dist, pos = exact_knn(vectors[queries], vectors, 1, metric, exclude=queries)
    return queries, pos[:, 0], distance_to_score(dist[:, 0], metric)


def random_pair_scores(vectors: np.ndarray, metric: str, pairs: int = DEFAULT_PAIRS, seed: int = 0) -> np.ndarray:
    """Scores of ``pairs`` random pairs of distinct rows of (n, d) ``vectors``: (pairs,) float64."""
    vectors = np.asarray(vectors, np.float32)
    n = len(vectors)
    if n < 2:
        raise ValueError("calibration needs at least 2 items")
    rng = np.random.default_rng(seed + 1)
    a = rng.integers(0, n, pairs)
    b = (a + rng.integers(1, n, pairs)) % n      # never a itself
    if metric in SCORED_METRICS:
        return np.array([float(SCORERS[metric](vectors[i:i + 1], vectors[j:j + 1])[0, 0]) for i, j in zip(a, b)])
    x = prepare(vectors, metric).astype(np.float64)
    if metric in ("cosine", "ip"):
        dist = raw_to_distance((x[a] * x[b]).sum(axis=1), metric)
    else:
        dist = np.linalg.norm(x[a] - x[b], ord=1 if metric == "l1" else 2, axis=1)
    return distance_to_score(dist, metric)


def labelled_threshold(nn_scores, same_label, miss_rate: float = DEFAULT_MISS_RATE) -> float:
    """The ``miss_rate`` quantile of the nearest-neighbour scores whose neighbour shares the query's
    label (``same_label`` (s,) bool), capped at the ``miss_rate`` quantile of all of them: fewer than
    ``miss_rate`` of true same-label neighbours, and of the catalog's own nearest neighbours, score
    below it (items whose neighbour has their label are the well-matched ones, so their quantile alone
    runs high on a small catalog). ValueError when none shares a label or ``miss_rate`` is outside (0, 1)."""
    _check_rate(miss_rate)
    nn = np.asarray(nn_scores, np.float64)
    scores = nn[np.asarray(same_label, bool)]
    if len(scores) == 0:
        raise ValueError("no sampled item has a same-label nearest neighbour")
    return float(min(np.quantile(scores, miss_rate), np.quantile(nn, miss_rate)))


def label_free_threshold(nn_scores, random_scores, miss_rate: float = DEFAULT_MISS_RATE) -> float:
    """``min((median(nn) + median(random)) / 2, quantile(nn, miss_rate))``: the middle of the gap
    between nearest-neighbour and random-pair scores, never flagging more than ``miss_rate`` of
    the catalog's own nearest neighbours."""
    _check_rate(miss_rate)
    nn, rand = np.asarray(nn_scores, np.float64), np.asarray(random_scores, np.float64)
    if len(nn) == 0 or len(rand) == 0:
        raise ValueError("the label-free threshold needs nearest-neighbour and random-pair scores")
    return float(min((np.median(nn) + np.median(rand)) / 2, np.quantile(nn, miss_rate)))


def _check_rate(miss_rate: float) -> None:
    if not 0.0 < miss_rate < 1.0:
        raise ValueError(f"miss_rate must be between 0 and 1, got {miss_rate}")


def calibrate(vectors: np.ndarray, metric: str, labels: Sequence[Any] | None = None,
              miss_rate: float = DEFAULT_MISS_RATE, method: str | None = None, sample: int = DEFAULT_SAMPLE,
              pairs: int = DEFAULT_PAIRS, seed: int = 0, encoder: str = "", version: str = "") -> ScoreThreshold:
    """The "no close match" threshold of a catalog's (n, d) ``vectors`` under ``metric``.

    ``labels`` (n,) (None entries = unlabelled) enable the ``labelled`` method; ``method`` forces
    one of :data:`METHODS` (default: labelled when possible, else label-free). Cost: ``sample``
    exact searches over n items plus ``pairs`` dot products. ValueError for fewer than 2 items, an
    unknown method, or ``labelled`` without enough labelled neighbours."""
    if method is not None and method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    queries, neighbours, nn = neighbour_scores(vectors, metric, sample, seed)
    rand = random_pair_scores(vectors, metric, pairs, seed)
    same = None
    if labels is not None:
        lab = np.asarray([None if v is None or v == "" else str(v) for v in labels], object)
        if len(lab) != len(vectors):
            raise ValueError(f"{len(lab)} labels for {len(vectors)} vectors")
        same = np.array([lab[q] is not None and lab[q] == lab[m] for q, m in zip(queries, neighbours)], bool)
    enough = same is not None and int(same.sum()) >= MIN_LABELLED
    chosen = method or ("labelled" if enough else "label-free")
    if chosen == "labelled" and not enough:
        raise ValueError(f"the labelled threshold needs at least {MIN_LABELLED} sampled items whose nearest "
                         "neighbour has their label")
    t = labelled_threshold(nn, same, miss_rate) if chosen == "labelled" else label_free_threshold(nn, rand, miss_rate)
    q = (0.01, 0.05, 0.5, 0.95, 0.99)
    stats = {**{f"nn_q{int(p * 100):02d}": float(np.quantile(nn, p)) for p in q},
             **{f"random_q{int(p * 100):02d}": float(np.quantile(rand, p)) for p in q}}
    if same is not None:
        stats["same_label_nn_rate"] = float(same.mean())
    return ScoreThreshold(float(t), chosen, miss_rate, metric, encoder, version, int(len(queries)), stats)


# -- the pipeline's last stage (lookalike.search.pipeline) -------------------------------------------
def visual_score(hit: SearchResult) -> float:
    """The hit's similarity to the query before any boost: ``score_parts["visual"]`` when the
    pipeline recorded it, else ``score``."""
    return float(hit.score_parts.get("visual", hit.score))


def flag_weak(hits: Sequence[SearchResult], threshold: ScoreThreshold | None,
              best_score: float | None = None) -> list[SearchResult]:
    """Hits with ``weak`` set on every one when the query's nearest item scores below ``threshold``
    (``best_score``: that score by a plain search, default the best visual score among ``hits``),
    none otherwise: "no close match" is a property of the query. None threshold: unchanged."""
    if threshold is None or not hits:
        return list(hits)
    best = max(visual_score(h) for h in hits) if best_score is None else float(best_score)
    weak = threshold.is_weak(best)
    return [h if h.weak == weak else replace(h, weak=weak) for h in hits]


def no_close_match(hits: Sequence[SearchResult]) -> bool:
    """True when there are hits and every one is weak: nothing in the catalog is close to the query."""
    return bool(hits) and all(h.weak for h in hits)

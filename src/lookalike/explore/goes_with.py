"""Cross-category recommendations: items of a *target* category that go with a query item.

Methods (all rank only items of the target category):

* ``centroid`` — the appchemy method: move the query by ``centroid(target) - centroid(own
  category)`` and take the nearest target items. In Euclidean terms it compares the query's
  offset from its category mean with each target item's offset from its mean, i.e. it assumes one
  translation maps every shirt onto "its" trousers — an assumption nothing checks.
* ``colour`` — nearest target items by the product's foreground colour descriptor
  (``lookalike.encoders.colour``): colour is one property that carries over between categories and is a
  first rule of putting outfits together; it needs no training data.
* ``learned`` — with outfit pairs (items known to go together), a ridge-regression map from an
  item's (PCA-reduced) embedding to its partner's, fitted on the pairs; queries are mapped and
  matched in the same space. The only method here fitted to what "goes with" means. The map is
  saved per catalog and encoder (``learned_map``) and reused when no pairs are given.

``colour_consistency`` measures any method without outfit data (CIEDE2000 between dominant
colours of query and results, against all target items as the random baseline);
``pair_hit_rate`` measures them with pairs (cross-validated for ``learned``).

Catalog layer: ``catalog_data`` gathers what the methods need, ``recommend_item`` returns ranked
``SearchResult`` hits per target category (the API's per-item endpoint), ``goes_with_report``
is the whole ``lookalike goes-with`` run (recommend, grid PNG, measurements, report JSON).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lookalike.data.artifacts import KeyedCache, encoder_key, save_npz, write_json
from lookalike.data.images import ImageError, open_image
from lookalike.encoders.colour import COLOUR_DIM, DESCRIPTOR_VERSION, ciede2000, colour_summary
from lookalike.explore.clusters import load_clusters
from lookalike.index.distances import distance_to_score, exact_knn, prepare
from lookalike.search import SearchResult
from lookalike.train.base import artifact_dir, read_config, save_config
from lookalike.viz.grids import result_grid

METHODS = ("centroid", "colour", "learned")
PCA_DIMS = 64
FORMAT_VERSION = 1
MAP_FILE = "map.npz"


@dataclass
class GoesWithData:
    """Everything the methods need, aligned by row: ids, vectors, categories, colour features."""
    ids: list[str]
    vectors: np.ndarray                     # prepared (unit length for cosine encoders)
    categories: list[str | None]
    metric: str = "cosine"
    colour: np.ndarray | None = None        # (n, COLOUR_DIM) colour descriptors (unit length)
    dominant: np.ndarray | None = None      # (n, 3) Lab dominant colours
    category_source: str = ""               # where the categories came from (for reports)
    paths: list[str] | None = None          # image paths (filled into results when known)
    row_of: dict[str, int] = field(init=False, repr=False)
    _centroids: dict[str, np.ndarray] = field(init=False, repr=False, default_factory=dict)
    _rows: dict[str, np.ndarray] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.vectors = prepare(self.vectors, self.metric)
        self.row_of = {item_id: i for i, item_id in enumerate(self.ids)}

    def rows_in(self, category: str) -> np.ndarray:
        if category not in self._rows:
            self._rows[category] = np.array([i for i, c in enumerate(self.categories) if c == category], np.int64)
        return self._rows[category]

    def category_names(self) -> list[str]:
        return sorted({c for c in self.categories if c not in (None, "")})

    def centroid(self, category: str) -> np.ndarray:
        if category not in self._centroids:
            rows = self.rows_in(category)
            if not len(rows):
                raise KeyError(f"no items in category {category!r}")
            self._centroids[category] = self.vectors[rows].mean(axis=0)
        return self._centroids[category]


def _rank(data: GoesWithData, query: np.ndarray, candidates: np.ndarray, rows: np.ndarray, k: int,
          metric: str) -> list[SearchResult]:
    """Nearest ``rows`` (their vectors ``candidates``) to ``query`` under ``metric``, best first;
    ``label`` is the hit's category."""
    distances, found = exact_knn(query[None], candidates, k, metric)
    scores = distance_to_score(distances[0], metric)
    return [SearchResult(rank=rank, id=data.ids[rows[i]], score=float(score), distance=float(d),
                         label=data.categories[rows[i]], path=data.paths[rows[i]] if data.paths else None)
            for rank, (i, d, score) in enumerate(zip(found[0], distances[0], scores), start=1) if i >= 0]


@dataclass
class LearnedMapConfig:
    alpha: float = 10.0      # ridge regularisation
    dims: int = PCA_DIMS     # PCA components the map works in (fewer when there are fewer items/dimensions)


class LearnedMap:
    """Ridge regression from an item's PCA embedding to its outfit partner's, fitted on pairs
    (:mod:`lookalike.train.base` contract). Saved as plain arrays (PCA mean and components, ridge
    coefficients and intercept), so a loaded map gives bit-identical outputs."""

    kind = "goes-with-map"
    version = FORMAT_VERSION

    def __init__(self, config: LearnedMapConfig | None = None):
        self.config = config or LearnedMapConfig()
        self.mean = self.components = self.coef = self.intercept = None
        self.meta: dict = {}
        self._space: tuple[np.ndarray, np.ndarray] | None = None   # (vectors, their projection), memo

    def fit(self, vectors: np.ndarray, pairs: Sequence[tuple[int, int]]) -> "LearnedMap":
        """Fit on (n, dim) prepared ``vectors`` and ``pairs`` of rows that go together (both
        directions: "goes with" is symmetric). ValueError with fewer than 2 pairs."""
        # scikit-learn takes ~6 s to import: loaded on use, not by `import lookalike` / `lookalike --help`
        from sklearn.decomposition import PCA
        from sklearn.linear_model import Ridge

        if len(pairs) < 2:
            raise ValueError("the learned map needs at least 2 outfit pairs")
        dims = int(min(self.config.dims, vectors.shape[1], len(vectors) - 1))
        pca = PCA(n_components=dims, random_state=0).fit(vectors)
        self.mean, self.components = pca.mean_.astype(np.float32), pca.components_.astype(np.float32)
        space = self.project(vectors)
        both_ways = list(pairs) + [(b, a) for a, b in pairs]
        ridge = Ridge(alpha=self.config.alpha).fit(space[[a for a, _ in both_ways]], space[[b for _, b in both_ways]])
        self.coef, self.intercept = ridge.coef_.astype(np.float32), np.atleast_1d(ridge.intercept_).astype(np.float32)
        return self

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """(n, dim) prepared vectors -> (n, dims) float32 PCA coordinates (memoised for the last array)."""
        if self._space is not None and self._space[0] is vectors:
            return self._space[1]
        if vectors.shape[1] != self.components.shape[1]:
            raise ValueError(f"the learned map was fitted on {self.components.shape[1]}-d vectors, got {vectors.shape[1]}-d")
        space = ((np.asarray(vectors, np.float32) - self.mean) @ self.components.T).astype(np.float32)
        self._space = (vectors, space)
        return space

    def map(self, space: np.ndarray) -> np.ndarray:
        """(n, dims) PCA coordinates of items -> (n, dims) predicted coordinates of their partners."""
        return (np.atleast_2d(space) @ self.coef.T + self.intercept).astype(np.float32)

    def predict(self, data: GoesWithData, row: int) -> np.ndarray:
        """The predicted partner position of the item at ``row`` of ``data``."""
        return self.map(self.project(data.vectors)[row])[0]

    def save(self, directory) -> Path:
        folder = Path(directory)
        save_npz(folder / MAP_FILE, mean=self.mean, components=self.components, coef=self.coef, intercept=self.intercept)
        save_config(folder, self.kind, self.version, self.config, **self.meta)
        return folder

    @classmethod
    def load(cls, directory) -> "LearnedMap":
        doc = read_config(directory, cls.kind, cls.version, "fit one with `lookalike goes-with --pairs CSV`")
        learned = cls(LearnedMapConfig(**doc["config"]))
        with np.load(Path(directory) / MAP_FILE, allow_pickle=False) as arrays:
            learned.mean, learned.components = arrays["mean"], arrays["components"]
            learned.coef, learned.intercept = arrays["coef"], arrays["intercept"]
        learned.meta = {k: v for k, v in doc.items() if k not in ("kind", "version", "config")}
        return learned


def recommend(data: GoesWithData, query_row: int, target: str, k: int = 10, method: str = "centroid",
              learned: LearnedMap | None = None) -> list[SearchResult]:
    """Top ``k`` items of category ``target`` for the item at ``query_row``, best first. Distances
    and scores are in the method's space: the encoder's metric (centroid), cosine of colour
    descriptors (colour) or cosine in the learned map's space (learned)."""
    rows = data.rows_in(target)
    rows = rows[rows != query_row]
    if not len(rows):
        raise KeyError(f"no items in target category {target!r}")
    if method == "centroid":
        own = data.categories[query_row]
        if own in (None, ""):
            raise ValueError(f"item {data.ids[query_row]!r} has no category, so it has no centroid to move from")
        shifted = data.vectors[query_row] + data.centroid(target) - data.centroid(own)
        return _rank(data, shifted, data.vectors[rows], rows, k, data.metric)
    if method == "colour":
        if data.colour is None:
            raise ValueError("the colour method needs colour descriptors")
        return _rank(data, data.colour[query_row], data.colour[rows], rows, k, "cosine")
    if method == "learned":
        if learned is None:
            raise ValueError("the learned method needs outfit pairs (--pairs CSV)")
        return _rank(data, learned.predict(data, query_row), learned.project(data.vectors)[rows], rows, k, "cosine")
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


# -- measuring -------------------------------------------------------------------------------

def _sample_queries(data: GoesWithData, n: int, seed: int) -> np.ndarray:
    rows = np.array([i for i, c in enumerate(data.categories) if c not in (None, "")])
    if n and len(rows) > n:
        rows = np.sort(np.random.default_rng(seed).choice(rows, n, replace=False))
    return rows


def colour_consistency(data: GoesWithData, methods: Sequence[str], k: int = 10, n_queries: int = 300,
                       targets: Sequence[str] | None = None, seed: int = 0,
                       learned: LearnedMap | None = None, progress: Callable | None = None) -> list[dict]:
    """Mean CIEDE2000 between the dominant colour of each query and of its results, per method,
    next to the same for *all* items of the target category (what random picks would give).

    Every sampled query is asked for every other target category. ``colour_similarity`` is the
    mean cosine of colour descriptors (higher = closer). The ``colour`` method ranks by that very
    descriptor, so its figures show how far colour can be matched, not an independent judgement.
    ``coverage`` (share of each target category that appears in any result, averaged) shows whether
    a method answers every query with the same few "typical" items, which moving queries towards a
    centroid invites.
    """
    if data.dominant is None or data.colour is None:
        raise ValueError("colour consistency needs colour features")
    categories = list(targets) if targets else data.category_names()
    target_rows = {t: data.rows_in(t) for t in categories}
    totals = {m: {"delta_e": [], "similarity": [], "returned": {t: set() for t in categories}} for m in methods}
    baseline_de, baseline_sim = [], []
    for q in _sample_queries(data, n_queries, seed):
        for target in categories:
            rows = target_rows[target][target_rows[target] != q]
            if target == data.categories[q] or not len(rows):
                continue
            baseline_de.append(float(ciede2000(data.dominant[q][None], data.dominant[rows]).mean()))
            baseline_sim.append(float((data.colour[rows] @ data.colour[q]).mean()))
            for method in methods:
                picked = [data.row_of[h.id] for h in recommend(data, int(q), target, k, method, learned)]
                totals[method]["delta_e"].append(float(ciede2000(data.dominant[q][None], data.dominant[picked]).mean()))
                totals[method]["similarity"].append(float((data.colour[picked] @ data.colour[q]).mean()))
                totals[method]["returned"][target].update(picked)
        if progress:
            progress(1)
    out = [{"method": "random (all target items)", "delta_e": _mean(baseline_de),
            "colour_similarity": _mean(baseline_sim), "coverage": 1.0, "queries": len(baseline_de)}]
    for method in methods:
        returned = totals[method]["returned"]
        out.append({"method": method, "delta_e": _mean(totals[method]["delta_e"]),
                    "colour_similarity": _mean(totals[method]["similarity"]),
                    # share of each target category ever recommended, averaged over categories
                    "coverage": _mean([len(returned[t]) / len(target_rows[t]) for t in categories if len(target_rows[t])]),
                    "queries": len(totals[method]["delta_e"])})
    return out


def pair_hit_rate(data: GoesWithData, pairs: Sequence[tuple[int, int]], methods: Sequence[str], k: int = 10,
                  folds: int = 5, seed: int = 0) -> list[dict]:
    """Share of pairs (a, b) where b is in a's top-k among b's category (both directions).

    ``learned`` is fitted on the other folds of pairs and scored on the held-out fold, so it never
    sees the pair it is asked about.
    """
    pairs = [(int(a), int(b)) for a, b in pairs if data.categories[b] not in (None, "")
             and data.categories[a] not in (None, "")]
    if not pairs:
        raise ValueError("no usable pairs (both items need a category)")
    fold_of = np.random.default_rng(seed).permutation(len(pairs)) % max(2, min(folds, len(pairs)))
    out = []
    for method in methods:
        hits = []
        for fold in sorted(set(fold_of.tolist())):
            test = [p for p, f in zip(pairs, fold_of) if f == fold]
            learned = None
            if method == "learned":
                learned = LearnedMap().fit(data.vectors, [p for p, f in zip(pairs, fold_of) if f != fold])
            for a, b in test:
                for query, partner in ((a, b), (b, a)):
                    found = [data.row_of[h.id] for h in recommend(data, query, data.categories[partner], k, method, learned)]
                    hits.append(partner in found)
        out.append({"method": method, f"hit_rate@{k}": float(np.mean(hits)), "queries": len(hits)})
    return out


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


# -- inputs from files and catalogs ------------------------------------------------------------

def read_pairs(path: Path, data: GoesWithData) -> tuple[list[tuple[int, int]], list[str]]:
    """Outfit pairs from a CSV whose first two columns are item ids; (pairs as rows, problems)."""
    pairs, problems = [], []
    with open(path, newline="", encoding="utf-8") as f:
        for n, record in enumerate(csv.reader(f), start=1):
            if len(record) < 2 or not record[0].strip():
                problems.append(f"line {n}: needs two item ids")
                continue
            a, b = record[0].strip(), record[1].strip()
            if a not in data.row_of or b not in data.row_of:
                if n > 1:  # line 1 may be a header
                    problems.append(f"line {n}: unknown item id {a if a not in data.row_of else b!r}")
                continue
            pairs.append((data.row_of[a], data.row_of[b]))
    return pairs, problems


def colour_features(paths: Sequence[str], keys: Sequence[str], cache: Path | None = None,
                    progress: Callable | None = None) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(descriptors (n, COLOUR_DIM), dominant Lab (n, 3), rows that failed) for image files.

    Cached by ``keys`` (e.g. content hashes) in ``cache`` (an .npz), so re-runs only read new
    images. An unreadable image gets a zero descriptor and a grey dominant colour and is reported.
    """
    known = KeyedCache(cache, ("descriptors", "dominant"))
    descriptors = np.zeros((len(paths), COLOUR_DIM), np.float32)
    dominant = np.tile(np.array([50.0, 0.0, 0.0], np.float32), (len(paths), 1))
    failed = []
    for i, (path, key) in enumerate(zip(paths, keys)):
        if key in known:
            descriptors[i], dominant[i] = known[key]
        else:
            try:
                image = open_image(path, draft_size=96)
                descriptors[i], dominant[i] = colour_summary(image)
                known[key] = (descriptors[i], dominant[i])
            except ImageError:
                failed.append(i)
        if progress:
            progress(1)
    known.save()
    return descriptors, dominant, failed


def catalog_data(cat, encoder: str | None = None, category_column: str | None = "label",
                 with_colour: bool = True, progress: Callable | None = None) -> GoesWithData:
    """Build ``GoesWithData`` from a catalog. Categories come from ``category_column``; with
    ``None`` (or a column nobody filled in) they come from the stored clusters ("cluster-3")."""
    encoder, ids, matrix, metric = cat.vectors_with_metric(encoder)
    categories = cat.labels(category_column, encoder) if category_column else [None] * len(ids)
    source = f"column {category_column}"
    if all(c in (None, "") for c in categories):
        clusters = load_clusters(cat, encoder)
        if clusters is None:
            raise LookupError(f"no category column {category_column!r} values and no clusters for {encoder!r}; "
                              f"run `lookalike cluster --catalog {cat.name}` first or pass --category-column")
        by_id = clusters.by_id()
        categories = [f"cluster-{by_id[i]}" if i in by_id else None for i in ids]
        source = f"clusters (k={clusters.k}; {'no' if not category_column else 'empty'} category column)"
    items = {it.id: it for it in cat.items()}
    paths = [items[i].path for i in ids]
    data = GoesWithData(ids=list(ids), vectors=matrix, categories=categories, metric=metric, category_source=source,
                        paths=paths)
    if with_colour:
        keys = [items[i].sha256 or items[i].path for i in ids]
        # the descriptor's version is in the file name, so a changed colour module recomputes
        cache = cat.dir / "cache" / f"colour-features-{DESCRIPTOR_VERSION.replace('/', '-')}.npz"
        data.colour, data.dominant, _ = colour_features(paths, keys, cache, progress)
    return data


def learned_map_dir(cat, encoder: str | None = None) -> Path:
    """Where the catalog's learned map for ``encoder`` lives: ``artifacts/goes-with/<enc>-learned-map/``."""
    return artifact_dir(cat.dir, "goes-with") / f"{encoder_key(encoder or cat.default_encoder)}-learned-map"


def learned_map(cat, data: GoesWithData, encoder: str | None = None,
                pairs: Sequence[tuple[int, int]] | None = None) -> LearnedMap | None:
    """With ``pairs`` (rows of ``data``): fit the learned map on all of them and save it for the
    catalog's ``encoder``. Without: the map saved by an earlier fit, or None when there is none (or
    it no longer fits the vectors' dimension)."""
    folder = learned_map_dir(cat, encoder)
    if pairs:
        fitted = LearnedMap().fit(data.vectors, pairs)
        fitted.meta = {"catalog": cat.name, "encoder": encoder or cat.default_encoder, "pairs": len(pairs)}
        fitted.save(folder)
        return fitted
    if not (folder / MAP_FILE).exists():
        return None
    loaded = LearnedMap.load(folder)
    return loaded if loaded.components.shape[1] == data.vectors.shape[1] else None


def recommend_item(cat, data: GoesWithData, item: str, targets: Sequence[str] | None = None, k: int = 10,
                   method: str = "centroid", learned: LearnedMap | None = None) -> dict[str, list[SearchResult]]:
    """Top ``k`` items of each target category for catalog item ``item`` (default targets: every
    category except the item's own), as {category: hits}. Raises LookupError for an unknown item or
    category, KeyError/ValueError from ``recommend`` (empty category, no category to move from)."""
    if item not in data.row_of:
        raise LookupError(f"unknown item id {item!r} (or it has no vector for this encoder)")
    known = data.category_names()
    row = data.row_of[item]
    targets = list(targets) if targets is not None else [c for c in known if c != data.categories[row]]
    for target in targets:
        if target not in known:
            raise LookupError(f"unknown category {target!r}; known: {', '.join(known)}")
    return {target: recommend(data, row, target, k, method, learned) for target in targets}


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:60]


def report_dir(cat) -> Path:
    """Where ``goes_with_report`` writes grids and evaluation.json: ``<catalog>/artifacts/goes-with``."""
    return artifact_dir(cat.dir, "goes-with")


def goes_with_report(cat, item: str | None = None, category: str | None = None, k: int = 10,
                     method: str = "centroid", encoder: str | None = None, category_column: str | None = "label",
                     pairs: Path | None = None, evaluate: int = 0, grid: bool = True,
                     progress: Callable[[str, int], Callable[[int], None]] | None = None,
                     warn: Callable[[str], None] | None = None) -> dict:
    """One ``lookalike goes-with`` run as a JSON-ready report.

    With ``item`` and ``category``: ``report["results"]`` holds the top ``k`` of ``category`` for
    ``item`` (rank, id, score rounded to 4 places, category, path) and, with ``grid``, the path of
    a PNG of them under ``report_dir(cat)``. With ``evaluate`` = N: colour consistency of every
    method on N sampled queries and, with ``pairs`` (CSV of item ids that go together, which also
    enables ``learned``: the map fitted on them is saved, ``learned_map``), hit-rate@k; the report is
    written to ``report_dir(cat)/evaluation.json``.

    ``progress(stage, total)`` returns the callable advanced as work is done; ``warn(text)`` gets
    each unusable line of the pairs file. Raises ValueError for an unknown method, a pairs file with
    fewer than 2 usable pairs or ``learned`` without pairs and without a saved map; LookupError for missing vectors or
    categories, an unknown item or category.
    """
    if method not in METHODS:
        raise ValueError(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}")
    need_colour = evaluate > 0 or method == "colour"
    step = progress or (lambda stage, total: lambda n: None)
    data = catalog_data(cat, encoder, category_column, with_colour=need_colour,
                        progress=step("colour features", len(cat) if need_colour else 0))
    pair_rows: list[tuple[int, int]] = []
    if pairs is not None:
        pair_rows, problems = read_pairs(pairs, data)
        for problem in problems[:10]:
            if warn:
                warn(problem)
        if len(pair_rows) < 2:
            raise ValueError(f"{pairs} has fewer than 2 usable pairs of catalog item ids")
    # with pairs: fitted and saved; without: the map an earlier run with pairs saved (or None)
    learned = learned_map(cat, data, encoder, pair_rows or None)
    if method == "learned" and learned is None:
        raise ValueError("--method learned needs --pairs CSV (no learned map saved for this catalog and encoder yet)")
    report = {"catalog": cat.name, "encoder": encoder or cat.default_encoder, "category_source": data.category_source,
              "categories": data.category_names()}
    if item is not None and category is not None:
        results = recommend_item(cat, data, item, [category], k, method, learned)[category]
        doc = {"item": item, "item_category": data.categories[data.row_of[item]], "target": category,
               "method": method, "results": [{**r.to_dict(("rank", "id", "score"), digits=4), "category": r.label,
                                              "path": r.path} for r in results]}
        if grid and results:
            png = report_dir(cat) / f"{_safe(item)}-{_safe(category)}-{method}.png"
            doc["grid"] = str(result_grid(cat.get(item).path, results, png, title=f"{item} -> {category}"))
        report["results"] = doc
    if evaluate:
        methods = [m for m in METHODS if m != "learned" or learned is not None]
        report["colour_consistency"] = colour_consistency(data, methods, k=k, n_queries=evaluate, learned=learned,
                                                          progress=step("measuring", min(evaluate, len(data.ids))))
        if pair_rows:
            report["pairs"] = pair_hit_rate(data, pair_rows, methods, k=k)
        write_report(report_dir(cat) / "evaluation.json", report)
    return report


def write_report(path: Path, doc: dict) -> Path:
    return write_json(path, doc, indent=2)

"""Clusters of a catalog's embeddings: k-means, choosing k, agreement with labels, persistence.

Everything here works on plain arrays (``ids``, an ``(n, dim)`` matrix, label lists), so it can be
tested on synthetic vectors; ``cluster_catalog`` / ``load_clusters`` are the thin layer over a
``Catalog``. ``Clusters`` follows the learned-component contract of :mod:`lookalike.train.base`. Cosine encoders are clustered on L2-normalised vectors: k-means on the unit sphere
then groups by angle, which is what search ranks by.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Sequence

import numpy as np

from lookalike.data.artifacts import encoder_key, write_json
from lookalike.index.distances import exact_knn, prepare
from lookalike.train.base import artifact_dir

FORMAT_VERSION = 1

# Criteria are scored on a sample of this many vectors (silhouette is O(n^2)).
SILHOUETTE_SAMPLE = 2000
DEFAULT_K_RANGE = range(2, 21)
# k is chosen in a PCA-whitened space of this many dimensions (see choose_k).
K_SPACE_DIMS = 10
K_CRITERIA = ("silhouette", "elbow", "calinski-harabasz")
# k-means restarts (k-means++ seeds), for choosing k and for the final clustering alike: with 2-4
# restarts the silhouette of neighbouring k and the NMI of one k moved by up to 0.04 between runs,
# enough to pick k = 11 over 10 on the 10-label sample (docs/explore.md, "Choosing k").
N_INIT = 10
# choose_k averages each criterion over this many k-means seeds (and samples, above SILHOUETTE_SAMPLE)
K_REPEATS = 3


def kmeans(vectors: np.ndarray, k: int, seed: int = 0, n_init: int = N_INIT):
    """Fit scikit-learn k-means (best of ``n_init`` k-means++ restarts); returns (assignments (n,)
    int, centroids (k, dim) float32, inertia)."""
    # scikit-learn takes ~6 s to import: loaded on use, not by `import lookalike` / `lookalike --help`
    from sklearn.cluster import KMeans

    if not 1 <= k <= len(vectors):
        raise ValueError(f"k must be between 1 and the number of items ({len(vectors)}), got {k}")
    model = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(vectors)
    return model.labels_.astype(np.int64), model.cluster_centers_.astype(np.float32), float(model.inertia_)


def _sample(n: int, size: int, seed: int) -> np.ndarray:
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def silhouette(vectors: np.ndarray, assignments: np.ndarray, metric: str = "cosine",
               sample: int = SILHOUETTE_SAMPLE, seed: int = 0) -> float | None:
    """Mean silhouette (on a sample for speed); None when it is undefined (one cluster)."""
    # scikit-learn takes ~6 s to import: loaded on use, not by `import lookalike` / `lookalike --help`
    from sklearn.metrics import silhouette_score

    rows = _sample(len(vectors), sample, seed)
    if len(set(assignments[rows].tolist())) < 2 or len(rows) < 3:
        return None
    sk_metric = "cosine" if metric == "cosine" else ("manhattan" if metric == "l1" else "euclidean")
    return float(silhouette_score(vectors[rows], assignments[rows], metric=sk_metric))


def whitened(vectors: np.ndarray, dims: int = K_SPACE_DIMS, seed: int = 0) -> np.ndarray:
    """(n, dim) -> (n, d) float32: the leading principal components scaled to unit variance
    (scikit-learn ``PCA(whiten=True)``), d at most ``dims``.

    Only components with more variance than an average direction are kept (the Kaiser-Guttman
    rule on the covariance, eigenvalue > trace / dim): whitening a component that carries only
    noise would give it as much weight as one that separates groups (3 separated blobs need 2
    components; 10 would bury them). Embeddings of real catalogs keep all ``dims``.
    """
    # scikit-learn takes ~6 s to import: loaded on use, not by `import lookalike` / `lookalike --help`
    from sklearn.decomposition import PCA

    cap = max(1, min(dims, vectors.shape[1], len(vectors) - 1))
    pca = PCA(n_components=cap, whiten=True, random_state=seed)
    space = pca.fit_transform(vectors)
    average = float(np.var(vectors, axis=0, ddof=1).sum()) / vectors.shape[1]
    keep = max(1, int((pca.explained_variance_ > average).sum()))
    return space[:, :keep].astype(np.float32)


def kneedle(ks: Sequence[int], values: Sequence[float]) -> int:
    """The knee of a decreasing, convex curve (e.g. k-means inertia against k): Kneedle (Satopää,
    Albrecht, Irwin & Raghavan, "Finding a 'Kneedle' in a Haystack", ICDCS workshops 2011) without
    smoothing: normalise both axes to [0, 1] and take the k farthest above the chord, i.e. the
    largest ``(1 - y_norm) - x_norm``. ValueError with fewer than 3 points."""
    ks, values = np.asarray(ks, np.float64), np.asarray(values, np.float64)
    if len(ks) < 3:
        raise ValueError("the elbow needs at least 3 values of k")
    x = (ks - ks[0]) / (ks[-1] - ks[0])
    span = values.max() - values.min()
    y = (values - values.min()) / (span if span > 0 else 1.0)
    return int(ks[int(np.argmax((1.0 - y) - x))])


def choose_k(vectors: np.ndarray, k_range: Sequence[int] = DEFAULT_K_RANGE, metric: str = "cosine",
             sample: int = SILHOUETTE_SAMPLE, seed: int = 0, progress=None, criterion: str = "silhouette",
             dims: int = K_SPACE_DIMS, n_init: int = N_INIT, repeats: int = K_REPEATS
             ) -> tuple[int, dict[int, dict[str, float]]]:
    """Pick k for k-means; returns (k, per-k table {k: {"inertia", "silhouette", "calinski_harabasz"}}).

    Every candidate is scored in a PCA-whitened space of at most ``dims`` components
    (:func:`whitened`) on a sample of ``sample`` vectors, k-means (``n_init`` restarts) fitted
    there; each score is the mean over ``repeats`` runs with seeds ``seed, seed + 1, …`` (a new
    sample each time when there are more than ``sample`` vectors), so k-means' local optima do not
    decide between neighbouring k. ``criterion``:

    * ``silhouette`` (default): the largest mean silhouette (Rousseeuw 1987; Euclidean, in the
      whitened space);
    * ``elbow``: the knee of the inertia curve (:func:`kneedle`);
    * ``calinski-harabasz``: the largest Calinski-Harabasz index (Calinski & Harabasz 1974).

    Why: on raw embeddings (hundreds of dimensions, most of them noise) silhouette and CH fall
    almost monotonically with k, so silhouette picked k = 2 on a 10-label catalog. Whitening the
    few leading components gives each the weight of a direction that separates groups. Measured
    on two real catalogs, two subsets of one and generated blobs
    (``python -m lookalike.bench.studies.k_criteria``; table in docs/explore.md), silhouette there
    chose k in 6..20 on every catalog and the true k of separated blobs up to 12; the elbow chose
    k = 7 on clothing-small (NMI well below k = 10's) and stops near ``dims + 1`` groups (12
    separated blobs read as 11).
    ``progress(k)`` after each k. ValueError for an unknown criterion or too few items.
    """
    # scikit-learn takes ~6 s to import: loaded on use, not by `import lookalike` / `lookalike --help`
    from sklearn.metrics import calinski_harabasz_score, silhouette_score

    if criterion not in K_CRITERIA:
        raise ValueError(f"unknown k criterion {criterion!r}; expected one of {', '.join(K_CRITERIA)}")
    if repeats < 1 or n_init < 1:
        raise ValueError("repeats and n_init must be >= 1")
    n_rows = min(len(vectors), sample)
    candidates = [k for k in k_range if 2 <= k < n_rows]
    if not candidates:
        raise ValueError(f"need more items than k to choose k (have {n_rows})")
    spaces = []
    for r in range(repeats):
        rows = _sample(len(vectors), sample, seed + r)
        # without subsampling the whitened space is the same every time: compute it once
        spaces.append(spaces[0] if r and len(rows) == len(vectors) else whitened(vectors[rows], dims, seed + r))
    table: dict[int, dict[str, float]] = {}
    for k in candidates:
        runs = []
        for r, space in enumerate(spaces):
            assignments, _, inertia = kmeans(space, k, seed=seed + r, n_init=n_init)
            several = len(set(assignments.tolist())) > 1
            runs.append((inertia, float(silhouette_score(space, assignments)) if several else float("-inf"),
                         float(calinski_harabasz_score(space, assignments)) if several else 0.0))
        inertia, sil, ch = (float(np.mean(column)) for column in zip(*runs))
        table[k] = {"inertia": inertia, "silhouette": sil, "calinski_harabasz": ch}
        if progress:
            progress(k)
    if criterion == "elbow" and len(candidates) >= 3:
        return kneedle(candidates, [table[k]["inertia"] for k in candidates]), table
    column = "calinski_harabasz" if criterion == "calinski-harabasz" else "silhouette"
    return max(candidates, key=lambda k: table[k][column]), table


# -- agreement with labels ----------------------------------------------------------------

@dataclass
class Agreement:
    """How well clusters match labels (only items that have a label are counted)."""
    n: int
    purity: float
    nmi: float
    ari: float
    homogeneity: float
    completeness: float
    accuracy: float                 # after mapping each cluster to its majority label
    per_class: dict[str, dict]      # label -> precision, recall, f1, support
    cluster_to_label: dict[int, str]
    confusion: np.ndarray = field(repr=False)   # (n_labels, k) counts: rows labels, columns clusters
    label_names: list[str] = field(default_factory=list)
    cluster_ids: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"n": self.n, "purity": self.purity, "nmi": self.nmi, "ari": self.ari,
                "homogeneity": self.homogeneity, "completeness": self.completeness,
                "accuracy_after_mapping": self.accuracy, "per_class": self.per_class,
                "cluster_to_label": {str(c): lab for c, lab in self.cluster_to_label.items()},
                "confusion": {"labels": self.label_names, "clusters": self.cluster_ids,
                              "counts": self.confusion.tolist()}}


def label_agreement(labels: Sequence[str | None], assignments: Sequence[int]) -> Agreement:
    """Purity, NMI, ARI, homogeneity, completeness and per-class P/R/F1 after majority mapping.

    Majority mapping (as in the appchemy paper): every cluster is named after its most common
    label; a label no cluster maps to gets recall 0. Items without a label are left out.
    """
    # scikit-learn takes ~6 s to import: loaded on use, not by `import lookalike` / `lookalike --help`
    from sklearn import metrics

    pairs = [(str(lab), int(c)) for lab, c in zip(labels, assignments) if lab not in (None, "")]
    if not pairs:
        raise ValueError("no item has a label to compare clusters with")
    y = [p[0] for p in pairs]
    c = np.array([p[1] for p in pairs])
    label_names = sorted(set(y))
    cluster_ids = sorted(set(c.tolist()))
    confusion = np.zeros((len(label_names), len(cluster_ids)), np.int64)
    li = {lab: i for i, lab in enumerate(label_names)}
    ci = {cl: j for j, cl in enumerate(cluster_ids)}
    for lab, cl in zip(y, c):
        confusion[li[lab], ci[cl]] += 1
    # ties go to the alphabetically first label: deterministic
    mapping = {cl: label_names[int(np.argmax(confusion[:, j]))] for cl, j in ci.items()}
    predicted = [mapping[cl] for cl in c]
    p, r, f, s = metrics.precision_recall_fscore_support(y, predicted, labels=label_names, zero_division=0)
    per_class = {lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                 for i, lab in enumerate(label_names)}
    return Agreement(
        n=len(y),
        purity=float(confusion.max(axis=0).sum() / len(y)),
        nmi=float(metrics.normalized_mutual_info_score(y, c)),
        ari=float(metrics.adjusted_rand_score(y, c)),
        homogeneity=float(metrics.homogeneity_score(y, c)),
        completeness=float(metrics.completeness_score(y, c)),
        accuracy=float(np.mean([a == b for a, b in zip(y, predicted)])),
        per_class=per_class, cluster_to_label=mapping, confusion=confusion,
        label_names=label_names, cluster_ids=cluster_ids,
    )


# -- persistence ---------------------------------------------------------------------------

@dataclass
class ClusterConfig:
    k: int | str = "auto"                 # a number of clusters, or "auto": chosen in k_range by criterion
    k_range: tuple[int, int] = (2, 20)    # inclusive bounds searched when k == "auto"
    seed: int = 0
    criterion: str = "silhouette"         # how "auto" chooses: one of K_CRITERIA (see choose_k)


@dataclass
class Clusters:
    """A clustering (:mod:`lookalike.train.base` contract): one cluster id per item, the centroids,
    how it was made. ``Clusters(config=ClusterConfig(k=...)).fit(ids, matrix, metric, encoder)``;
    ``save(artifact_dir(catalog_dir, "clusters"))`` writes ``<enc>-k<k>.json`` and ``<enc>.json``
    (the latest run, what the web app shows); ``Clusters.load(folder, encoder, k=None)``."""
    encoder: str = ""
    k: int = 0
    metric: str = "cosine"
    ids: list[str] = field(default_factory=list)
    assignments: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    centroids: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    silhouette: float | None = None
    k_scores: dict[int, dict[str, float]] | None = None   # choose_k's per-k table (k == "auto")
    config: ClusterConfig = field(default_factory=ClusterConfig)

    kind: ClassVar[str] = "clusters"
    version: ClassVar[int] = FORMAT_VERSION

    def fit(self, ids: Sequence[str], matrix: np.ndarray, metric: str = "cosine", encoder: str = "",
            progress: Callable[[int], None] | None = None) -> "Clusters":
        """k-means on (n, dim) ``matrix`` (unit length first for cosine), k from the config;
        ValueError with fewer than 2 items or k above n. ``progress(k)`` after each k tried."""
        if len(ids) < 2:
            raise ValueError("need at least 2 indexed items to cluster")
        vectors = prepare(matrix, metric)
        k, k_scores = self.config.k, None
        if k == "auto":
            low, high = self.config.k_range
            k, k_scores = choose_k(vectors, range(low, high + 1), metric, seed=self.config.seed, progress=progress,
                                   criterion=self.config.criterion)
        self.assignments, self.centroids, _ = kmeans(vectors, int(k), seed=self.config.seed)
        self.encoder, self.k, self.metric, self.ids, self.k_scores = encoder, int(k), metric, list(ids), k_scores
        self.silhouette = silhouette(vectors, self.assignments, metric, seed=self.config.seed)
        return self

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """(n, dim) vectors -> (n,) int64 id of the nearest centroid (prepared like the fit)."""
        # k-means assigns by Euclidean distance to the centroids, in the space the fit prepared.
        return exact_knn(prepare(matrix, self.metric), self.centroids, 1, "l2")[1][:, 0]

    def by_id(self) -> dict[str, int]:
        return dict(zip(self.ids, self.assignments.tolist()))

    def sizes(self) -> dict[int, int]:
        return dict(sorted(Counter(self.assignments.tolist()).items()))

    def save(self, directory) -> Path:
        """Write ``<enc>-k<k>.json`` and ``<enc>.json`` (atomically) into ``directory``; returns the former."""
        folder = Path(directory)
        doc = {"kind": self.kind, "version": self.version, "config": asdict(self.config),
               "encoder": self.encoder, "k": self.k, "metric": self.metric, "silhouette": self.silhouette,
               "k_scores": {str(k): v for k, v in (self.k_scores or {}).items()},
               "sizes": {str(c): n for c, n in self.sizes().items()},
               # float32 -> Python floats round-trip exactly, so a loaded clustering predicts the same
               "assignments": self.by_id(), "centroids": self.centroids.astype(np.float32).tolist()}
        target = folder / f"{encoder_key(self.encoder)}-k{self.k}.json"
        write_json(target, doc)
        write_json(folder / f"{encoder_key(self.encoder)}.json", doc)
        return target

    @classmethod
    def load(cls, directory, encoder: str, k: int | None = None) -> "Clusters":
        """The clustering of ``encoder`` saved in ``directory`` (latest run, or the one with ``k``);
        FileNotFoundError when there is none, ValueError for a newer format."""
        name = f"{encoder_key(encoder)}-k{k}.json" if k else f"{encoder_key(encoder)}.json"
        path = Path(directory) / name
        if not path.exists():
            raise FileNotFoundError(f"no clusters for {encoder!r} in {directory}; run `lookalike cluster`")
        doc = json.loads(path.read_text())
        if int(doc.get("version", 0)) > cls.version:
            raise ValueError(f"{path} was saved by a newer lookalike (format {doc['version']}); upgrade lookalike")
        ids = list(doc["assignments"])
        config = doc.get("config") or {}
        # files without a criterion chose "auto" by silhouette on the raw vectors (before the elbow rule)
        config = ClusterConfig(**{"criterion": "silhouette", **config, "k_range": tuple(config.get("k_range", (2, 20)))})
        return cls(encoder=doc["encoder"], k=int(doc["k"]), metric=doc["metric"], ids=ids,
                   assignments=np.array([doc["assignments"][i] for i in ids], np.int64),
                   centroids=np.array(doc["centroids"], np.float32), silhouette=doc.get("silhouette"),
                   k_scores={int(k): v if isinstance(v, dict) else {"silhouette": v}  # format 1: silhouette only
                             for k, v in (doc.get("k_scores") or {}).items()}, config=config)


def load_clusters(cat, encoder: str | None = None, k: int | None = None) -> Clusters | None:
    """The stored clustering of catalog ``cat`` for ``encoder`` (default: the catalog's; latest run,
    or the one with ``k``); None if none."""
    try:
        return Clusters.load(artifact_dir(cat.dir, "clusters"), encoder or cat.default_encoder, k)
    except FileNotFoundError:
        return None


def cluster_catalog(cat, encoder: str | None = None, k: int | str = "auto", k_range: Sequence[int] = DEFAULT_K_RANGE,
                    seed: int = 0, progress=None, criterion: str = "silhouette") -> Clusters:
    """Cluster ``cat``'s vectors for ``encoder`` (k an int or "auto", chosen over ``k_range`` by
    ``criterion``, see :func:`choose_k`), save
    under ``artifact_dir(cat.dir, "clusters")`` and return the result. LookupError when the catalog
    has no such vectors, ValueError when it has fewer than 2."""
    encoder, ids, matrix, metric = cat.vectors_with_metric(encoder)
    clusters = Clusters(config=ClusterConfig(k=k, k_range=(min(k_range), max(k_range)), seed=seed, criterion=criterion))
    clusters.fit(ids, matrix, metric, encoder, progress)
    clusters.save(artifact_dir(cat.dir, "clusters"))
    return clusters


@dataclass
class ClusterSummary:
    """One stored cluster as the web app shows it."""
    id: int
    size: int                       # members still in the catalog
    label: str | None               # majority label (None when no member has a label)
    purity: float | None            # the majority label's share of the cluster's labelled members
    examples: list[tuple[str, str | None]]  # (id, label) of the members nearest the centroid, nearest first
    label_mix: list[tuple[str, int]] = field(default_factory=list)  # (label, members) most first; unlabelled left out


def summarise_clusters(cat, encoder: str | None = None, examples: int = 8) -> tuple[Clusters, list[ClusterSummary]] | None:
    """The stored clustering of ``cat`` (``load_clusters``) summarised per cluster, largest first;
    None when nothing is stored. Items removed since the clustering are left out."""
    stored = load_clusters(cat, encoder)
    if stored is None:
        return None
    labels = {it.id: it.label for it in cat.items()}
    present = [i for i, item_id in enumerate(stored.ids) if item_id in labels]
    ids = [stored.ids[i] for i in present]
    assignments = stored.assignments[present]
    majority = _majority_labels([labels[i] for i in ids], assignments)
    all_ids, matrix = cat.vectors(stored.encoder)
    position = {item_id: i for i, item_id in enumerate(all_ids)}
    vectors = prepare(matrix[[position[i] for i in ids]], stored.metric)
    out = []
    for cluster_id in stored.sizes():
        members = np.flatnonzero(assignments == cluster_id)
        if len(members) == 0:
            continue
        centre = stored.centroids[cluster_id]
        # k-means centroids are Euclidean means (of unit vectors for cosine): examples nearest by l2
        _, nearest = exact_knn(centre[None], vectors[members], examples, "l2")
        order = members[nearest[0][nearest[0] >= 0]]
        label, purity = majority.get(int(cluster_id), (None, None))
        mix = Counter(labels[ids[m]] for m in members if labels[ids[m]] not in (None, ""))
        out.append(ClusterSummary(id=int(cluster_id), size=int(len(members)), label=label, purity=purity,
                                  examples=[(ids[m], labels[ids[m]]) for m in order],
                                  label_mix=sorted(mix.items(), key=lambda kv: (-kv[1], kv[0]))))
    out.sort(key=lambda c: -c.size)
    return stored, out


def _majority_labels(labels, assignments) -> dict[int, tuple[str, float]]:
    """cluster -> (majority label, its share of the cluster's labelled items), from
    ``label_agreement`` (empty when no item has a label)."""
    try:
        agreement = label_agreement(labels, assignments)
    except ValueError:
        return {}
    counts = agreement.confusion  # rows: labels, columns: clusters
    return {int(c): (agreement.cluster_to_label[c], float(counts[:, j].max() / counts[:, j].sum()))
            for j, c in enumerate(agreement.cluster_ids)}

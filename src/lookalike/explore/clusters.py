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

# Silhouette is O(n^2): score candidate k on a sample of this many vectors.
SILHOUETTE_SAMPLE = 2000
DEFAULT_K_RANGE = range(2, 21)


def kmeans(vectors: np.ndarray, k: int, seed: int = 0, n_init: int = 4):
    """Fit scikit-learn k-means; returns (assignments (n,) int, centroids (k, dim) float32, inertia)."""
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


def choose_k(vectors: np.ndarray, k_range: Sequence[int] = DEFAULT_K_RANGE, metric: str = "cosine",
             sample: int = SILHOUETTE_SAMPLE, seed: int = 0, progress=None) -> tuple[int, dict[int, float]]:
    """Pick k by the mean silhouette of k-means fitted on a sample.

    Silhouette needs no labels and rewards clusters that are both tight and well separated, unlike
    inertia (which always falls as k grows, so its "elbow" is a judgement call). Fitting on a
    sample keeps the sweep to seconds; the final model is then fitted on all vectors.
    """
    rows = _sample(len(vectors), sample, seed)
    sub = vectors[rows]
    candidates = [k for k in k_range if 2 <= k < len(sub)]
    if not candidates:
        raise ValueError(f"need more items than k to choose k (have {len(sub)})")
    scores: dict[int, float] = {}
    for k in candidates:
        assignments, _, _ = kmeans(sub, k, seed=seed, n_init=2)
        score = silhouette(sub, assignments, metric, sample=len(sub), seed=seed)
        scores[k] = float("-inf") if score is None else score
        if progress:
            progress(k)
    return max(scores, key=scores.get), scores


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
    k: int | str = "auto"                 # a number of clusters, or "auto": the best silhouette in k_range
    k_range: tuple[int, int] = (2, 20)    # inclusive bounds searched when k == "auto"
    seed: int = 0


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
    k_scores: dict[int, float] | None = None
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
            k, k_scores = choose_k(vectors, range(low, high + 1), metric, seed=self.config.seed, progress=progress)
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
        config = ClusterConfig(**{**config, "k_range": tuple(config.get("k_range", (2, 20)))})
        return cls(encoder=doc["encoder"], k=int(doc["k"]), metric=doc["metric"], ids=ids,
                   assignments=np.array([doc["assignments"][i] for i in ids], np.int64),
                   centroids=np.array(doc["centroids"], np.float32), silhouette=doc.get("silhouette"),
                   k_scores={int(k): v for k, v in (doc.get("k_scores") or {}).items()}, config=config)


def load_clusters(cat, encoder: str | None = None, k: int | None = None) -> Clusters | None:
    """The stored clustering of catalog ``cat`` for ``encoder`` (default: the catalog's; latest run,
    or the one with ``k``); None if none."""
    try:
        return Clusters.load(artifact_dir(cat.dir, "clusters"), encoder or cat.default_encoder, k)
    except FileNotFoundError:
        return None


def cluster_catalog(cat, encoder: str | None = None, k: int | str = "auto", k_range: Sequence[int] = DEFAULT_K_RANGE,
                    seed: int = 0, progress=None) -> Clusters:
    """Cluster ``cat``'s vectors for ``encoder`` (k an int or "auto", searched over ``k_range``), save
    under ``artifact_dir(cat.dir, "clusters")`` and return the result. LookupError when the catalog
    has no such vectors, ValueError when it has fewer than 2."""
    encoder, ids, matrix, metric = cat.vectors_with_metric(encoder)
    clusters = Clusters(config=ClusterConfig(k=k, k_range=(min(k_range), max(k_range)), seed=seed))
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
        out.append(ClusterSummary(id=int(cluster_id), size=int(len(members)), label=label, purity=purity,
                                  examples=[(ids[m], labels[ids[m]]) for m in order]))
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

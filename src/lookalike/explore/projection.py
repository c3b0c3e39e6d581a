"""A 2-D map of a catalog: PCA then t-SNE or UMAP, drawn (``lookalike.viz.map``) as a large PNG of
thumbnails placed at their coordinates (framed in a colour per label or cluster), plus JSON
coordinates for the web app (``Projection``, the learned-component contract of :mod:`lookalike.train.base`).

PCA to 50 dimensions first keeps t-SNE/UMAP fast and drops the noisiest directions; both then
preserve neighbourhoods, not global distances, so nearby thumbnails mean "similar" and far-apart
islands only mean "different".
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, ClassVar, Sequence

import numpy as np

from lookalike.data.artifacts import encoder_key, save_image, write_json
from lookalike.explore.clusters import load_clusters
from lookalike.index.distances import prepare
from lookalike.train.base import artifact_dir
from lookalike.viz.map import UNLABELLED, render

PROJECTIONS = ("tsne", "umap", "pca")
PCA_DIMS = 50
FORMAT_VERSION = 1


def project(vectors: np.ndarray, method: str = "tsne", metric: str = "cosine", pca_dims: int = PCA_DIMS,
            seed: int = 0) -> np.ndarray:
    """(n, dim) -> (n, 2) float32 coordinates."""
    # scikit-learn takes ~6 s to import: loaded on use, not by `import lookalike` / `lookalike --help`
    from sklearn.decomposition import PCA

    if method not in PROJECTIONS:
        raise ValueError(f"unknown projection {method!r}; choose one of {', '.join(PROJECTIONS)}")
    x = prepare(vectors, metric)
    n = len(x)
    if n < 3:  # nothing to learn: a line is as good as anything
        return np.stack([np.arange(n, dtype=np.float32), np.zeros(n, np.float32)], axis=1)
    dims = min(pca_dims, x.shape[1], n)
    reduced = PCA(n_components=dims, random_state=seed).fit_transform(x)
    if method == "pca":
        return reduced[:, :2].astype(np.float32)
    if method == "tsne":
        # scikit-learn takes ~6 s to import: loaded on use, not by `import lookalike` / `lookalike --help`
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                    metric="cosine" if metric == "cosine" else "euclidean").fit_transform(reduced).astype(np.float32)
    try:
        import umap  # umap-learn; imported here because it compiles with numba on first use
    except ImportError:
        raise ValueError("--method umap needs umap-learn: pip install 'lookalike[explore]' (or use tsne)") from None

    neighbours = int(min(15, n - 1))
    return umap.UMAP(n_neighbors=neighbours, random_state=seed, n_jobs=1,
                     metric="cosine" if metric == "cosine" else "euclidean").fit_transform(reduced).astype(np.float32)


def normalise(coords: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] on both axes (keeping the aspect ratio), centred."""
    coords = np.asarray(coords, np.float64)
    low, high = coords.min(axis=0), coords.max(axis=0)
    span = max(float((high - low).max()), 1e-12)
    return ((coords - low) / span + (1 - (high - low) / span) / 2).astype(np.float32)


# -- the learned map ------------------------------------------------------------------------------

@dataclass
class ProjectionConfig:
    method: str = "tsne"      # tsne | umap | pca
    pca_dims: int = PCA_DIMS
    seed: int = 0

    def __post_init__(self):
        if self.method not in PROJECTIONS:
            raise ValueError(f"unknown projection {self.method!r}; choose one of {', '.join(PROJECTIONS)}")


@dataclass
class Projection:
    """A catalog's 2-D map (:mod:`lookalike.train.base` contract): ``fit(ids, vectors, metric)`` places
    every item at x/y in [0, 1] (float64, rounded to 5 decimals: exactly what the JSON stores);
    ``save(artifact_dir(catalog_dir, "map"))`` writes ``<enc>-<method>.json`` and ``<enc>.json`` (the
    latest, what the web app reads: one point per item with its label and cluster);
    ``Projection.load(folder, encoder, method=None)``. t-SNE/UMAP place only the items they were
    fitted on, so a map is redrawn (not extended) after re-indexing."""
    config: ProjectionConfig = field(default_factory=ProjectionConfig)
    encoder: str = ""
    ids: list[str] = field(default_factory=list)
    coords: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    labels: list = field(default_factory=list)            # per item, for the web app's tooltips
    clusters: list | None = None                          # per item, when clusters are stored
    colour_by: str = "label"
    image: dict = field(default_factory=dict)             # png file name, width, height of the drawing

    kind: ClassVar[str] = "map"
    version: ClassVar[int] = FORMAT_VERSION

    def fit(self, ids: Sequence[str], vectors: np.ndarray, metric: str = "cosine", encoder: str = "") -> "Projection":
        cfg = self.config
        coords = normalise(project(vectors, cfg.method, metric, cfg.pca_dims, cfg.seed))
        self.ids, self.encoder = list(ids), encoder
        self.coords = np.round(coords.astype(np.float64), 5)
        self.labels = self.labels or [None] * len(self.ids)
        return self

    def document(self) -> dict:
        """What the web app reads: one point per item, x/y in [0, 1] (y grows downwards, as on screen)."""
        points = [{"id": item_id, "x": float(x), "y": float(y), "label": self.labels[i],
                   "cluster": None if self.clusters is None else self.clusters[i]}
                  for i, (item_id, (x, y)) in enumerate(zip(self.ids, self.coords))]
        return {"kind": self.kind, "version": self.version, "config": asdict(self.config), "encoder": self.encoder,
                "method": self.config.method, "colour_by": self.colour_by, "points": points, **self.image}

    def save(self, directory) -> Path:
        """Write ``<enc>-<method>.json`` and ``<enc>.json`` (atomically) into ``directory``; returns the former."""
        folder, key = Path(directory), encoder_key(self.encoder)
        doc = self.document()
        target = write_json(folder / f"{key}-{self.config.method}.json", doc)
        write_json(folder / f"{key}.json", doc)
        return target

    @classmethod
    def load(cls, directory, encoder: str, method: str | None = None) -> "Projection":
        """The map of ``encoder`` saved in ``directory`` (latest, or the given projection method);
        FileNotFoundError when there is none."""
        key = encoder_key(encoder)
        path = Path(directory) / (f"{key}-{method}.json" if method else f"{key}.json")
        if not path.exists():
            raise FileNotFoundError(f"no map for {encoder!r} in {directory}; run `lookalike map`")
        doc = json.loads(path.read_text())
        if int(doc.get("version", 0)) > cls.version:
            raise ValueError(f"{path} was saved by a newer lookalike (format {doc['version']}); upgrade lookalike")
        names = {f.name for f in fields(ProjectionConfig)}
        config = ProjectionConfig(**{k: v for k, v in (doc.get("config") or {"method": doc["method"]}).items()
                                     if k in names})
        points = doc["points"]
        clusters = [p["cluster"] for p in points]
        return cls(config=config, encoder=doc["encoder"], ids=[p["id"] for p in points],
                   coords=np.array([[p["x"], p["y"]] for p in points], np.float64).reshape(-1, 2),
                   labels=[p["label"] for p in points], clusters=None if all(c is None for c in clusters) else clusters,
                   colour_by=doc.get("colour_by", "label"),
                   image={k: doc[k] for k in ("png", "width", "height") if k in doc})


# -- catalog layer --------------------------------------------------------------------------------

@dataclass
class MapResult:
    png: Path
    json: Path
    points: int


def load_map(cat, encoder: str | None = None, method: str | None = None) -> dict | None:
    """The stored map document of ``cat`` for ``encoder`` (latest, or the given projection); None if none."""
    path = artifact_dir(cat.dir, "map") / (f"{encoder_key(encoder or cat.default_encoder)}"
                                           + (f"-{method}.json" if method else ".json"))
    return json.loads(path.read_text()) if path.exists() else None


def map_catalog(cat, encoder: str | None = None, method: str = "tsne", colour_by: str = "label",
                size: int = 4000, thumb: int = 56, seed: int = 0, progress: Callable | None = None) -> MapResult:
    """Project ``cat``'s vectors, draw the thumbnail map and store PNG + JSON under
    ``artifact_dir(cat.dir, "map")``. LookupError without vectors (or stored clusters for
    ``colour_by="cluster"``), ValueError for an unknown method."""
    encoder, ids, matrix, metric = cat.vectors_with_metric(encoder)
    if len(ids) == 0:
        raise ValueError(f"catalog {cat.name!r} has no vectors for {encoder!r}")
    labels = cat.labels("label", encoder)
    stored = load_clusters(cat, encoder)
    clusters = None
    if stored is not None:
        by_id = stored.by_id()
        clusters = [by_id.get(i) for i in ids]
    if colour_by == "cluster":
        if clusters is None:
            raise LookupError(f"no clusters stored for {encoder!r}; run `lookalike cluster --catalog {cat.name}` first")
        keys = [UNLABELLED if c is None else f"cluster {c}" for c in clusters]
    else:
        values = labels if colour_by == "label" else cat.labels(colour_by, encoder)
        keys = [UNLABELLED if v in (None, "") else str(v) for v in values]
    projection = Projection(ProjectionConfig(method=method, seed=seed), labels=labels, clusters=clusters,
                            colour_by=colour_by).fit(ids, matrix, metric, encoder)
    items = {it.id: it for it in cat.items()}
    image = render(projection.coords, [items[i].path for i in ids], keys, size, thumb,
                   title=f"{cat.name} · {encoder} · {method} · colour = {colour_by}", seed=seed, progress=progress)
    folder = artifact_dir(cat.dir, "map")
    png = save_image(folder / f"{encoder_key(encoder)}-{method}.png", image, optimize=True)
    projection.image = {"png": png.name, "width": image.width, "height": image.height}
    target = projection.save(folder)
    return MapResult(png=png, json=target, points=len(ids))

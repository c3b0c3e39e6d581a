"""A 2-D map of a catalog: PCA then t-SNE or UMAP, drawn (``lookalike.viz.map``) as a large PNG of
thumbnails placed at their coordinates (framed in a colour per label or cluster), plus JSON
coordinates for the web app.

PCA to 50 dimensions first keeps t-SNE/UMAP fast and drops the noisiest directions; both then
preserve neighbourhoods, not global distances, so nearby thumbnails mean "similar" and far-apart
islands only mean "different".
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from lookalike.data.artifacts import encoder_key, save_image, write_json
from lookalike.index.distances import prepare
from lookalike.viz.map import UNLABELLED, render

PROJECTIONS = ("tsne", "umap", "pca")
PCA_DIMS = 50


def project(vectors: np.ndarray, method: str = "tsne", metric: str = "cosine", pca_dims: int = PCA_DIMS,
            seed: int = 0) -> np.ndarray:
    """(n, dim) -> (n, 2) float32 coordinates."""
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


# -- catalog layer --------------------------------------------------------------------------------

@dataclass
class MapResult:
    png: Path
    json: Path
    points: int


def map_dir(catalog_dir: Path) -> Path:
    return Path(catalog_dir) / "artifacts" / "map"


def map_document(ids: Sequence[str], coords01: np.ndarray, labels: Sequence, clusters: Sequence | None,
                 encoder: str, method: str, colour_by: str) -> dict:
    """What the web app reads: one point per item, x/y in [0, 1] (y grows downwards, as on screen)."""
    points = [{"id": item_id, "x": round(float(x), 5), "y": round(float(y), 5),
               "label": labels[i], "cluster": None if clusters is None else clusters[i]}
              for i, (item_id, (x, y)) in enumerate(zip(ids, coords01))]
    return {"encoder": encoder, "method": method, "colour_by": colour_by, "points": points}


def write_map(catalog_dir: Path, doc: dict, image: Image.Image) -> MapResult:
    folder = map_dir(catalog_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{encoder_key(doc['encoder'])}-{doc['method']}"
    png = save_image(folder / f"{stem}.png", image, optimize=True)
    doc = {**doc, "png": png.name, "width": image.width, "height": image.height}
    target = folder / f"{stem}.json"
    for path in (target, folder / f"{encoder_key(doc['encoder'])}.json"):  # the latter: latest, for the web app
        write_json(path, doc)
    return MapResult(png=png, json=target, points=len(doc["points"]))


def load_map(cat, encoder: str | None = None, method: str | None = None) -> dict | None:
    """The stored map of ``cat`` for ``encoder`` (latest, or the given projection); None if none."""
    encoder = encoder or cat.default_encoder
    name = f"{encoder_key(encoder)}-{method}.json" if method else f"{encoder_key(encoder)}.json"
    path = map_dir(cat.dir) / name
    return json.loads(path.read_text()) if path.exists() else None


def map_catalog(cat, encoder: str | None = None, method: str = "tsne", colour_by: str = "label",
                size: int = 4000, thumb: int = 56, seed: int = 0, progress: Callable | None = None) -> MapResult:
    """Project ``cat``'s vectors, draw the thumbnail map and store PNG + JSON under artifacts/map/."""
    from lookalike.explore.clusters import load_clusters

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
    coords = normalise(project(matrix, method, metric, seed=seed))
    items = {it.id: it for it in cat.items()}
    image = render(coords, [items[i].path for i in ids], keys, size, thumb,
                   title=f"{cat.name} · {encoder} · {method} · colour = {colour_by}", seed=seed, progress=progress)
    doc = map_document(ids, coords, labels, clusters, encoder, method, colour_by)
    return write_map(cat.dir, doc, image)

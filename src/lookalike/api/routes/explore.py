"""Exploring a catalog as a whole: clusters, the 2-D map, duplicates, and goes-with per item.

Each endpoint reads what the feature's library module stored or computes (``lookalike.explore.clusters``,
``lookalike.explore.projection``, ``lookalike.explore.duplicates``, ``lookalike.explore.goes_with``); when a feature has not
been run for this catalog yet, the answer is a 501 naming the command that creates it.
"""
from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Depends, Query

from lookalike.api import features
from lookalike.api.errors import BadRequest, NotFound
from lookalike.api.schemas import (MAX_K, ClusterResponse, DuplicateResponse, ErrorResponse, GoesWithResponse,
                                  MapResponse)
from lookalike.api.deps import AppState, get_state, item_summary, item_urls, summary

router = APIRouter(tags=["explore"])
_501 = {501: {"model": ErrorResponse}}


def _labels_by_id(cat) -> dict[str, str | None]:
    return {it.id: it.label for it in cat.items()}


@router.get("/clusters", response_model=ClusterResponse, responses=_501)
def clusters(encoder: str | None = Query(None, max_length=200), examples: int = Query(8, ge=1, le=48),
             state: AppState = Depends(get_state)) -> dict:
    """The stored clustering (from ``lookalike cluster``): size, majority label and purity per cluster,
    with the members closest to each centroid as examples."""
    clustering = features.module("clusters")
    cat = state.catalog
    stored = clustering.load_clusters(cat, encoder)
    if stored is None:
        raise features.unavailable("clusters", f"no clusters stored for catalog {cat.name!r} yet: "
                                   f"run `lookalike cluster --catalog {cat.name} --label label`")
    labels = _labels_by_id(cat)
    present = [i for i, item_id in enumerate(stored.ids) if item_id in labels]  # items removed since
    ids = [stored.ids[i] for i in present]
    assignments = stored.assignments[present]
    majority = _majority_labels(clustering, [labels[i] for i in ids], assignments)
    _, matrix = _aligned_vectors(cat, stored.encoder, ids)
    vectors = clustering.prepare(matrix, stored.metric)
    out = []
    for cluster_id in stored.sizes():
        members = np.flatnonzero(assignments == cluster_id)
        if len(members) == 0:
            continue
        centre = stored.centroids[cluster_id]
        order = members[np.argsort(((vectors[members] - centre) ** 2).sum(axis=1))][:examples]
        label, purity = majority.get(int(cluster_id), (None, None))
        out.append({"id": int(cluster_id), "size": int(len(members)), "label": label, "purity": purity,
                    "examples": [summary(ids[m], labels[ids[m]], {}) for m in order]})
    out.sort(key=lambda c: -c["size"])
    return {"encoder": stored.encoder, "method": f"k-means, k={stored.k}", "clusters": out}


def _aligned_vectors(cat, encoder: str, ids: list[str]) -> tuple[list[str], np.ndarray]:
    all_ids, matrix = cat.vectors(encoder)
    position = {item_id: i for i, item_id in enumerate(all_ids)}
    rows = [position[i] for i in ids]
    return ids, matrix[rows]


def _majority_labels(clustering, labels, assignments) -> dict[int, tuple[str, float]]:
    """cluster -> (majority label, its share of the cluster's labelled items), from
    ``clustering.label_agreement`` (empty when no item has a label)."""
    try:
        agreement = clustering.label_agreement(labels, assignments)
    except ValueError:
        return {}
    counts = agreement.confusion  # rows: labels, columns: clusters
    return {int(c): (agreement.cluster_to_label[c], float(counts[:, j].max() / counts[:, j].sum()))
            for j, c in enumerate(agreement.cluster_ids)}


@router.get("/map", response_model=MapResponse, responses=_501)
def catalog_map(encoder: str | None = Query(None, max_length=200), state: AppState = Depends(get_state)) -> dict:
    """The stored 2-D map (from ``lookalike map``): x, y in [0, 1] per item."""
    viz_map = features.module("map")
    cat = state.catalog
    doc = viz_map.load_map(cat, encoder)
    if doc is None:
        raise features.unavailable("map", f"no map stored for catalog {cat.name!r} yet: run `lookalike map --catalog {cat.name}`")
    points = [{"id": p["id"], "x": p["x"], "y": p["y"], "label": p.get("label"), "cluster": p.get("cluster"),
               "thumb_url": item_urls(p["id"])["thumb_url"] + "?size=128"} for p in doc["points"]]
    return {"encoder": doc.get("encoder"), "method": doc.get("method"), "points": points}


@router.get("/duplicates", response_model=DuplicateResponse, responses=_501)
def duplicates(threshold: float = Query(None, gt=0.0, le=2.0, description="max cosine distance (default: the library's)"),
               limit: int = Query(50, ge=1, le=500), state: AppState = Depends(get_state)) -> dict:
    """Exact and near-duplicate groups, largest first (computed on the stored vectors, memoised)."""
    dup = features.module("duplicates")
    clustering = features.module("clusters")
    cat = state.catalog
    threshold = dup.DEFAULT_THRESHOLD if threshold is None else threshold
    encoder, ids, matrix, metric = clustering.catalog_vectors(cat)
    key = ("duplicates", encoder, threshold, cat.version(encoder))
    with state.lock:
        if key not in state.memo:
            items = {it.id: it for it in cat.items()}
            groups = dup.find_duplicates(matrix, [items[i].sha256 for i in ids], threshold, metric)
            state.memo[key] = (groups, {i: items[i].label for i in ids})
        groups, labels = state.memo[key]
    return {"encoder": encoder, "threshold": threshold, "items_checked": len(ids), "total_groups": len(groups),
            "groups": [{"items": [summary(ids[r], labels[ids[r]], {}) for r in g.rows], "exact": g.exact,
                        "max_distance": g.max_distance} for g in groups[:limit]]}


@router.get("/items/{item_id:path}/goes-with", response_model=GoesWithResponse, responses={**_501, 404: {"model": ErrorResponse}})
def goes_with(item_id: str, k: int = Query(8, ge=1, le=MAX_K),
              method: str = Query("centroid", pattern="^(centroid|colour)$"),
              state: AppState = Depends(get_state)) -> dict:
    """Items of every *other* category that go with this one (``lookalike.explore.goes_with.recommend``)."""
    gw = features.module("goes_with")
    item = state.item(item_id)
    cat = state.catalog
    key = ("goes_with", method == "colour", cat.default_encoder, cat.version(cat.default_encoder))
    with state.lock:
        if key not in state.memo:
            state.memo[key] = gw.catalog_data(cat, with_colour=method == "colour")
        data = state.memo[key]
    if item.id not in data.row_of:
        raise NotFound(f"item {item.id!r} has no vector for encoder {cat.default_encoder!r}")
    row = data.row_of[item.id]
    own = data.categories[row]
    rows = []
    for category in data.category_names():
        if category == own:
            continue
        try:
            ranked = gw.recommend(data, row, category, k=k, method=method)
        except ValueError as exc:  # e.g. the item has no category to move from
            raise BadRequest(str(exc)) from None
        rows.append({"category": category, "results": [
            {**summary(data.ids[r], data.categories[r], {}), "rank": n + 1, "score": score,
             "distance": 1.0 - score if data.metric == "cosine" else -score}
            for n, (r, score) in enumerate(ranked)]})
    return {"query": item_summary(item), "method": method, "rows": rows}

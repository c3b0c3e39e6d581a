"""Exploring a catalog as a whole: clusters, the 2-D map, duplicates, and goes-with per item.

Each endpoint reads what the feature's library module stored or computes (``lookalike.explore.clusters``,
``lookalike.explore.projection``, ``lookalike.explore.duplicates``, ``lookalike.explore.goes_with``); when a feature has not
been run for this catalog yet, the answer is a 409 naming the command that creates it.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from lookalike.api import features
from lookalike.api.errors import BadRequest, NotFound
from lookalike.api.schemas import (MAX_K, ClusterResponse, DuplicateResponse, ErrorResponse, GoesWithResponse,
                                  MapResponse)
from lookalike.api.deps import AppState, get_state, hit, item_summary, item_urls, summary
from lookalike.explore import clusters as clustering, duplicates as dup, goes_with as gw, projection
from lookalike.explore.stored import staleness

router = APIRouter(tags=["explore"])
_UNAVAILABLE = {409: {"model": ErrorResponse}}


@router.get("/clusters", response_model=ClusterResponse, responses=_UNAVAILABLE)
def clusters(encoder: str | None = Query(None, max_length=200), examples: int = Query(8, ge=1, le=48),
             state: AppState = Depends(get_state)) -> dict:
    """The stored clustering (from ``lookalike cluster``): size, majority label and purity per cluster,
    with the members closest to each centroid as examples."""
    cat = state.catalog
    found = clustering.summarise_clusters(cat, encoder, examples)
    if found is None:
        raise features.unavailable("clusters", f"no clusters stored for catalog {cat.name!r} yet: "
                                   f"run `lookalike cluster --catalog {cat.name} --label label`")
    stored, summaries = found
    chosen_by = stored.config.criterion if stored.config.k == "auto" else "user"
    return {**staleness(cat, stored.ids, stored.encoder, f"lookalike cluster --catalog {cat.name}"),
            "encoder": stored.encoder, "method": f"k-means, k={stored.k}", "k_chosen_by": chosen_by,
            "labels": sorted({label for c in summaries for label, _ in c.label_mix}),
            "clusters": [{"id": c.id, "size": c.size, "label": c.label, "purity": c.purity,
                          "examples": [summary(i, label, {}) for i, label in c.examples],
                          "label_mix": [{"label": label, "count": n} for label, n in c.label_mix]} for c in summaries]}


@router.get("/map", response_model=MapResponse, responses=_UNAVAILABLE)
def catalog_map(encoder: str | None = Query(None, max_length=200), state: AppState = Depends(get_state)) -> dict:
    """The stored 2-D map (from ``lookalike map``): x, y in [0, 1] per item."""
    cat = state.catalog
    doc = projection.load_map(cat, encoder)
    if doc is None:
        raise features.unavailable("map", f"no map stored for catalog {cat.name!r} yet: run `lookalike map --catalog {cat.name}`")
    points = [{"id": p["id"], "x": p["x"], "y": p["y"], "label": p.get("label"), "cluster": p.get("cluster"),
               "thumb_url": item_urls(p["id"])["thumb_url"] + "?size=128"} for p in doc["points"]]
    return {**staleness(cat, [p["id"] for p in doc["points"]], doc.get("encoder"), f"lookalike map --catalog {cat.name}"),
            "encoder": doc.get("encoder"), "method": doc.get("method"), "points": points}


@router.get("/duplicates", response_model=DuplicateResponse, responses=_UNAVAILABLE)
def duplicates(threshold: float = Query(None, gt=0.0, le=2.0, description="max cosine distance (default: the library's)"),
               limit: int = Query(50, ge=1, le=500), state: AppState = Depends(get_state)) -> dict:
    """Exact and near-duplicate groups, largest first (computed on the stored vectors, memoised)."""
    cat = state.catalog
    threshold = dup.DEFAULT_THRESHOLD if threshold is None else threshold
    encoder = cat.default_encoder
    key = ("duplicates", encoder, threshold, cat.version(encoder), cat.data_version())  # shows labels
    with state.lock:
        if key not in state.memo:
            state.memo[key] = dup.duplicate_groups(cat, encoder, threshold)
        found = state.memo[key]
    items = found.items
    return {"encoder": found.encoder, "threshold": threshold, "items_checked": len(items),
            "total_groups": len(found.groups),
            "groups": [{"items": [summary(items[r].id, items[r].label, {}) for r in g.rows], "exact": g.exact,
                        "max_distance": g.max_distance} for g in found.groups[:limit]]}


@router.get("/items/{item_id:item}/goes-with", response_model=GoesWithResponse, responses={**_UNAVAILABLE, 404: {"model": ErrorResponse}})
def goes_with(item_id: str, k: int = Query(8, ge=1, le=MAX_K),
              method: str = Query("centroid", pattern="^(centroid|colour)$"),
              state: AppState = Depends(get_state)) -> dict:
    """Items of every *other* category that go with this one (``lookalike.explore.goes_with.recommend``)."""
    item = state.item(item_id)
    cat = state.catalog
    key = ("goes_with", method == "colour", cat.default_encoder, cat.data_version())  # categories: labels
    with state.lock:
        if key not in state.memo:
            state.memo[key] = gw.catalog_data(cat, with_colour=method == "colour")
        data = state.memo[key]
    if item.id not in data.row_of:
        raise NotFound(f"item {item.id!r} has no vector for encoder {cat.default_encoder!r}")
    try:
        rows = gw.recommend_item(cat, data, item.id, k=k, method=method)
    except ValueError as exc:  # e.g. the item has no category to move from
        raise BadRequest(str(exc)) from None
    return {"query": item_summary(item), "method": method, "rows": [
        {"category": category, "results": [hit(h) for h in hits]}
        for category, hits in rows.items()]}

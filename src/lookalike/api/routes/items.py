"""Browsing: paged item lists with metadata filters, images, cached thumbnails, more-like-this."""
from __future__ import annotations

import io
from typing import List, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse, Response

from lookalike.api.errors import BadRequest
from lookalike.api.schemas import MAX_CLAUSES, MAX_EXAMPLES, MAX_K, ErrorResponse, ItemPage, SearchResponse
from lookalike.api.deps import (THUMB_SIZES, AppState, browse_filters, get_state, item_summary, parse_filters,
                                search_response)
from lookalike.catalog import FilterError, UnknownColumn
from lookalike.api.uploads import sniff_image_type

router = APIRouter(tags=["items"])
_BROWSER_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "gif": "image/gif"}
_NOT_FOUND = {404: {"model": ErrorResponse}}
_CACHE = {"Cache-Control": "public, max-age=86400"}


@router.get("/items", response_model=ItemPage)
def list_items(
    offset: int = Query(0, ge=0),
    limit: int = Query(48, ge=1, le=200),
    label: str | None = Query(None, max_length=200),
    filter: list[str] = Query([], max_length=10, description="metadata filter, repeatable: key:value, or a "
                         "search filter clause (colour=red, price<50, colour in red,blue, brand exists)"),
    state: AppState = Depends(get_state),
) -> dict:
    where, clauses = browse_filters(label, filter)
    total = state.catalog.count(where, filters=clauses)
    items = state.catalog.items(where=where, limit=limit, offset=offset, filters=clauses)
    return {"total": total, "offset": offset, "limit": limit, "items": [item_summary(i) for i in items]}


@router.get("/items/{item_id:item}/image", responses=_NOT_FOUND, response_class=Response)
def item_image(item_id: str, state: AppState = Depends(get_state)):
    """The catalog's own image file (browser formats as stored; others converted to PNG)."""
    item = state.item(item_id)
    path = state.image_file(item)
    with open(path, "rb") as fh:
        kind = sniff_image_type(fh.read(16))
    if kind in _BROWSER_TYPES:
        return FileResponse(path, media_type=_BROWSER_TYPES[kind], headers=_CACHE)
    buf = io.BytesIO()
    state.image(item).save(buf, "PNG")
    return Response(buf.getvalue(), media_type="image/png", headers=_CACHE)


@router.get("/items/{item_id:item}/thumb", responses=_NOT_FOUND, response_class=FileResponse)
def item_thumbnail(item_id: str, size: int = Query(256, description=f"one of {THUMB_SIZES}"),
                   state: AppState = Depends(get_state)):
    if size not in THUMB_SIZES:
        raise BadRequest(f"thumbnail size must be one of {', '.join(map(str, THUMB_SIZES))}")
    item = state.item(item_id)
    return FileResponse(state.thumbnail_path(item, size), media_type="image/jpeg", headers=_CACHE)


@router.get("/items/{item_id:item}/similar", response_model=SearchResponse, responses=_NOT_FOUND)
def similar_items(item_id: str, k: int = Query(12, ge=1, le=MAX_K),
                  label: str | None = Query(None, max_length=200),
                  min_score: float | None = Query(None, ge=-1.0, le=1.0),
                  encoder: str | None = Query(None, max_length=200),
                  filter: List[str] = Query([], max_length=MAX_CLAUSES, description="filter clauses (as POST /api/search)"),
                  boost: List[str] = Query([], max_length=MAX_CLAUSES, description="CONDITION:WEIGHT boosts"),
                  group_by: str | None = Query(None, max_length=200, description="one result per value of this "
                                               "column; the item's whole product is excluded"),
                  variant: str | None = Query(None, max_length=200, description="with group_by: the variant column"),
                  more: List[str] = Query([], max_length=MAX_EXAMPLES, description="more like these items too: "
                                          "ID or ID:WEIGHT (repeatable)"),
                  less: List[str] = Query([], max_length=MAX_EXAMPLES, description="less like these items: "
                                          "ID or ID:WEIGHT (repeatable)"),
                  combine: Literal["mean", "max"] = Query("mean", description="how examples combine (mean | max)"),
                  diversity: float = Query(0.0, ge=0.0, le=1.0, description="MMR λ (0 = off)"),
                  collapse_duplicates: bool = Query(False, description="fold near duplicates into the better hit"),
                  state: AppState = Depends(get_state)) -> dict:
    """More like this: the item's nearest neighbours (itself excluded), steered by more/less
    examples, diversity and duplicate collapse (example items are never returned)."""
    item = state.item(item_id)
    examples = state.item_examples(more, less)
    try:
        results = state.catalog.search(item=item.id, k=k, where=parse_filters(label, []), min_score=min_score,
                                       encoder=encoder, filters=filter, boosts=boost, group_by=group_by or None,
                                       variant=variant or None, examples=examples, combine=combine,
                                       diversity=diversity, collapse_duplicates=collapse_duplicates)
    except (UnknownColumn, FilterError):
        raise  # 422 from the app's handlers
    except ValueError as exc:  # examples that cancel out
        raise BadRequest(str(exc)) from None
    return search_response(results, item_summary(item), encoder or state.catalog.default_encoder)

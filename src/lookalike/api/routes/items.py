"""Browsing: paged item lists with metadata filters, images, cached thumbnails, more-like-this."""
from __future__ import annotations

import io
from typing import List, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response

from lookalike.api.errors import BadRequest
from lookalike.api.schemas import DEFAULT_SIMILAR_K, MAX_CLAUSES, MAX_EXAMPLES, MAX_K, ErrorResponse, ItemPage, SearchResponse
from lookalike.api.deps import (ANSWER_CACHE, IMAGE_CACHE, THUMB_SIZES, AppState, answer_etag, browse_filters,
                                get_state, image_etag, item_summary, json_response, not_modified, search_response,
                                similar_results)
from lookalike.catalog import FilterError, UnknownColumn
from lookalike.data.images import ImageError, image_format

router = APIRouter(tags=["items"])
#: Pillow formats every browser shows, served as they are (others are converted to PNG)
_BROWSER_TYPES = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
_NOT_FOUND = {404: {"model": ErrorResponse}}
#: SQLite integers are 64-bit: a larger OFFSET was a 500
MAX_OFFSET = 2**62


@router.get("/items", response_model=ItemPage)
def list_items(
    offset: int = Query(0, ge=0, le=MAX_OFFSET, description="items to skip (past the end: an empty page)"),
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
def item_image(item_id: str, request: Request, state: AppState = Depends(get_state)):
    """The catalog's own image file (browser formats as stored; others converted to PNG); ETag =
    its content hash, 304 on a matching If-None-Match."""
    item = state.item(item_id)
    headers = _image_headers(item, None, state)
    if (unchanged := not_modified(request, headers.get("ETag"), IMAGE_CACHE)) is not None:
        return unchanged
    path = state.image_file(item)
    try:
        kind = image_format(path)
    except ImageError:
        kind = None   # state.image below decodes it, or answers why it cannot
    if kind in _BROWSER_TYPES:
        return FileResponse(path, media_type=_BROWSER_TYPES[kind], headers=headers)
    buf = io.BytesIO()
    state.image(item).save(buf, "PNG")
    return Response(buf.getvalue(), media_type="image/png", headers=headers)


def _image_headers(item, size: int | None, state: AppState) -> dict[str, str]:
    headers = {"Cache-Control": IMAGE_CACHE}
    if state.http_cache:
        headers["ETag"] = image_etag(item, size)
    return headers


@router.get("/items/{item_id:item}/thumb", responses=_NOT_FOUND, response_class=FileResponse)
def item_thumbnail(item_id: str, request: Request, size: int = Query(256, description=f"one of {THUMB_SIZES}"),
                   state: AppState = Depends(get_state)):
    """A cached JPEG thumbnail; ETag = the image's content hash and size, 304 on a matching If-None-Match."""
    if size not in THUMB_SIZES:
        raise BadRequest(f"thumbnail size must be one of {', '.join(map(str, THUMB_SIZES))}")
    item = state.item(item_id)
    headers = _image_headers(item, size, state)
    if (unchanged := not_modified(request, headers.get("ETag"), IMAGE_CACHE)) is not None:
        return unchanged
    return FileResponse(state.thumbnail_path(item, size), media_type="image/jpeg", headers=headers)


@router.get("/items/{item_id:item}/similar", response_model=SearchResponse, responses=_NOT_FOUND)
async def similar_items(item_id: str, request: Request, k: int = Query(DEFAULT_SIMILAR_K, ge=1, le=MAX_K),
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
                  state: AppState = Depends(get_state)):
    """More like this: the item's nearest neighbours (itself excluded), steered by more/less
    examples, diversity and duplicate collapse (example items are never returned). ETag keyed by
    the catalog's data version and the URL: 304 on a matching If-None-Match. The plain query is
    answered from the catalog's precomputed similar-items table (the same hits as live search)."""
    etag = answer_etag(request, state)
    if (unchanged := not_modified(request, etag, ANSWER_CACHE)) is not None:
        return unchanged
    try:
        item, results = await similar_results(state, item_id, k, min_score, encoder, label, more, less,
                                              filters=filter, boosts=boost, group_by=group_by or None,
                                              variant=variant or None, combine=combine, diversity=diversity,
                                              collapse_duplicates=collapse_duplicates)
    except (UnknownColumn, FilterError):
        raise  # 422 from the app's handlers
    except ValueError as exc:  # examples that cancel out
        raise BadRequest(str(exc)) from None
    headers = {"ETag": etag, "Cache-Control": ANSWER_CACHE} if etag else None
    return json_response(search_response(results, item_summary(item), encoder or state.catalog.default_encoder),
                         headers)

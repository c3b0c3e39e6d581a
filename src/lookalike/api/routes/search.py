"""Search with every ranking option (JSON), by an uploaded photo (multipart) or by a raw vector."""
from __future__ import annotations

from typing import List

from fastapi import APIRouter, Depends, File, Form, UploadFile

from lookalike.api.errors import ApiError, BadRequest
from lookalike.catalog import BoxError, FilterError, UnknownColumn
from lookalike.api.schemas import MAX_CLAUSES, MAX_K, ErrorResponse, SearchRequest, SearchResponse, VectorQuery
from lookalike.api.deps import AppState, get_state, hit, item_summary, parse_filters

router = APIRouter(tags=["search"])
_UPLOAD_ERRORS = {413: {"model": ErrorResponse}, 415: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}
_ERRORS = {404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}


@router.post("/search", response_model=SearchResponse, responses=_ERRORS)
def search(body: SearchRequest, state: AppState = Depends(get_state)) -> dict:
    """Similar items to a catalog item or a vector, with filters, boosts, pins and grouping
    (lookalike.search.pipeline). 422 ``unknown_column`` / ``invalid_filter`` for a filter the
    catalog cannot answer, 404 for an unknown item or encoder, 422 ``bad_request`` for a vector of the
    wrong length."""
    query = state.item(body.item) if body.item is not None else None
    where = {**(body.where or {}), **(parse_filters(body.label, []) or {})} or None
    try:
        results = state.catalog.search(
            item=query.id if query else None, vector=body.vector, k=body.k, where=where, min_score=body.min_score,
            encoder=body.encoder, filters=body.filters, boosts=body.boosts, recency=body.recency, pin=body.pin,
            bury=body.bury, group_by=body.group_by, variant=body.variant)
    except (UnknownColumn, FilterError):
        raise  # 422 from the app's handlers
    except ValueError as exc:  # wrong dimension for the encoder, NaN/inf values
        raise BadRequest(str(exc)) from None
    return {"query": item_summary(query) if query else None, "encoder": body.encoder or state.catalog.default_encoder,
            "results": [hit(r) for r in results]}


@router.post("/search/image", response_model=SearchResponse, responses=_UPLOAD_ERRORS)
def search_by_image(file: UploadFile = File(..., description="a JPEG/PNG/WebP/GIF/BMP/TIFF photo"),
                    k: int = Form(12, ge=1, le=MAX_K), label: str | None = Form(None, max_length=200),
                    filter: List[str] = Form([], max_length=MAX_CLAUSES, description="filter clauses (as POST /api/search)"),
                    boost: List[str] = Form([], max_length=MAX_CLAUSES, description="CONDITION:WEIGHT boosts"),
                    group_by: str | None = Form(None, max_length=200, description="one result per value of this column"),
                    variant: str | None = Form(None, max_length=200, description="with group_by: the variant column"),
                    box: str | None = Form(None, max_length=100, description=(
                        "search only this part of the photo: x0,y0,x1,y1 in pixels of the photo as shown "
                        "(EXIF orientation applied); 422 bad_box when malformed or outside the photo")),
                    state: AppState = Depends(get_state)) -> dict:
    image = state.read_upload(file)
    try:
        results = state.catalog.search(image=image, k=k, where=parse_filters(label, []), filters=filter, boosts=boost,
                                       group_by=group_by or None, variant=variant or None, box=box)
    except BoxError as exc:
        raise ApiError(422, "bad_box", str(exc)) from None
    return {"query": None, "encoder": state.catalog.default_encoder, "results": [hit(r) for r in results]}


@router.post("/search/vector", response_model=SearchResponse)
def search_by_vector(body: VectorQuery, state: AppState = Depends(get_state)) -> dict:
    try:
        results = state.catalog.search(vector=body.vector, k=body.k, where=parse_filters(body.label, []),
                                       encoder=body.encoder)
    except UnknownColumn:
        raise  # 422 unknown_column from the app's handler
    except ValueError as exc:  # wrong dimension for the encoder, NaN/inf values
        raise BadRequest(str(exc)) from None
    return {"query": None, "encoder": body.encoder or state.catalog.default_encoder,
            "results": [hit(r) for r in results]}

"""Search with every ranking option (JSON), by an uploaded photo (multipart) or by a raw vector."""
from __future__ import annotations

from typing import List, Literal

from fastapi import APIRouter, Depends, File, Form, UploadFile

from lookalike.api.errors import BadRequest
from lookalike.catalog import FilterError, UnknownColumn
from lookalike.api.schemas import (DEFAULT_UPLOAD_K, MAX_CLAUSES, MAX_IMAGE_BASE64, MAX_K, BatchRequest, BatchResponse, ErrorResponse,
                                   SearchRequest, SearchResponse, VectorQuery)
from lookalike.api.deps import AppState, get_state, json_response, parse_filters, run_batch, run_search, search_response

router = APIRouter(tags=["search"])
_UPLOAD_ERRORS = {413: {"model": ErrorResponse}, 415: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}
_ERRORS = {404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}


@router.post("/search", response_model=SearchResponse, responses=_ERRORS)
def search(body: SearchRequest, state: AppState = Depends(get_state)):
    """Similar items to a catalog item, a vector and/or weighted examples (items, base64 images,
    vectors; negative weight = less like this), with filters, boosts, pins, grouping, duplicate
    collapse and MMR diversity (lookalike.search.pipeline); ``no_close_match`` for a vector query
    unlike anything in the catalog. 422 ``unknown_column`` / ``invalid_filter`` for a filter the
    catalog cannot answer, 404 for an unknown item or encoder, 422 ``bad_request`` for a vector of the
    wrong length."""
    try:
        return json_response(run_search(state, body))
    except (UnknownColumn, FilterError):
        raise  # 422 from the app's handlers
    except ValueError as exc:  # wrong dimension for the encoder, NaN/inf values, examples that cancel out
        raise BadRequest(str(exc)) from None


@router.post("/search/batch", response_model=BatchResponse, responses=_ERRORS)
def search_batch(body: BatchRequest, state: AppState = Depends(get_state)):
    """Several searches in one request (each an item, a vector or a base64 ``image``, and/or
    examples, with every option of ``POST /api/search``), answered in order. A query that fails
    answers its own ``status`` and ``error`` (404 unknown item, 422 bad filter...) without failing
    the others; the request itself is 422 only when it is malformed (more than 32 queries, a field
    out of range)."""
    answers = run_batch(state, body.queries)
    return json_response({"answers": answers, "failed": sum(a["status"] != 200 for a in answers)})


@router.post("/search/image", response_model=SearchResponse, responses=_UPLOAD_ERRORS)
def search_by_image(file: UploadFile = File(..., description="a photo in any format ingest reads (JPEG, PNG, WebP, "
                                                          "HEIC, AVIF, GIF, TIFF, …)"),
                    k: int = Form(DEFAULT_UPLOAD_K, ge=1, le=MAX_K), label: str | None = Form(None, max_length=200),
                    filter: List[str] = Form([], max_length=MAX_CLAUSES, description="filter clauses (as POST /api/search)"),
                    boost: List[str] = Form([], max_length=MAX_CLAUSES, description="CONDITION:WEIGHT boosts"),
                    group_by: str | None = Form(None, max_length=200, description="one result per value of this column"),
                    variant: str | None = Form(None, max_length=200, description="with group_by: the variant column"),
                    box: str | None = Form(None, max_length=100, description=(
                        "search only this part of the photo: x0,y0,x1,y1 in pixels of the photo as shown "
                        "(EXIF orientation applied); 422 bad_box when malformed or outside the photo")),
                    examples: str | None = Form(None, max_length=MAX_IMAGE_BASE64, description=(
                        "more examples as a JSON list of {item|image|vector, weight} (as POST /api/search); "
                        "the photo counts as an example of weight 1")),
                    combine: Literal["mean", "max"] = Form("mean", description="how examples combine (mean | max)"),
                    diversity: float = Form(0.0, ge=0.0, le=1.0, description="MMR λ (0 = off)"),
                    collapse_duplicates: bool = Form(False, description="fold near duplicates into the better hit"),
                    state: AppState = Depends(get_state)):
    """Similar items to an uploaded photo; ``no_close_match`` when nothing in the catalog is close
    (hits marked ``weak``)."""
    return json_response(state.search_upload(state.read_upload(file), k=k, label=label, filter=filter, boost=boost,
                                             group_by=group_by, variant=variant, box=box, examples=examples,
                                             combine=combine, diversity=diversity,
                                             collapse_duplicates=collapse_duplicates))


@router.post("/search/vector", response_model=SearchResponse)
def search_by_vector(body: VectorQuery, state: AppState = Depends(get_state)):
    try:
        results = state.catalog.search(vector=body.vector, k=body.k, where=parse_filters(body.label, []),
                                       encoder=body.encoder)
    except UnknownColumn:
        raise  # 422 unknown_column from the app's handler
    except ValueError as exc:  # wrong dimension for the encoder, NaN/inf values
        raise BadRequest(str(exc)) from None
    return json_response(search_response(results, encoder=body.encoder or state.catalog.default_encoder))

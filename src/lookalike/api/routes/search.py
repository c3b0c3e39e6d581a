"""Search by an uploaded photo (multipart) or by a raw vector."""
from __future__ import annotations

from fastapi import APIRouter, Depends, File, Form, UploadFile

from lookalike.api.errors import BadRequest
from lookalike.catalog import UnknownColumn
from lookalike.api.schemas import MAX_K, ErrorResponse, SearchResponse, VectorQuery
from lookalike.api.deps import AppState, get_state, hit, parse_filters

router = APIRouter(tags=["search"])
_UPLOAD_ERRORS = {413: {"model": ErrorResponse}, 415: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}


@router.post("/search/image", response_model=SearchResponse, responses=_UPLOAD_ERRORS)
def search_by_image(file: UploadFile = File(..., description="a JPEG/PNG/WebP/GIF/BMP/TIFF photo"),
                    k: int = Form(12, ge=1, le=MAX_K), label: str | None = Form(None, max_length=200),
                    state: AppState = Depends(get_state)) -> dict:
    image = state.read_upload(file)
    results = state.catalog.search(image=image, k=k, where=parse_filters(label, []))
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

"""Changing a catalog while it is served (needs the X-API-Key header; the server is read-only
without $LOOKALIKE_API_KEY): add or replace one item (``POST /api/items``, multipart: an uploaded
photo or a URL), many (``POST /api/items/bulk``, JSON), change an item's label / metadata
(``PATCH /api/items/{id}``). Each is one ``Catalog.upsert`` / ``Catalog.update_metadata`` call:
one transaction, picked up by the next search of every worker process."""
from __future__ import annotations

import json

from fastapi import APIRouter, Depends, File, Form, UploadFile

from lookalike.api.errors import ApiError, status_for
from lookalike.api.schemas import (MAX_URL, BulkWrite, BulkWriteResponse, ErrorResponse, ItemDetail, MetadataPatch,
                                   WriteResult)
from lookalike.api.deps import AppState, get_state, item_summary, require_api_key

router = APIRouter(tags=["writes"], dependencies=[Depends(require_api_key)])
_AUTH = {401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}}
_WRITE_ERRORS = {**_AUTH, 413: {"model": ErrorResponse}, 415: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}


@router.post("/items", response_model=WriteResult, responses=_WRITE_ERRORS)
def add_item(id: str = Form(..., min_length=1, max_length=512, description="the item id (an existing id is replaced)"),
             file: UploadFile | None = File(None, description="the photo (any format ingest reads: JPEG, PNG, WebP, HEIC, …)"),
             url: str | None = Form(None, max_length=MAX_URL, description="or an http(s) URL to download it from"),
             label: str | None = Form(None, max_length=512),
             metadata: str | None = Form(None, max_length=100_000, description="a JSON object: column -> "
                                         "text, number or boolean"),
             state: AppState = Depends(get_state)) -> dict:
    """Add or replace one item: embedded and written in one transaction, searchable on the next
    request. ``outcome`` is added, updated or unchanged (same image and fields); a photo or URL that
    gives no image is 413/415/422 with the reason and the item's ``id``, and nothing is written."""
    try:
        fields = json.loads(metadata) if metadata else {}
    except ValueError:
        raise ApiError(422, "invalid_metadata", "metadata must be a JSON object", id=id) from None
    # an empty form field is a field left empty (no label), as a browser form sends it
    outcome = state.upsert([state.item_write(id, file=file, url=url or None, label=label or None, metadata=fields)])[0]
    state.count_writes([outcome])
    if not outcome.ok:
        raise ApiError(status_for(outcome.reason), outcome.reason, outcome.message, id=outcome.id)
    return outcome.to_dict()


@router.post("/items/bulk", response_model=BulkWriteResponse, responses=_WRITE_ERRORS)
def add_items(body: BulkWrite, state: AppState = Depends(get_state)) -> dict:
    """Add or replace up to 100 items (base64 ``image`` or ``url`` each) in one transaction: one
    result per item, in order. An item that fails (bad image, unreachable URL, bad metadata,
    repeated id) is reported with its reason and not written; the others are."""
    entries = [state.item_write(i.id, image=i.image, url=i.url, label=i.label, metadata=dict(i.metadata))
               for i in body.items]
    outcomes = state.upsert(entries)
    state.count_writes(outcomes)
    results = [o.to_dict() for o in outcomes]
    counts = {kind: sum(o.outcome == kind for o in outcomes) for kind in ("added", "updated", "unchanged", "failed")}
    return {"results": results, **counts}


@router.patch("/items/{item_id:item}", response_model=ItemDetail,
              responses={**_AUTH, 404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})
def update_item(item_id: str, body: MetadataPatch, state: AppState = Depends(get_state)) -> dict:
    """Change an item's label and/or metadata (merged; null removes a column; ``replace`` sets the
    whole dict) without re-embedding its image; 404 for an unknown item."""
    item = state.item(item_id)
    label = body.label if "label" in body.model_fields_set else ...
    try:
        item = state.catalog.update_metadata(item.id, body.metadata, label=label, replace=body.replace)
    except ValueError as exc:
        raise ApiError(422, "invalid_metadata", str(exc), id=item.id) from None
    state.count_writes(["metadata"])
    return {**item_summary(item), "width": item.width, "height": item.height, "sha256": item.sha256}

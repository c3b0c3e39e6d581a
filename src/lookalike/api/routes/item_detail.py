"""GET/DELETE /api/items/{id}: included last because the id matches any rest of the path (see api.item_ids)."""
from __future__ import annotations

from fastapi import APIRouter, Depends

from lookalike.api.schemas import ErrorResponse, ItemDetail
from lookalike.api.deps import AppState, get_state, item_summary, require_api_key

router = APIRouter(tags=["items"])
_ERRORS = {404: {"model": ErrorResponse}}


@router.get("/items/{item_id:item}", response_model=ItemDetail, responses=_ERRORS)
def item_detail(item_id: str, state: AppState = Depends(get_state)) -> dict:
    item = state.item(item_id)
    return {**item_summary(item), "width": item.width, "height": item.height, "sha256": item.sha256}


@router.delete("/items/{item_id:item}", responses={**_ERRORS, 401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}},
               dependencies=[Depends(require_api_key)])
def delete_item(item_id: str, state: AppState = Depends(get_state)) -> dict:
    """Remove an item from the catalog (its image file is left alone). Needs the X-API-Key header."""
    item = state.item(item_id)
    removed = state.catalog.remove([item.id])
    state.count_writes(["deleted"] * len(removed))
    return {"removed": removed}

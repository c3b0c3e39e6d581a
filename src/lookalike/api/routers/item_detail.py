"""GET /api/items/{id}: included last because the id may contain '/' (a catch-all path)."""
from __future__ import annotations

from fastapi import APIRouter, Depends

from lookalike.api.models import ErrorResponse, ItemDetail
from lookalike.api.state import AppState, get_state, item_summary

router = APIRouter(tags=["items"])


@router.get("/items/{item_id:path}", response_model=ItemDetail, responses={404: {"model": ErrorResponse}})
def item_detail(item_id: str, state: AppState = Depends(get_state)) -> dict:
    item = state.item(item_id)
    return {**item_summary(item), "width": item.width, "height": item.height, "sha256": item.sha256}

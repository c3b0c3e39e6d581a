"""GET /api/health: liveness plus which optional features this server can offer."""
from __future__ import annotations

from fastapi import APIRouter, Depends

from lookalike import __version__
from lookalike.api.schemas import Health
from lookalike.api.deps import AppState, get_state

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health(state: AppState = Depends(get_state)) -> dict:
    count = len(state.catalog)
    return {"status": "ok", "version": __version__, "catalog": state.catalog.name, "items": count,
            "encoder": state.catalog.default_encoder, "read_only": state.read_only,
            "features": state.catalog.features()}

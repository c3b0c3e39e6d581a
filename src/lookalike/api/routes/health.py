"""Health: ``/api/health`` (status, counts and which optional panels can answer), ``/api/health/live``
(the process answers: for a liveness probe) and ``/api/health/ready`` (the catalog is open and its
index is loaded: 503 until then, for a readiness probe / load balancer)."""
from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from lookalike import __version__
from lookalike.api.schemas import Health, Liveness, Readiness
from lookalike.api.deps import AppState, get_state

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health(state: AppState = Depends(get_state)) -> dict:
    count = len(state.catalog)
    return {"status": "ok", "version": __version__, "catalog": state.catalog.name, "items": count,
            "encoder": state.catalog.default_encoder, "read_only": state.read_only,
            "features": state.catalog.features()}


@router.get("/health/live", response_model=Liveness)
def live() -> dict:
    """200 while the process serves requests (it reads nothing)."""
    return {"status": "ok"}


@router.get("/health/ready", response_model=Readiness, responses={503: {"model": Readiness}})
def ready(state: AppState = Depends(get_state)):
    """200 once the catalog's index is loaded (``Catalog.warm``: the server starts loading it when it
    starts, or here on first ask); 503 with ``starting`` or ``failed`` and the reason until then."""
    state.warm()
    body = {"status": state.readiness, "catalog": state.catalog.name, "message": state.readiness_message}
    if state.readiness != "ready":
        return JSONResponse(body, status_code=503)
    return {**body, "items": len(state.catalog), "encoder": state.catalog.default_encoder}

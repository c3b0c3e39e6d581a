"""GET /api/catalogs (all catalogs in the home) and /api/catalog (the one being served)."""
from __future__ import annotations

from fastapi import APIRouter, Depends

from lookalike.api.schemas import CatalogInfo, CatalogList
from lookalike.api.deps import AppState, get_state
from lookalike.catalog import list_catalogs as catalog_names

router = APIRouter(tags=["catalogs"])


def describe(cat, current: bool) -> dict:
    return {"name": cat.name, "items": len(cat), "default_encoder": cat.default_encoder,
            "encoders": [e["name"] for e in cat.encoders()], "labels": dict(cat.label_values()),
            "metadata_keys": cat.metadata_columns(), "current": current}


@router.get("/catalog", response_model=CatalogInfo)
def current_catalog(state: AppState = Depends(get_state)) -> dict:
    return describe(state.catalog, True)


@router.get("/catalogs", response_model=CatalogList)
def list_catalogs(state: AppState = Depends(get_state)) -> dict:
    """Every catalog in this server's home; only the served one is opened and counted."""
    current = state.catalog.name
    out = [describe(state.catalog, True) if name == current else {"name": name, "items": -1}
           for name in catalog_names(state.catalog.home)]
    return {"current": current, "catalogs": out}

"""GET /api/catalogs (all catalogs in the home) and /api/catalog (the one being served)."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request

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
def list_catalogs(request: Request, state: AppState = Depends(get_state)) -> dict:
    """Every catalog in this server's home; those it serves have an ``api`` base
    (``/api/catalogs/NAME``); only opened ones are counted (-1 otherwise)."""
    pool = request.app.state.catalogs
    served = set(pool.served())
    opened = {s.catalog.name: s.catalog for s in pool.opened()}
    out = []
    for name in catalog_names(state.catalog.home):
        entry = describe(opened[name], name == state.catalog.name) if name in opened else {"name": name, "items": -1}
        entry["api"] = f"/api/catalogs/{name}" if name in served else None
        out.append(entry)
    return {"current": state.catalog.name, "catalogs": out}

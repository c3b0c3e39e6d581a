"""GET /api/evaluation: leave-one-out retrieval quality of the served catalog (label = relevant);
GET /api/quality (+ /api/quality/{figure}.png): the quality page, per label worst first, the
top-1 confusion and failed queries (``Catalog.quality``, figures from ``evaluation.report``)."""
from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response

from lookalike.api.errors import BadRequest
from lookalike.api.schemas import EvalResponse, ErrorResponse, QualityResponse
from lookalike.api.deps import AppState, get_state, summary
from lookalike.evaluation.report import figure_png

router = APIRouter(tags=["evaluation"])


@router.get("/evaluation", response_model=EvalResponse)
def evaluation(encoder: str | None = Query(None, max_length=200),
               ks: str = Query("1,5,10", pattern=r"^\d{1,3}(,\d{1,3}){0,5}$", description="comma-separated cut-offs"),
               state: AppState = Depends(get_state)) -> dict:
    cat = state.catalog
    spec = encoder or cat.default_encoder
    cutoffs = tuple(sorted({int(k) for k in ks.split(",")}))
    if min(cutoffs) < 1:
        raise BadRequest("cut-offs must be at least 1")
    # Memoised per data version: the catalog only changes through an ingest, which bumps it.
    key = (spec, cutoffs, cat.version(spec), cat.data_version())  # labels: data_version
    with state.lock:
        report = state.memo.get(("evaluation", key))
        if report is None:
            try:
                report = cat.evaluate(labels=["label"], ks=cutoffs, encoder=spec).to_dict()
            except ValueError as exc:  # no labels, or no item with another of its label: nothing to measure
                raise BadRequest(str(exc)) from None
            state.memo[("evaluation", key)] = report
    details = {k: v for k, v in report.items() if k != "overall"}
    return {"catalog": cat.name, "encoder": spec, "metrics": report["overall"], "details": details}


def _quality(state: AppState, encoder: str | None, k: int):
    """``Catalog.quality`` memoised per data version; 422 when there is nothing to measure, 404 (from
    the catalog's LookupError) for an encoder it has no vectors of."""
    cat = state.catalog
    spec = encoder or cat.default_encoder
    with state.lock:
        key = ("quality", spec, k, cat.version(spec), cat.data_version())
        if key not in state.memo:
            try:
                state.memo[key] = (spec, cat.quality("label", spec, k=k))
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
        return state.memo[key]


_ERRORS = {422: {"model": ErrorResponse}, 404: {"model": ErrorResponse}}


@router.get("/quality", response_model=QualityResponse, responses=_ERRORS)
def quality(encoder: str | None = Query(None, max_length=200), k: int = Query(10, ge=1, le=100),
            state: AppState = Depends(get_state)) -> dict:
    """Per-label P@1 / mAP@k worst first, top-1 confusion counts, and failed queries of the worst labels."""
    spec, report = _quality(state, encoder, k)
    doc = report.to_dict()
    query = f"?k={k}" + (f"&encoder={quote(encoder, safe='')}" if encoder else "")
    return {"catalog": state.catalog.name, "encoder": spec, "k": k, "n_queries": doc["n_queries"],
            "overall": doc["overall"], "labels": doc["labels"], "confusion": doc["confusion"],
            "failures": [{"label": f["label"], "queries": [
                {"query": summary(q["query"], f["label"], {}), "ap_at_k": q["ap_at_k"],
                 "returned": [summary(r["id"], r["label"], {}) for r in q["returned"]]}
                for q in f["queries"]]} for f in doc["failures"]],
            "figures": {name: f"/api/quality/{name}.png{query}" for name in ("labels", "confusion")}}


@router.get("/quality/{figure}.png", response_class=Response, responses={**_ERRORS, 200: {"content": {"image/png": {}}}})
def quality_figure(figure: str = Path(..., pattern="^(labels|confusion)$"), encoder: str | None = Query(None, max_length=200),
                   k: int = Query(10, ge=1, le=100), state: AppState = Depends(get_state)) -> Response:
    """The per-label bar chart (``labels``) or the top-1 confusion image (``confusion``) as PNG."""
    spec, report = _quality(state, encoder, k)
    with state.lock:
        key = ("quality-png", figure, spec, k, state.catalog.version(spec), state.catalog.data_version())
        if key not in state.memo:
            state.memo[key] = figure_png(report, figure)
        data = state.memo[key]
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})

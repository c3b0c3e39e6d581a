"""GET /api/evaluation: leave-one-out retrieval quality of the served catalog (label = relevant)."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from lookalike.api.errors import BadRequest
from lookalike.api.schemas import EvalResponse
from lookalike.api.deps import AppState, get_state

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
    key = (spec, cutoffs, cat.version(spec))
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

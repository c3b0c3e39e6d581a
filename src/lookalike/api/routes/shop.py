"""Shop the look (``lookalike.shop.pipeline``): garments found on a person's photo, with the most
similar catalog products for each region."""
from __future__ import annotations

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile

from lookalike.api.errors import ApiError, FeatureUnavailable
from lookalike.api.schemas import MAX_K, ErrorResponse, ShopResponse
from lookalike.api.deps import AppState, get_state, summary
from lookalike.shop import pipeline as shop, pose

router = APIRouter(tags=["shop the look"])
_ERRORS = {code: {"model": ErrorResponse} for code in (404, 409, 413, 415, 422)}


def run_shop(state: AppState, image, k: int) -> dict:
    try:
        result = shop.shop_the_look(state.catalog, image, k=k)
    except pose.DetectorUnavailable as exc:
        raise FeatureUnavailable(f"feature not available (shop the look): {exc}") from None
    except shop.NoPersonFound as exc:
        raise ApiError(422, "no_person", str(exc)) from None
    except shop.ShopError as exc:
        raise ApiError(422, "bad_photo", str(exc)) from None
    regions, people, skipped = [], [], []
    for n, person in enumerate(result.people):
        people.append({"box": person.box, "score": person.score, "notes": person.notes,
                       "attributes": person.attributes})
        skipped += [{"person": n, **s} for s in person.skipped]
        for region in person.regions:
            regions.append({"person": n, "box": region.box, "region": region.name,
                            "category": region.category or region.name, "searched": region.categories,
                            "confidence": region.confidence, "fit": region.fit, "visibility": region.visibility,
                            "notes": region.notes,
                            # score and distance as the search that found them reported them
                            "results": [{**summary(h.id, h.label, {}), **h.to_dict(("rank", "score", "distance"), digits=None)}
                                        for h in region.results]})
    return {"width": result.image["width"], "height": result.image["height"], "detector": result.detector,
            "encoder": result.encoder, "notes": result.notes, "people": people, "regions": regions,
            "skipped": skipped}


@router.post("/shop", response_model=ShopResponse, responses=_ERRORS)
def shop_photo(file: UploadFile = File(..., description="a photo of a dressed person"),
               k: int = Form(6, ge=1, le=MAX_K), state: AppState = Depends(get_state)) -> dict:
    """Upload a photo: each garment region found on the person, with similar catalog items."""
    return run_shop(state, state.read_upload_image(file), k)


@router.get("/items/{item_id:item}/shop", response_model=ShopResponse, responses=_ERRORS)
def shop_item(item_id: str, k: int = Query(6, ge=1, le=MAX_K), state: AppState = Depends(get_state)) -> dict:
    """Shop the look on a catalog item's own photo (useful when the catalog holds outfit photos)."""
    item = state.item(item_id)
    return run_shop(state, item.path, k)

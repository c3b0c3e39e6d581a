"""Latent explorer over the catalog's VAE (``lookalike.explore.latent.LatentSpace``): slider ranges, decode a
latent vector to a PNG, the nearest real products, an item's position, interpolation, random points."""
from __future__ import annotations

import base64
import io

import numpy as np
from typing import Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from lookalike.api import features
from lookalike.api.errors import BadRequest
from lookalike.api.schemas import (MAX_K, ErrorResponse, Interpolation, ItemLatent, LatentInfo, LatentVector,
                                  SearchResponse)
from lookalike.api.deps import AppState, get_state, hit
from lookalike.encoders.spec import EncoderSpec

router = APIRouter(tags=["latent"])
_UNAVAILABLE = {409: {"model": ErrorResponse}}
DECODE_SIZES = (0, 64, 128, 256)


def latent_space(state: AppState):
    """The served catalog's LatentSpace, built (or read from its cache) once per app."""
    with state.lock:
        if "latent" not in state.memo:
            # Look for a model before importing the module: it pulls in torch (seconds on first use).
            name = state.vae or state.catalog.trained_model("vae")
            if name is None:
                raise features.unavailable("latent", f"no VAE trained on catalog {state.catalog.name!r}: train one with "
                                           f"`lookalike train autoencoder --kind vae --catalog {state.catalog.name}`")
            try:
                from lookalike.explore import latent  # torch: seconds, and a server that only searches never needs it
            except ImportError as exc:
                raise features.missing_package("latent", exc) from None
            state.memo["latent"] = (name, latent.LatentSpace.build(state.catalog, name, progress=False))
        return state.memo["latent"]


def _vector(space, values) -> np.ndarray:
    try:
        return space.check_vector(values)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _check_size(size: int) -> int | None:
    if size not in DECODE_SIZES:
        raise BadRequest(f"size must be one of {', '.join(map(str, DECODE_SIZES))} (0 = the model's own size)")
    return size or None


@router.get("/latent", response_model=LatentInfo, responses=_UNAVAILABLE)
def latent_info(state: AppState = Depends(get_state)) -> dict:
    """The VAE behind the explorer and one slider range per latent dimension (over the catalog's µ)."""
    name, space = latent_space(state)
    ranges = [{"index": s["dim"], "min": s["min"], "max": s["max"], "mean": s["mean"], "std": s["std"]}
              for s in space.stats()]
    return {"model": name, "encoder": str(EncoderSpec("vae", name)), "dim": space.dim, "image_size": space.model.image_size,
            "ranges": ranges}


@router.post("/latent/decode", response_class=Response, responses={**_UNAVAILABLE, 200: {"content": {"image/png": {}}}})
def decode(body: LatentVector, size: int = Query(256, description=f"one of {DECODE_SIZES}"),
           state: AppState = Depends(get_state)) -> Response:
    """A latent vector -> the image the VAE decodes it to (PNG)."""
    _, space = latent_space(state)
    image = space.decode(_vector(space, body.z), _check_size(size))
    return Response(_png(image), media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/latent/sample", response_model=LatentVector, responses=_UNAVAILABLE)
def sample(seed: int = Query(0, ge=0, le=2**31 - 1),
           prior: Literal["aggregate", "standard"] = Query("aggregate", description="aggregate: the Gaussian fitted to "
                                                           "the catalog's posteriors (lands where real items are); "
                                                           "standard: the VAE's N(0, I)"),
           state: AppState = Depends(get_state)) -> dict:
    """A random latent point (a "random product"), seeded: decode it with POST /latent/decode."""
    _, space = latent_space(state)
    return {"z": space.sample(1, seed=seed, prior=prior)[0].tolist()}


@router.post("/latent/nearest", response_model=SearchResponse, responses=_UNAVAILABLE)
def nearest(body: LatentVector, k: int = Query(8, ge=1, le=MAX_K), state: AppState = Depends(get_state)) -> dict:
    """Real products whose latent means are closest to the point."""
    name, space = latent_space(state)
    hits = space.nearest(_vector(space, body.z), k=k)
    return {"query": None, "encoder": str(EncoderSpec("vae", name)),
            "results": [hit(h) for h in hits]}


@router.get("/items/{item_id:item}/latent", response_model=ItemLatent, responses={**_UNAVAILABLE, 404: {"model": ErrorResponse}})
def item_latent(item_id: str, state: AppState = Depends(get_state)) -> dict:
    """Where an item sits: its posterior mean µ (what the sliders start from)."""
    item = state.item(item_id)
    _, space = latent_space(state)
    return {"id": item.id, "z": space.item(item.id)["mu"]}


@router.get("/latent/interpolate", response_model=Interpolation, responses={**_UNAVAILABLE, 404: {"model": ErrorResponse}})
def interpolate(a: str = Query(..., max_length=512), b: str = Query(..., max_length=512),
                steps: int = Query(8, ge=2, le=16), size: int = Query(128), state: AppState = Depends(get_state)) -> dict:
    """Images along the line between two items' µ, ends included, with the latent vector of each."""
    a_item, b_item = state.item(a), state.item(b)
    _, space = latent_space(state)
    images = space.interpolate(a_item.id, b_item.id, steps, _check_size(size))
    return {"a": a_item.id, "b": b_item.id, "steps": space.interpolation_path(a_item.id, b_item.id, steps).tolist(),
            "images": ["data:image/png;base64," + base64.b64encode(_png(im)).decode() for im in images]}

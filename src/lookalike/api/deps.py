"""Shared state the routers depend on: the opened catalog, settings and the thumbnail cache.

One ``AppState`` per served catalog: the default one lives on ``app.state.lookalike`` and answers
the ``/api/...`` routes, the others are opened on first use by the app's :class:`CatalogPool`
(``app.state.catalogs``) and answer ``/api/catalogs/{catalog}/...``. Routers reach the right one
through ``Depends(get_state)``, so tests can build apps on temporary catalogs without globals.
"""
from __future__ import annotations

import base64
import binascii
import gc
import hashlib
import json
import os
import re
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import orjson
from fastapi import Header, Path as PathParam, Request
from fastapi.responses import Response
from PIL import Image
from starlette.concurrency import run_in_threadpool
from pydantic import TypeAdapter, ValidationError

from lookalike.api.errors import ApiError, BadRequest, NotFound, error_for
from lookalike.api.item_ids import API_BASE, item_path  # also registers the {item_id:item} route convertor
from lookalike.api.uploads import check_upload
from lookalike.api.schemas import DEFAULT_UPLOAD_K, MAX_EXAMPLES, ExampleIn
from lookalike.catalog import (BoxError, Catalog, CatalogNotFound, FilterError, ItemWrite, UnknownColumn, WriteOutcome,
                               list_catalogs)
from lookalike.config import check_name
from lookalike.data.images import ImageError, open_image
from lookalike.search.calibration import no_close_match
from lookalike.search.examples import Example, parse_item_example

# Item ids come from catalogs (file stems, CSV ids, relative paths): printable, bounded.
_ID_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,512}$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
THUMB_SIZES = (128, 256, 512)
_EXAMPLES = TypeAdapter(list[ExampleIn])


@dataclass
class AppState:
    catalog: object  # lookalike.Catalog
    api_key: str | None
    max_upload_bytes: int
    vae: str | None = None  # VAE model for the latent explorer (None: the newest trained on this catalog)
    http_cache: bool = True  # ETag / 304 on images, thumbnails and GET search answers
    # Guards lazily built per-app caches (feature models); the store has per-thread connections.
    lock: threading.RLock = field(default_factory=threading.RLock)
    # Results that are expensive and fixed for a data version (evaluation, loaded feature models).
    memo: dict = field(default_factory=dict)

    metrics: object | None = None   # the app's api.metrics.Metrics (None: metrics off)
    # URLs given to the write API may name hosts on private / loopback addresses only when
    # $LOOKALIKE_FETCH_PRIVATE=1 (the server fetches them: keep clients out of its own network).
    private_urls: bool = field(default_factory=lambda: os.environ.get("LOOKALIKE_FETCH_PRIVATE") == "1")
    # Readiness (GET /api/health/ready): "starting" until warm() has loaded the index, then
    # "ready", or "failed" with the reason.
    readiness: str = "starting"
    readiness_message: str | None = None
    _warming: threading.Thread | None = None

    @property
    def read_only(self) -> bool:
        return not self.api_key

    def warm(self, background: bool = True) -> None:
        """Start loading the catalog's index (``Catalog.warm``) once, in a thread unless
        ``background`` is False; :attr:`readiness` says how it went."""
        with self.lock:
            if self._warming is not None:
                return
            self._warming = threading.Thread(target=self._warm, name=f"warm-{self.catalog.name}", daemon=True)
            self._warming.start()
        if not background:
            self._warming.join()

    def _warm(self) -> None:
        try:
            if len(self.catalog) == 0:   # nothing to load: it answers (empty pages, 404s) and takes writes
                self.readiness, self.readiness_message = "ready", (
                    "the catalog is empty: add items with POST /api/items or `lookalike index`")
                return
            if self.catalog.encoder_info() is None:
                raise LookupError(f"catalog {self.catalog.name!r} has no vectors for its default encoder "
                                  f"{self.catalog.default_encoder!r}")
            self.catalog.warm(items=True)
        except Exception as exc:   # reported by /api/health/ready, never raised into a request
            self.readiness, self.readiness_message = "failed", f"{type(exc).__name__}: {exc}"
        else:
            self.readiness = "ready"
        freeze_heap()

    # -- items ---------------------------------------------------------------------------
    def item(self, item_id: str):
        """The catalog item, or 404 (ids are only ever looked up in the store, never used as paths)."""
        if not _ID_RE.match(item_id or ""):
            raise ApiError(422, "invalid_id", "item ids are 1-512 printable characters")
        try:
            return self.catalog.get(item_id)
        except KeyError:
            raise NotFound(f"unknown item {item_id!r} in catalog {self.catalog.name!r}") from None

    def image_file(self, item) -> Path:
        """The item's image file; 404 (without the server path) when it has gone missing."""
        path = Path(item.path)
        if not path.is_file():
            raise NotFound(f"the image file of item {item.id!r} is missing on the server (re-index the catalog)")
        return path

    def image(self, item):
        """The item's image decoded to RGB; 404/422 without server paths in the message."""
        try:
            return open_image(self.image_file(item))
        except ImageError as exc:
            raise ApiError(422, exc.reason, f"the image of item {item.id!r} cannot be read ({exc.reason})") from None

    def read_upload(self, file) -> bytes:
        """An uploaded file's (``fastapi.UploadFile``) checked bytes, for ``Catalog.search(image=...)``
        to decode exactly as ingest does; reads at most cap+1 bytes so the cap is exact. 413/415/422
        via ``check_upload``."""
        return check_upload(file.file.read(self.max_upload_bytes + 1), self.max_upload_bytes)

    def search_upload(self, data: bytes, k: int = DEFAULT_UPLOAD_K, *, label: str | None = None, filter: Sequence[str] = (),
                      boost: Sequence[str] = (), group_by: str | None = None, variant: str | None = None,
                      box: str | None = None, examples: str | None = None, combine: str = "mean",
                      diversity: float = 0.0, collapse_duplicates: bool = False) -> dict:
        """``POST /api/search/image`` for checked upload bytes (:meth:`read_upload`) and the route's
        form fields -> the ``SearchResponse`` dict: one ``Catalog.search(image=...)`` under one data
        version (``Catalog.pinned_version``: an upload search only reads; one version check instead
        of ~20). The route and :class:`lookalike.api.fastpath.UploadFastPath` both answer through
        it. Raises ApiError (422 ``bad_box``, ``invalid_examples``), BadRequest (400 a bad filter,
        422 examples that cancel out) and the library's own errors (the app's handlers map them)."""
        with self.catalog.pinned_version():
            try:
                results = self.catalog.search(image=data, k=k, where=parse_filters(label, []),
                                              filters=list(filter), boosts=list(boost), group_by=group_by or None,
                                              variant=variant or None, box=box, examples=self.examples_field(examples),
                                              combine=combine, diversity=diversity,
                                              collapse_duplicates=collapse_duplicates)
            except BoxError as exc:
                raise ApiError(422, "bad_box", str(exc)) from None
            except (UnknownColumn, FilterError):
                raise  # 422 from the app's handlers
            except ValueError as exc:  # examples that cancel out, an example vector of the wrong length
                raise BadRequest(str(exc)) from None
            return search_response(results, encoder=self.catalog.default_encoder)

    def decode_base64(self, text: str, what: str = "an example image") -> bytes:
        """A base64 image (a ``data:...;base64,`` prefix is accepted) -> checked bytes: 422
        ``invalid_image`` for bad base64, then 413/415/422 as :meth:`read_upload`."""
        text = text.split(",", 1)[1] if text.startswith("data:") else text
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(422, "invalid_image", f"{what} is not valid base64") from None
        return check_upload(data, self.max_upload_bytes)

    # -- writes ----------------------------------------------------------------------------
    def item_write(self, item_id: str, *, image: str | None = None, file=None, url: str | None = None,
                   label: str | None = None, metadata=None) -> ItemWrite | WriteOutcome:
        """One item to write (an ``ItemWriteIn`` or the form of ``POST /api/items``) -> an
        ``ItemWrite`` for ``Catalog.upsert``, or the failed ``WriteOutcome`` saying why its image
        (base64 ``image``, uploaded ``file`` or ``url``) cannot be one: an upload is checked here
        (size, type), a URL and everything else by the library."""
        if sum(x is not None for x in (image, file, url)) != 1:
            return WriteOutcome(item_id, "failed", "invalid_image", "give exactly one of an image (upload or base64) "
                                                                     "or a url")
        try:
            data = self.read_upload(file) if file is not None else \
                self.decode_base64(image, f"the image of item {item_id!r}") if image is not None else None
        except (ApiError, ImageError) as exc:
            _, code, message = error_for(exc)
            return WriteOutcome(item_id, "failed", code, message)
        return ItemWrite(item_id, data=data, url=url, label=label, metadata=metadata if metadata is not None else {})

    def count_writes(self, outcomes) -> None:
        """Count write outcomes on ``GET /metrics`` (``WriteOutcome`` or strings such as ``deleted``)."""
        if self.metrics is not None:
            self.metrics.count_writes(self.catalog.name, outcomes)

    def upsert(self, entries: list) -> list[WriteOutcome]:
        """``Catalog.upsert`` of the ``ItemWrite`` entries (one transaction), the failed outcomes of
        the others kept in place: one outcome per entry, in order."""
        writes = [e for e in entries if isinstance(e, ItemWrite)]
        done = iter(self.catalog.upsert(writes, private_urls=self.private_urls) if writes else [])
        return [next(done) if isinstance(e, ItemWrite) else e for e in entries]

    def examples(self, examples) -> list[Example]:
        """``ExampleIn`` models -> library examples; base64 images are decoded and checked like an
        upload (422 ``invalid_image`` for bad base64, then 413/415/422 as :meth:`read_upload`)."""
        out = []
        for ex in examples:
            if ex.item is not None:
                out.append(Example("item", self.item(ex.item).id, ex.weight))
            elif ex.vector is not None:
                out.append(Example("vector", np.asarray(ex.vector, np.float32), ex.weight))
            else:
                out.append(Example("image", self.decode_base64(ex.image), ex.weight))
        return out

    def item_examples(self, more, less) -> list[Example]:
        """``more`` / ``less`` query values (``ID`` or ``ID:WEIGHT``) -> item examples; 422 for a bad
        weight, 404 for an unknown item."""
        try:
            examples = [parse_item_example(t) for t in more] + [parse_item_example(t, True) for t in less]
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return [Example("item", self.item(e.value).id, e.weight) for e in examples]

    def examples_field(self, text: str | None) -> list[Example]:
        """The ``examples`` form field (a JSON list of ``ExampleIn``) -> library examples; 422
        ``invalid_examples`` when it is not that."""
        if not text:
            return []
        try:
            parsed = _EXAMPLES.validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ApiError(422, "invalid_examples", f"examples must be a JSON list of {{item|image|vector, weight}}: "
                                                    f"{first.get('msg')} at {list(first.get('loc', ()))}") from None
        if len(parsed) > MAX_EXAMPLES:
            raise ApiError(422, "invalid_examples", f"at most {MAX_EXAMPLES} examples")
        return self.examples(parsed)

    def read_upload_image(self, file) -> Image.Image:
        """An uploaded file decoded to RGB at full size (shop the look crops regions from it);
        errors as :meth:`read_upload`, then 413/415/422 by the ImageError's reason."""
        return open_image(self.read_upload(file))

    def thumbnail_path(self, item, size: int) -> Path:
        """The item's cached JPEG thumbnail (``Catalog.thumbnail``); 404/422 as :meth:`image`."""
        self.image_file(item)  # 404 without the server path when the file has gone
        try:
            return self.catalog.thumbnail(item, size)
        except ImageError as exc:
            raise ApiError(422, exc.reason, f"the image of item {item.id!r} cannot be read ({exc.reason})") from None


def run_search(state: AppState, body, image: bytes | None = None) -> dict:
    """A ``SearchRequest`` (or a batch's ``BatchQuery``, then maybe with a decoded ``image``) -> a
    ``SearchResponse`` dict: one ``Catalog.search``. Raises ApiError (404 unknown item, 422 a bad
    example) and the library's own errors (the app's handlers, or a batch entry, map them)."""
    query = state.item(body.item) if body.item is not None else None
    where = {**(body.where or {}), **(parse_filters(body.label, []) or {})} or None
    examples = state.examples(body.examples)
    results = state.catalog.search(
        item=query.id if query else None, vector=body.vector, image=image, k=body.k, where=where,
        min_score=body.min_score, encoder=body.encoder, filters=body.filters, boosts=body.boosts,
        recency=body.recency, pin=body.pin, bury=body.bury, group_by=body.group_by, variant=body.variant,
        examples=examples, combine=body.combine, diversity=body.diversity,
        collapse_duplicates=body.collapse_duplicates)
    return search_response(results, item_summary(query) if query else None,
                           body.encoder or state.catalog.default_encoder)


async def similar_results(state: AppState, item_id: str, k: int, min_score: float | None, encoder: str | None,
                          label: str | None = None, more=(), less=(), **options) -> tuple[object, list]:
    """(the query item, its hits) for ``GET /items/{id}/similar``: the plain query (no label,
    filters, boosts, grouping, examples, diversity or collapse) from the catalog's precomputed
    similar-items table right here on the event loop (``Catalog.similar_from_table``: a row
    read, no thread hand-off), anything else (or no fresh table in this worker yet)
    ``Catalog.search`` in the thread pool. ``options``: the other keyword arguments of
    ``Catalog.search`` (filters, boosts, group_by, variant, combine, diversity,
    collapse_duplicates). 404 / 422 as :meth:`AppState.item`; the library's errors as raised."""
    plain = (not label and not more and not less and not any(options.get(o) for o in (
        "filters", "boosts", "group_by", "variant", "diversity", "collapse_duplicates"))
        and options.get("combine", "mean") == "mean")
    if plain:
        item = state.item(item_id)
        results = state.catalog.similar_from_table(item.id, k, min_score, encoder)
        if results is not None:
            return item, results

    def live():
        item = state.item(item_id)
        examples = state.item_examples(more, less)
        return item, state.catalog.search(item=item.id, k=k, where=parse_filters(label, []), min_score=min_score,
                                          encoder=encoder, examples=examples, **options)

    return await run_in_threadpool(live)


def run_batch(state: AppState, queries) -> list[dict]:
    """``BatchQuery`` list -> one ``BatchAnswer`` dict per query, in order: a query that fails
    answers its own status and error (as the single search would), the others are unaffected."""
    answers = []
    for q in queries:
        try:
            given = sum(x is not None for x in (q.item, q.vector, q.image))
            if given > 1 or (given == 0 and not any(e.weight > 0 for e in q.examples)):
                raise BadRequest("give exactly one of item, vector or image, or at least one positive example")
            image = state.decode_base64(q.image, "the query image") if q.image is not None else None
            answers.append({"status": 200, "result": run_search(state, q, image), "error": None})
        except Exception as exc:
            mapped = error_for(exc)
            if mapped is None:
                raise
            status, code, message = mapped
            answers.append({"status": status, "result": None, "error": {"error": code, "message": message}})
    return answers


class CatalogPool:
    """The catalogs one server answers for: ``default`` (opened when the app is built) and
    ``names`` (None: every catalog in ``home``), each opened on its first request and then kept,
    with its own :class:`AppState` (memo, lock) built by ``make_state``."""

    def __init__(self, default: AppState, names, make_state):
        self.default = default
        self.home = default.catalog.home
        self.names = None if names is None else sorted({default.catalog.name, *names})
        self._make_state = make_state
        self._open = {default.catalog.name: default}
        self._lock = threading.Lock()

    def served(self) -> list[str]:
        """Names of the catalogs this server answers for (sorted)."""
        return self.names if self.names is not None else list_catalogs(self.home)

    def opened(self) -> list[AppState]:
        with self._lock:
            return list(self._open.values())

    def get(self, name: str) -> AppState:
        """The state of catalog ``name``, opening it on first use; 404 when this server does not serve it."""
        with self._lock:
            if name in self._open:
                return self._open[name]
        try:
            check_name(name)
            if self.names is not None and name not in self.names:
                raise CatalogNotFound(name)
            catalog = Catalog.open(name, home=self.home)
        except (ValueError, CatalogNotFound):
            served = ", ".join(self.served()) or "none"
            raise NotFound(f"this server does not serve a catalog {name!r} (it serves: {served})") from None
        with self._lock:
            return self._open.setdefault(name, self._make_state(catalog))


def browse_filters(label: str | None, filters: list[str]) -> tuple[dict | None, list[str]]:
    """The browse page's ``filter`` values -> (``where`` dict, search-grammar clauses): ``key:value``
    (key: letters, digits, ``_ . -``) stays an equality; anything else (``colour=red``, ``price<50``,
    ``colour in red,blue``...) is a clause of the search grammar, so browse and search read the same
    filters. The Catalog raises FilterError / UnknownColumn (422) on a clause it cannot read."""
    legacy = [spec for spec in filters if _KEY_RE.match(spec.partition(":")[0]) and ":" in spec]
    clauses = [spec for spec in filters if spec not in legacy]
    return parse_filters(label, legacy), clauses


def parse_filters(label: str | None, filters: list[str]) -> dict | None:
    """``label=x`` and ``filter=key:value`` (repeatable) -> the Catalog ``where`` dict; 400 on a bad key."""
    where = {}
    for spec in filters:
        key, sep, value = spec.partition(":")
        if not sep or not _KEY_RE.match(key):
            raise BadRequest(f"filter {spec!r} must look like key:value (key: letters, digits, _ . -)")
        where[key] = value
    if label:
        where["label"] = label
    return where or None


def item_urls(item_id: str) -> dict[str, str]:
    base = item_path(item_id)
    return {"image_url": f"{base}/image", "thumb_url": f"{base}/thumb"}


def summary(item_id: str, label, metadata) -> dict:
    return {"id": str(item_id), "label": label, "metadata": dict(metadata or {}), **item_urls(item_id)}


def item_summary(item) -> dict:
    return summary(item.id, item.label, item.metadata)


# A Hit: the item summary (id, label, metadata, URLs) plus these SearchResult fields, always present.
HIT_FIELDS = ("rank", "score", "distance", "score_parts", "group", "matched_variant", "weak", "duplicates")


def hit(result) -> dict:
    """A ``SearchResult`` as the API's ``Hit``."""
    return {**summary(result.id, result.label, result.metadata), **result.to_dict(HIT_FIELDS, digits=None)}


def search_response(results, query=None, encoder: str | None = None) -> dict:
    """A ``SearchResponse``: the hits, and ``no_close_match`` when every one is weak."""
    return {"query": query, "encoder": encoder, "results": [hit(r) for r in results],
            "no_close_match": no_close_match(results)}


#: search answers may be stored but are revalidated every time (the ETag changes with the catalog)
ANSWER_CACHE = "private, no-cache"
#: images and thumbnails: their ETag is the image's content hash
IMAGE_CACHE = "public, max-age=86400"


def json_response(payload: dict, headers: dict[str, str] | None = None, status_code: int = 200) -> Response:
    """``payload`` as JSON bytes by orjson (~10x faster than the stdlib and than validating the
    dict through the response model again: the routes build it from the library's own types,
    and tests/api/test_api_serving.py checks it equals the response model's JSON). orjson refuses
    integers beyond 64 bits (a JSONL catalog's metadata may hold one): those answers go through
    the stdlib instead, which writes any integer exactly."""
    try:
        body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        body = json.dumps(payload, default=_numpy_json, ensure_ascii=False).encode()
    return Response(body, status_code=status_code, media_type="application/json", headers=headers)


def _numpy_json(value):
    """``json.dumps`` default for what orjson's OPT_SERIALIZE_NUMPY would have written."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def answer_etag(request: Request, state: AppState) -> str | None:
    """The ETag of a GET answer computed only from the catalog (its data version, the path and the
    query string): the same URL answers the same until anything in the catalog changes, in any
    worker. None when the server runs without HTTP caching."""
    return etag_of(state, request.url.path, request.url.query)


def etag_of(state: AppState, path: str, query: str) -> str | None:
    """:func:`answer_etag` of the URL ``path`` and ``query`` (as ``request.url`` gives them)."""
    if not state.http_cache:
        return None
    key = f"{state.catalog.data_version()}\0{path}\0{query}"
    return f'W/"{hashlib.sha1(key.encode()).hexdigest()[:24]}"'


def not_modified(request: Request, etag: str | None, cache_control: str) -> Response | None:
    """304 (with the ETag) when the client's If-None-Match names ``etag``, else None (``*`` is not
    honoured: a GET search answer's ETag is checked before the route knows whether its item exists)."""
    if etag is None:
        return None
    sent = request.headers.get("if-none-match")
    if not sent:
        return None
    tags = {t.strip().removeprefix("W/") for t in sent.split(",")}
    if etag.removeprefix("W/") in tags:
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": cache_control})
    return None


def image_etag(item, size: int | None = None) -> str:
    """Strong ETag of an item's image (its content hash), per thumbnail size."""
    key = item.sha256 or hashlib.sha256(str(item.id).encode()).hexdigest()
    return f'"{key[:32]}{f"-{size}" if size else ""}"'


def state_of(request: Request) -> AppState:
    """The state of the catalog a request is for: ``/api/catalogs/{catalog}/...`` names it, every
    other route answers for the server's default catalog."""
    name = request.path_params.get("catalog")
    if name is None:
        return request.app.state.lookalike
    return request.app.state.catalogs.get(name)


async def get_state(request: Request) -> AppState:
    """:func:`state_of`, and item URLs of the answer under that catalog's base. Async on purpose:
    it runs in the request's own context, which the (threaded) route then inherits."""
    state = state_of(request)
    if "catalog" in request.path_params:
        API_BASE.set(f"/api/catalogs/{state.catalog.name}")
    return state


def catalog_path(catalog: str = PathParam(..., min_length=1, max_length=64, description=(
        "a catalog this server serves (lookalike serve --catalog A --catalog B, or --all)"))) -> str:
    """Declares the ``{catalog}`` of ``/api/catalogs/{catalog}/...`` (validated, in the OpenAPI
    schema); :func:`get_state` reads it."""
    return catalog


def require_api_key(request: Request, x_api_key: str | None = Header(None)) -> None:
    """Endpoints that change a catalog: refused unless the server has a key and the client sends it."""
    state = state_of(request)
    if state.read_only:
        raise ApiError(403, "read_only", "this server is read-only: start it with LOOKALIKE_API_KEY set to allow changes")
    if not x_api_key or not secrets.compare_digest(x_api_key.encode(), state.api_key.encode()):
        raise ApiError(401, "unauthorized", "missing or wrong X-API-Key header")


def freeze_heap() -> None:
    """Move every object alive now (the index wrappers, the model, the item metadata read while
    warming) out of the cyclic garbage collector's reach (``gc.freeze``, CPython >= 3.7): a full
    collection no longer walks them, which at 100k items in memory took ~200 ms of CPU, a pause every
    request waiting on that worker shared (the p99 of ``bench api``). Freed by reference counting as
    before; only cycles among them would stay (none are made after warming). The CPython docs
    recommend the same for pre-fork servers ("gc — Garbage Collector interface", ``gc.freeze``).
    No ``gc.collect()`` first: it would hold the GIL for that whole walk, and uvicorn's supervisor
    kills a worker whose health-check thread stays silent for its timeout (on a loaded box it did)."""
    gc.freeze()

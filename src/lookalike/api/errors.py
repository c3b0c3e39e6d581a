"""Every failure leaves the API as JSON ``{"error": code, "message": words}`` with the right status.

Library exceptions are mapped here, in one place, so routers stay thin and a user never sees a
stack trace: unknown items are 404, oversize uploads 413, non-images 415, bad parameters and
filters on columns the catalog lacks (``unknown_column``, the CLI's message) or that the filter
grammar cannot read (``invalid_filter``) 422 and
features whose model has not been trained yet 409 (the catalog is not in the state the request
needs: a client error, never a 5xx) with the command that trains it.
"""
from __future__ import annotations

import difflib
import functools
import logging
from typing import Iterable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lookalike.api.schemas import RequestBody
from lookalike.catalog import CatalogReplaced, FilterError, UnknownColumn
from lookalike.data.images import ImageError

log = logging.getLogger("lookalike.api")

# ImageError.reason -> HTTP status
_IMAGE_STATUS = {"too_large": 413, "not_an_image": 415, "unsupported_format": 415, "empty": 422, "corrupt": 422, "missing": 404}


class ApiError(Exception):
    """An error with a status code, a short machine code and a sentence for people."""

    def __init__(self, status: int, code: str, message: str, **extra):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


class NotFound(ApiError):
    def __init__(self, message: str):
        super().__init__(404, "not_found", message)


class FeatureUnavailable(ApiError):
    """The feature's module or trained model is missing; ``message`` says how to get it."""

    def __init__(self, message: str):
        super().__init__(409, "feature_unavailable", message)


class BadRequest(ApiError):
    def __init__(self, message: str):
        super().__init__(422, "bad_request", message)


def error_body(code: str, message: str, **extra) -> dict:
    return {"error": code, "message": message, **extra}


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        message = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            message = unknown_field_message(str(err.get("loc", ("",))[-1]), _request_fields())
        elif err.get("type") == "unknown_parameter":   # lookalike.api.params
            message = unknown_field_message(str(err.get("loc", ("",))[-1]), err.get("known", ()))
        parts.append(f"{where or 'request'}: {message}")
    return "invalid parameters — " + "; ".join(parts)


def unknown_field_message(name: str, known: Iterable[str]) -> str:
    """'unknown field' plus the closest known name (difflib), for a misspelt field or parameter;
    with no close one, the known names (when few)."""
    close = difflib.get_close_matches(name, sorted(set(known)), n=1, cutoff=0.6)
    if close:
        return f"unknown field (did you mean '{close[0]}'?)"
    names = sorted(set(known))
    return "unknown field" + (f" (known: {', '.join(names)})" if 0 < len(names) <= 12 else "")


@functools.lru_cache(maxsize=1)
def _request_fields() -> frozenset[str]:
    """Every field name of every JSON request body (schemas.RequestBody subclasses)."""
    names: set[str] = set()
    todo = [RequestBody]
    while todo:
        model = todo.pop()
        names.update(model.model_fields)
        todo += model.__subclasses__()
    return frozenset(names)


def status_for(reason: str) -> int:
    """The HTTP status of an image or item failure ``reason`` (an ingest / fetch / write reason):
    413 too large, 415 not an image, 422 anything else."""
    return _IMAGE_STATUS.get(reason, 422) if reason != "missing" else 422


def lookup_message(exc: LookupError) -> str:
    """A LookupError's sentence: a KeyError's own text (``str(KeyError)`` quotes it), any other's
    message as it is (stripping quotes off it cut the closing quote of "... encoder 'x'")."""
    if (isinstance(exc, KeyError) and type(exc).__str__ is KeyError.__str__ and len(exc.args) == 1
            and isinstance(exc.args[0], str)):
        return exc.args[0]
    return str(exc)


def error_for(exc: Exception) -> tuple[int, str, str] | None:
    """(HTTP status, code, message) of a library or API exception, as the app's handlers answer it
    (also one query's entry in a batch); None for an unexpected exception (a 500)."""
    if isinstance(exc, ApiError):
        return exc.status, exc.code, exc.message
    if isinstance(exc, ImageError):
        return _IMAGE_STATUS.get(exc.reason, 422), exc.reason, exc.message
    if isinstance(exc, CatalogReplaced):
        return 503, "catalog_replaced", str(exc)
    if isinstance(exc, UnknownColumn):
        return 422, "unknown_column", str(exc)
    if isinstance(exc, FilterError):
        return 422, "invalid_filter", str(exc)
    if isinstance(exc, LookupError):
        return 404, "not_found", lookup_message(exc)
    if isinstance(exc, ValueError):   # the library's "bad argument" (wrong vector length, bad example weights...)
        return 422, "bad_request", str(exc)
    return None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse(error_body(exc.code, exc.message, **exc.extra), status_code=exc.status)

    @app.exception_handler(ImageError)
    async def _image_error(request: Request, exc: ImageError):
        status = _IMAGE_STATUS.get(exc.reason, 422)
        return JSONResponse(error_body(exc.reason, exc.message), status_code=status)

    @app.exception_handler(CatalogReplaced)
    async def _replaced(request: Request, exc: CatalogReplaced):
        # `lookalike import --force` swapped the catalog's files under this server: neither answer
        # from the old one nor accept writes that would go to a deleted file
        return JSONResponse(error_body("catalog_replaced", str(exc)), status_code=503)

    @app.exception_handler(UnknownColumn)
    async def _unknown_column(request: Request, exc: UnknownColumn):
        return JSONResponse(error_body("unknown_column", str(exc)), status_code=422)

    @app.exception_handler(FilterError)
    async def _bad_filter(request: Request, exc: FilterError):
        # a filter / boost / recency the grammar cannot read, or a range on a text column
        return JSONResponse(error_body("invalid_filter", str(exc)), status_code=422)

    @app.exception_handler(LookupError)
    async def _lookup(request: Request, exc: LookupError):
        # ItemNotFound, "no vectors for encoder ...": the thing asked for does not exist here
        return JSONResponse(error_body("not_found", lookup_message(exc)), status_code=404)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in exc.errors()[:10]]
        return JSONResponse(error_body("invalid_parameters", _validation_message(exc), details=details),
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.url.path}"
        return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse(error_body("internal_error", "internal error — the server log has the details"),
                            status_code=500)

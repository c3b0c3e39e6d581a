"""Item ids in URLs: ``/api/items/{id}/{word}`` with the id percent-encoded in one path segment.

Ids come from catalogs and may hold anything printable: folder-derived ids look like routes
(``dress/image``, ``shoes/similar``). Starlette decodes ``%2F`` before routing, so a router on the
decoded path cannot tell the detail of item ``dress/image`` (``/api/items/dress%2Fimage``) from the
picture of item ``dress`` (``/api/items/dress/image``). ``RawItemPath`` routes ``/api/items/...``
on the raw (still encoded) path instead, and ``{item_id:item}`` decodes the id segment once, after
matching. An id without ``/`` is addressed as before; one with ``/`` written unencoded still works
when a route word follows (``/api/items/a/b/image``: the longest id before the word, as before).
:func:`item_urls` and the web app (``encodeURIComponent``) build URLs this way.
"""
from __future__ import annotations

import re
from contextvars import ContextVar
from functools import lru_cache
from urllib.parse import quote, unquote

from starlette.convertors import Convertor, register_url_convertor

ITEMS_PREFIX = "/api/items/"
# A catalog's own routes (/api/catalogs/NAME/items/...) route on the raw path too.
_CATALOG_ITEMS = re.compile(r"^/api/catalogs/[^/]+/items/")
# The URL base of the catalog a request is for ("/api", or "/api/catalogs/NAME"): set by
# api.deps.get_state, so item URLs in an answer point into the same catalog.
API_BASE: ContextVar[str] = ContextVar("lookalike_api_base", default="/api")


class ItemIdConvertor(Convertor):
    """``{item_id:item}``: the rest of the raw path up to the route word, percent-decoded once."""

    regex = ".+"

    def convert(self, value: str) -> str:
        return unquote(value)

    def to_string(self, value: str) -> str:
        return quote(str(value), safe="")


register_url_convertor("item", ItemIdConvertor())


def item_path(item_id: str) -> str:
    """``/api/items/<id as one percent-encoded segment>`` (``/api/catalogs/NAME/items/...`` in an
    answer about catalog NAME, see :data:`API_BASE`): the base of every route of one item."""
    return f"{API_BASE.get()}/items/" + _segment(str(item_id))


@lru_cache(maxsize=1 << 16)
def _segment(item_id: str) -> str:
    """``item_id`` percent-encoded as one path segment (every hit of every answer needs two)."""
    return quote(item_id, safe="")


class RawItemPath:
    """Pure ASGI middleware: requests under ``/api/items/`` are routed on their raw path, so the
    ``{item_id:item}`` routes see the id still encoded (other paths are untouched)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        raw = scope.get("raw_path")
        if scope["type"] == "http" and raw and _routed_raw(scope["path"]):
            # raw_path is ASCII when clients encode; a client sending raw UTF-8 still gets its id
            path = raw.decode("utf-8", "surrogateescape")
            if _routed_raw(path):
                scope = {**scope, "path": path}
        await self.app(scope, receive, send)


def _routed_raw(path: str) -> bool:
    return path.startswith(ITEMS_PREFIX) or _CATALOG_ITEMS.match(path) is not None

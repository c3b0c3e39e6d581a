"""The hot request, answered before FastAPI's routing and per-parameter validation.

``GET /api/items/{id}/similar`` with no parameter but ``k`` is what a shop's product page asks on
every view. Its answer is a row of the catalog's similar-items table (``Catalog.similar_from_table``);
routing it through FastAPI cost more than that: matching ~100 route templates, then validating
the route's 13 query parameters one by one (about 40 % of the request's CPU, docs/deploy.md "Where
the time goes"). :class:`SimilarFastPath` answers exactly that request with the route's own
functions (:func:`~lookalike.api.deps.etag_of`, :func:`~lookalike.api.deps.search_response`,
:func:`~lookalike.api.deps.json_response`), so the bytes and headers are the route's; anything else
(another parameter, a ``k`` out of range, an unknown item, ``If-None-Match``, no fresh table in this
worker yet) goes on to the route untouched, errors included.
"""
from __future__ import annotations

import re
from types import SimpleNamespace
from urllib.parse import unquote

from lookalike.api.deps import ANSWER_CACHE, etag_of, item_summary, json_response, search_response
from lookalike.api.item_ids import ITEMS_PREFIX
from lookalike.api.schemas import MAX_K

SUFFIX = "/similar"
DEFAULT_K = 12   # the route's default
_K = re.compile(rb"^(?:k=([0-9]{1,3}))?$")
#: what the metrics middleware reads as the matched route (lookalike.api.metrics)
ROUTE = SimpleNamespace(path=f"{ITEMS_PREFIX}{{item_id:item}}{SUFFIX}")


class SimilarFastPath:
    """Pure ASGI middleware answering the plain ``GET /api/items/{id}/similar[?k=N]`` of the
    server's default catalog from its similar-items table (see the module docstring)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET":
            path = scope["path"]
            if path.startswith(ITEMS_PREFIX) and path.endswith(SUFFIX):
                try:
                    response = self._answer(scope, path)
                except Exception:   # noqa: BLE001 - every error is the route's to answer (4xx, 503 catalog_replaced…)
                    response = None
                if response is not None:
                    scope["route"] = ROUTE
                    return await response(scope, receive, send)
        await self.app(scope, receive, send)

    def _answer(self, scope, path: str):
        query = _K.match(scope.get("query_string") or b"")
        if query is None or any(name == b"if-none-match" for name, _ in scope.get("headers") or ()):
            return None
        k = int(query.group(1)) if query.group(1) else DEFAULT_K
        state = getattr(getattr(scope.get("app"), "state", None), "lookalike", None)
        if state is None or not 1 <= k <= MAX_K:
            return None
        with state.catalog.pinned_version():   # one data-version check for the whole answer
            # a malformed or unknown id raises: the route answers the 422 / 404
            item = state.item(unquote(path[len(ITEMS_PREFIX):-len(SUFFIX)]))   # decoded as the route's {item_id:item}
            results = state.catalog.similar_from_table(item.id, k)
            if results is None:
                return None
            # the route's answer_etag(request): Starlette's request.url.path is the scope's path with
            # these three escaped, its query the raw query string (only k=N gets here)
            etag = etag_of(state, path.replace("?", "%3F").replace("#", "%23").replace("\\", "%5C"),
                           (scope.get("query_string") or b"").decode())
            headers = {"ETag": etag, "Cache-Control": ANSWER_CACHE} if etag else None
            return json_response(search_response(results, item_summary(item), state.catalog.default_encoder), headers)

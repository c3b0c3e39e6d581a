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

``POST /api/search/image`` with just the photo (and ``k``) is the other hot request: FastAPI's form
handling (spooling the file into an ``UploadFile``, validating its 12 form fields) cost ~1.5 ms of
CPU per upload above the library's work (docs/web.md "Where the time goes").
:class:`UploadFastPath` reads the body (inside ``BodySizeLimit``: the byte cap holds), parses it
with python-multipart (the parser Starlette uses), checks the photo as the route does
(``check_upload``: size, sniffed type) and answers through the route's own
``AppState.search_upload`` in the thread pool; a request with any other field, a malformed body,
or any error (a bad image, 413 / 415 / 422 / 503) is replayed to the route, which answers it.
"""
from __future__ import annotations

import re
from types import SimpleNamespace
from urllib.parse import unquote

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from lookalike.api.deps import ANSWER_CACHE, etag_of, item_summary, json_response, search_response
from lookalike.api.item_ids import ITEMS_PREFIX
from lookalike.api.schemas import DEFAULT_SIMILAR_K, DEFAULT_UPLOAD_K, MAX_K
from lookalike.api.uploads import check_upload

SUFFIX = "/similar"
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
        k = int(query.group(1)) if query.group(1) else DEFAULT_SIMILAR_K
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


UPLOAD_PATH = "/api/search/image"
UPLOAD_ROUTE = SimpleNamespace(path=UPLOAD_PATH)
_DIGITS = re.compile(rb"^[0-9]{1,3}$")


class UploadFastPath:
    """Pure ASGI middleware answering the plain ``POST /api/search/image`` (multipart: ``file``,
    optionally ``k``) of the server's default catalog (see the module docstring). Must sit inside
    :class:`lookalike.api.uploads.BodySizeLimit`."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == UPLOAD_PATH:
            messages, failed, body = [], None, bytearray()
            try:
                while True:
                    message = await receive()
                    messages.append(message)
                    if message["type"] != "http.request":
                        break
                    body += message.get("body", b"")
                    if not message.get("more_body"):
                        break
            except Exception as exc:   # noqa: BLE001 - e.g. BodySizeLimit's 413: the route raises it again
                failed = exc
            response = None
            if failed is None and messages and messages[-1]["type"] == "http.request":
                try:
                    response = await self._answer(scope, bytes(body))
                except Exception:   # noqa: BLE001 - every error is the route's to answer
                    response = None
            if response is not None:
                scope["route"] = UPLOAD_ROUTE
                return await response(scope, receive, send)
            receive = _replay(messages, failed, receive)
        await self.app(scope, receive, send)

    async def _answer(self, scope, body: bytes):
        state = getattr(getattr(scope.get("app"), "state", None), "lookalike", None)
        fields = _plain_upload(scope, body)
        if state is None or fields is None:
            return None
        data, k = fields
        check_upload(data, state.max_upload_bytes)   # 413 / 415 / 422 raise: the route answers them
        return json_response(await run_in_threadpool(state.search_upload, data, k))


def _plain_upload(scope, body: bytes) -> tuple[bytes, int] | None:
    """(photo bytes, k) of a multipart body holding one ``file`` part (with a file name) and at most
    one ``k`` (1..MAX_K, digits), nothing else; None for anything the route should read itself
    (a query string too: the route answers its unknown parameters with a 422, lookalike.api.params)."""
    if scope.get("query_string"):
        return None
    content_type = next((v for n, v in scope.get("headers") or () if n == b"content-type"), b"")
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        return None
    parts: list[tuple[dict[bytes, bytes], list[bytes]]] = []
    header, ended = [b"", b""], []

    def header_end():
        parts[-1][0][header[0].lower()] = header[1]
        header[0] = header[1] = b""

    callbacks = {
        "on_part_begin": lambda: parts.append(({}, [])),
        "on_header_field": lambda data, start, end: header.__setitem__(0, header[0] + data[start:end]),
        "on_header_value": lambda data, start, end: header.__setitem__(1, header[1] + data[start:end]),
        "on_header_end": header_end,
        "on_part_data": lambda data, start, end: parts[-1][1].append(data[start:end]),
        "on_end": lambda: ended.append(True),
    }
    parser = MultipartParser(boundary, callbacks)
    if parser.write(body) != len(body):
        return None
    parser.finalize()
    if not ended:   # no closing boundary: a truncated body
        return None
    found: dict[bytes, tuple[bytes | None, bytes]] = {}
    for headers, chunks in parts:
        disposition, params = parse_options_header(headers.get(b"content-disposition", b""))
        name = params.get(b"name")
        if disposition != b"form-data" or name not in (b"file", b"k") or name in found:
            return None
        found[name] = (params.get(b"filename"), b"".join(chunks))
    if b"file" not in found or not found[b"file"][0]:
        return None
    k = DEFAULT_UPLOAD_K
    if b"k" in found:
        filename, value = found[b"k"]
        if filename is not None or not _DIGITS.match(value) or not 1 <= int(value) <= MAX_K:
            return None
        k = int(value)
    return found[b"file"][1], k


def _replay(messages: list[dict], failed: Exception | None, receive):
    """A ``receive`` that hands the route the messages already read, then reads on (or raises what
    reading raised, e.g. BodySizeLimit's 413, where FastAPI's handlers answer it)."""
    pending = list(messages)

    async def replay():
        if pending:
            return pending.pop(0)
        if failed is not None:
            raise failed
        return await receive()
    return replay
